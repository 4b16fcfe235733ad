// shm_client: the tutorial's client.py of SharedMemory: attaches to the block shm_server
// created, by name, awaits the server's process_event (ipc/process_event.hpp) without
// blocking a worker, prints the array and sets the "done" event.
//
//   shm_client --name /NAME     attach to a running shm_server's block: waits up to 30 s
//                               for it and its events to be built, but exits 1 at once,
//                               naming the offset and the error, on a block whose event
//                               can never be attached (garbage, too small), or one
//                               smaller than shm_server's (its array would lie past the end)
//   shm_client --self-test      start shm_server itself first (it then waits for us)
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "shm_array.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>
#include <corio/ipc/process_event.hpp>
#include <corio/ipc/shared_memory.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

using namespace std::chrono_literals;

namespace {

/// Whether waiting may mend a failed open or attach: the block does not exist yet
/// (no_such_file_or_directory), shm_server has not sized it yet (the open finds it empty:
/// resource_unavailable_try_again) or not built its event yet (the event's word is still
/// 0: resource_unavailable_try_again too). shm_server's create() sizes the block whole in
/// one ftruncate, so a mapping smaller than the event (attach: invalid_argument) is never
/// one still growing. Anything else stays as it is: wrong_protocol_type (garbage, another
/// object), invalid_argument, owner_dead (a creator died before sizing it) ...
bool not_built_yet(std::error_code e) {
  return e == std::errc::no_such_file_or_directory || e == std::errc::resource_unavailable_try_again;
}

/// Opens the block and its "done" event, retrying for up to 30 s while the server has not
/// made or built them yet; ends at once, saying why, on an error that waiting cannot mend.
corio::task<std::optional<corio::ipc::shared_memory>> attach(const std::string& name) {
  const auto give_up = corio::clock::now() + 30s;
  for (;;) {
    auto shm = corio::ipc::shared_memory::open(name);
    std::error_code e = shm ? std::error_code{} : shm.error();
    if (shm) {
      auto done = corio::ipc::process_event::attach(*shm, shm_array::kDoneAt);
      if (done) {
        co_return std::move(*shm);
      }
      e = done.error();
      if (!not_built_yet(e)) {
        std::fprintf(stderr, "client: %s holds no process_event at offset %zu: %s: not shm_server's block\n",
                     name.c_str(), shm_array::kDoneAt, e.message().c_str());
        co_return std::nullopt;
      }
    }
    if (!not_built_yet(e)) {
      std::fprintf(stderr, "client: attach %s: %s\n", name.c_str(), e.message().c_str());
      co_return std::nullopt;
    }
    if (corio::clock::now() > give_up) {
      if (shm) {
        std::fprintf(stderr, "client: attach %s: no process_event built at offset %zu after 30 s: %s\n",
                     name.c_str(), shm_array::kDoneAt, e.message().c_str());
      } else {
        std::fprintf(stderr, "client: attach %s: %s (for 30 s): is shm_server running, with this --name?\n",
                     name.c_str(), e.message().c_str());
      }
      co_return std::nullopt;
    }
    // A failed pause (cancelled, off a worker) ends the retry.
    if (auto slept = co_await corio::sleep_for(10ms); !slept) {
      std::fprintf(stderr, "client: attach %s: %s\n", name.c_str(), slept.error().message().c_str());
      co_return std::nullopt;
    }
  }
}

corio::task<int> read_array(std::string name, bool self_test) {
  std::optional<corio::ipc::child> server;
  if (self_test) {
    auto s = corio::ipc::command(shm_array::sibling("shm_server")).args({"--name", name}).spawn();
    if (!s) {
      std::fprintf(stderr, "spawn shm_server: %s\n", s.error().message().c_str());
      co_return 1;
    }
    server.emplace(std::move(*s));
  }
  auto shm = co_await attach(name);
  if (!shm) {
    co_return 1;
  }
  // shm_server's block is kSize bytes from the start; the count and the array of a
  // smaller one would lie past the end of the mapping.
  if (shm->size() < shm_array::kSize) {
    std::fprintf(stderr, "client: %s is %zu bytes, shm_server's block %zu: not shm_server's block\n", name.c_str(),
                 shm->size(), shm_array::kSize);
    co_return 1;
  }
  // shm_server builds "filled" before "done", which attach() waited for; a block that still
  // lacks one was not built by shm_server (or not this version of it).
  auto filled = corio::ipc::process_event::attach(*shm, shm_array::kFilledAt);
  auto done = corio::ipc::process_event::attach(*shm, shm_array::kDoneAt);
  if (!filled || !done) {
    std::fprintf(stderr, "client: %s holds no process_event at offset %zu: %s\n", name.c_str(),
                 !filled ? shm_array::kFilledAt : shm_array::kDoneAt,
                 (!filled ? filled.error() : done.error()).message().c_str());
    co_return 1;
  }
  std::printf("client: attached to %s; waiting for the server's event\n", name.c_str());
  std::fflush(stdout);
  auto ready = co_await corio::timeout(filled->wait(), 60s);
  if (!ready) {
    std::fprintf(stderr, "client: %s\n", ready.error().message().c_str());
    co_return 1;
  }
  const auto count = *reinterpret_cast<const std::uint64_t*>(shm->bytes().data() + shm_array::kCountAt);
  const auto* numbers = reinterpret_cast<const std::uint64_t*>(shm->bytes().data() + shm_array::kArrayAt);
  std::printf("client: Shared Array is : [");
  bool fibonacci = count >= 1 && count <= shm_array::kMaxCount;
  for (std::uint64_t i = 0; i < count && i < shm_array::kMaxCount; ++i) {
    std::printf("%s%llu", i == 0 ? "" : " ", static_cast<unsigned long long>(numbers[i]));
    // Fibonacci modulo 2^64, as shm_server fills it (unsigned: the sum wraps, defined).
    fibonacci = fibonacci && numbers[i] == (i < 2 ? 1 : numbers[i - 1] + numbers[i - 2]);
  }
  std::printf("]\n");
  std::fflush(stdout);
  done->set();
  if (server) {
    auto st = co_await server->wait();
    fibonacci = fibonacci && st && st->success();
  }
  co_return fibonacci ? 0 : 1;
}

int example_main(int argc, char** argv) {
  std::string name;
  bool self_test = false;
  example::args args("shm_client", "await shm_server's process-shared event, then read the shared array");
  args.option("--name", name, "/NAME", "name of the server's shared-memory block");
  args.flag("--self-test", self_test, "start shm_server (next to this program) first");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (name.empty()) {
    if (!self_test) {
      std::fprintf(stderr, "shm_client: --name is required (or --self-test); see --help\n");
      return 2;
    }
    name = "/corio-example-array-" + std::to_string(::getpid());
  }
  return corio::run(read_array(name, self_test));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("shm_client", example_main, argc, argv); }
