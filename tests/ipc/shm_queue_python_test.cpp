// Tests ipc/shm_queue.hpp against every Python 3 on the machine (tests/ipc/pythons.hpp:
// Debian's /usr/bin/python3, python3 on PATH, and pyenv's versions, found at run time): a
// shared-memory object of a queue's size made by Python's multiprocessing.shared_memory
// is another type of object for shm_queue, not a queue being built. Kept out of
// ipc_shm_queue_test so that the unit tests of shm_queue do not need Python.
#include <corio/ipc/shm_queue.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <system_error>

#include <corio/ipc/shared_memory.hpp>

#include "pythons.hpp"
#include "shm_helpers.hpp"

using corio::ipc::shared_memory;
using corio::ipc::shm_queue;
using corio_test::scoped_name;

namespace {

template <class R>
std::error_code error_of(const R& r) {
  return r ? std::error_code{} : r.error();
}

}  // namespace

TEST_CASE("shm_queue: an object of a queue's size made by Python's SharedMemory is not a queue, not \"try again\"",
          "[ipc][shm_queue][errors][python]") {
  // Python's SharedMemory(create=True) is shm_open and ftruncate (zeros), without the
  // flock corio's creators take; a queue's creator never leaves a zero layout word, so
  // such an object reads as another type of object (before: "try again", for ever).
  int made_by = 0;
  for (const auto& py : corio_test::pythons()) {
    scoped_name n("python");
    const std::string code =
        "from multiprocessing import shared_memory, resource_tracker\n"
        "m = shared_memory.SharedMemory(name=\"" + n.name.substr(1) + "\", create=True, size=8192)\n"
        "resource_tracker.unregister(m._name, \"shared_memory\")\n"  // the name outlives Python
        "m.close()\n"
        "print(\"made\")";
    const std::string made = corio_test::first_line_of(py.path, code);
    if (made != "made") {
      WARN(py.path << " " << py.version << ": no SharedMemory (" << made << ")");
      continue;
    }
    INFO(py.path << " " << py.version);
    ++made_by;
    auto raw = shared_memory::open(n.name);
    REQUIRE(raw);
    CHECK(raw->size() == 8192);
    CHECK(error_of(shm_queue::open(n.name)) == std::errc::wrong_protocol_type);
    CHECK(error_of(shm_queue::create(n.name, {.exclusive = false})) == std::errc::wrong_protocol_type);
  }
  CHECK(made_by > 0);  // Debian's Python 3 (3.8 or later) is always there
}
