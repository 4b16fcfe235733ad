// Tests for ipc/shared_memory.hpp and ipc/memory_map.hpp: named shared memory between
// processes, objects whose creator died before sizing them, anonymous shared mappings
// across fork, file mappings with an awaitable flush, and checked typed views.
#include <corio/ipc/memory_map.hpp>
#include <corio/ipc/shared_memory.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include <corio/runtime/runtime.hpp>

#include "helpers.hpp"
#include "shm_helpers.hpp"

using corio::ipc::map_access;
using corio::ipc::memory_map;
using corio::ipc::shared_memory;
using corio::ipc::shared_memory_options;

namespace {

template <class R>
std::error_code error_of(const R& r) {
  return r ? std::error_code{} : r.error();
}

struct scoped_shm_name {
  std::string name;
  explicit scoped_shm_name(const char* tag) : name("/corio-test-shm-" + std::to_string(::getpid()) + "-" + tag) {
    (void)shared_memory::remove(name);
  }
  ~scoped_shm_name() { (void)shared_memory::remove(name); }
};

/// Runs `fn` in a forked child; returns its exit status (or -1 when killed).
template <class F>
int in_child(F fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::_exit(fn());
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
    return -1;
  }
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("shared_memory: created by one handle, seen by another opened by name", "[ipc][shared_memory]") {
  scoped_shm_name n("basic");
  auto a = shared_memory::create(n.name, 4096);
  REQUIRE(a);
  CHECK(a->size() == 4096);
  CHECK(a->name() == n.name);
  auto ints = a->view<std::int32_t>(0, 1024);
  REQUIRE(ints);
  CHECK((*ints)[1023] == 0);  // zero-filled
  (*ints)[7] = 42;
  auto b = shared_memory::open(n.name);
  REQUIRE(b);
  CHECK(b->size() == 4096);
  auto seen = b->view<const std::int32_t>(0, 1024);
  REQUIRE(seen);
  CHECK((*seen)[7] == 42);
  CHECK(error_of(shared_memory::create(n.name, 4096)) == std::errc::file_exists);  // exclusive by default
  REQUIRE(shared_memory::remove(n.name));
  CHECK(error_of(shared_memory::open(n.name)) == std::errc::no_such_file_or_directory);
  (*ints)[8] = 43;  // mappings stay valid after remove
  CHECK((*seen)[8] == 43);
}

TEST_CASE("shared_memory: a non-exclusive create opens an existing object, grows it, never shrinks it",
          "[ipc][shared_memory]") {
  scoped_shm_name n("grow");
  shared_memory_options open_existing;
  open_existing.exclusive = false;
  auto first = shared_memory::create(n.name, 8192, open_existing);  // creates
  REQUIRE(first);
  auto marks = first->view<std::uint8_t>(0, 8192);
  REQUIRE(marks);
  (*marks)[100] = 7;
  auto smaller = shared_memory::create(n.name, 4096, open_existing);  // opens, keeps 8192
  REQUIRE(smaller);
  CHECK(smaller->size() == 8192);
  auto larger = shared_memory::create(n.name, 3 * 4096, open_existing);  // opens, grows
  REQUIRE(larger);
  CHECK(larger->size() == 3 * 4096);
  auto seen = larger->view<const std::uint8_t>(0, 3 * 4096);
  REQUIRE(seen);
  CHECK((*seen)[100] == 7);
  CHECK((*seen)[3 * 4096 - 1] == 0);
}

TEST_CASE("shared_memory: a create racing another creator never ends up mapping past the object's end",
          "[ipc][shared_memory]") {
  // Another creator is between its exclusive shm_open and sizing the object (it holds
  // the sizing lock every creator takes) when a non-exclusive create of 1 MiB comes.
  // Before the lock, that create grew the object and mapped 1 MiB at once, and the first
  // creator's ftruncate then cut the object back under that mapping (SIGBUS past 4096).
  scoped_shm_name n("race");
  const int fd = ::shm_open(n.name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX) == 0);
  shared_memory_options open_existing;
  open_existing.exclusive = false;
  // While the lock is held the create waits at most ~10 ms, then gives up untouched.
  auto during = shared_memory::create(n.name, std::size_t{1} << 20, open_existing);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(error_of(during) == std::errc::resource_unavailable_try_again);
  CHECK(st.st_size == 0);  // not grown under the holder
  REQUIRE(::ftruncate(fd, 4096) == 0);  // the first creator sizes the object, then unlocks
  REQUIRE(::flock(fd, LOCK_UN) == 0);
  auto after = shared_memory::create(n.name, std::size_t{1} << 20, open_existing);
  REQUIRE(after);
  REQUIRE(::fstat(fd, &st) == 0);
  ::close(fd);
  CHECK(after->size() == std::size_t{1} << 20);
  CHECK(static_cast<std::size_t>(st.st_size) >= after->size());  // no access past the end
}

TEST_CASE("shared_memory: an object whose creator died before sizing it is \"try again\", then owner_dead; one "
          "whose creator holds the sizing lock stays \"try again\"",
          "[ipc][shared_memory][kill]") {
  // A creator killed between its shm_open and its ftruncate (a corio one before or after
  // it took the sizing lock, or Python's) leaves an empty object for ever. open() used to
  // return invalid_argument for it, which the header told the caller to retry: a caller
  // that did waited for ever. Now an empty object is "try again" while it is young or a
  // creator holds its lock, and owner_dead once it is neither.
  scoped_shm_name dead("dead-creator"), held("held-lock");
  memory_map flag_page = *memory_map::anonymous(4096);
  auto& holding = *std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(flag_page.data()));
  corio_test::child maker([&] {
    if (::shm_open(dead.name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600) < 0) {
      return 1;
    }
    ::kill(::getpid(), SIGKILL);  // dies having made the name and nothing else
    return 0;
  });
  corio_test::child holder([&] {  // alive, stopped between its flock and its ftruncate
    const int fd = ::shm_open(held.name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) {
      return 1;
    }
    holding.store(1, std::memory_order_release);
    for (;;) {
      ::pause();
    }
  });
  REQUIRE(maker.wait_status() == 128 + SIGKILL);
  REQUIRE(corio_test::wait_for(holding, 1));
  CHECK(error_of(shared_memory::open(dead.name)) == std::errc::resource_unavailable_try_again);
  CHECK(error_of(shared_memory::open(held.name)) == std::errc::resource_unavailable_try_again);
  // A caller that retries while told to try again gets owner_dead once the object has
  // been empty for 5 s (bounded here by 60 s, so that a regression fails instead of hanging).
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto retried = shared_memory::open(dead.name);
  while (!retried && retried.error() == std::errc::resource_unavailable_try_again &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    retried = shared_memory::open(dead.name);
  }
  CHECK(error_of(retried) == std::errc::owner_dead);
  CHECK(error_of(shared_memory::open(dead.name, map_access::read_only)) == std::errc::owner_dead);
  // The other object is as old, but its creator holds the lock: still building.
  CHECK(error_of(shared_memory::open(held.name)) == std::errc::resource_unavailable_try_again);
  holder.kill9();
  // owner_dead once its lock is free and it is 5 s old: at once, or a clock tick later
  // (the holder's object was made after the maker's, so it may be a tick younger).
  auto held_now = shared_memory::open(held.name);
  while (!held_now && held_now.error() == std::errc::resource_unavailable_try_again &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    held_now = shared_memory::open(held.name);
  }
  CHECK(error_of(held_now) == std::errc::owner_dead);
  // What owner_dead tells the caller to do works: remove the name and create it again.
  REQUIRE(shared_memory::remove(dead.name));
  REQUIRE(shared_memory::create(dead.name, 4096));
  auto again = shared_memory::open(dead.name);
  REQUIRE(again);
  CHECK(again->size() == 4096);
  // A non-exclusive create sizes an abandoned object instead (it is then no longer empty).
  shared_memory_options open_existing;
  open_existing.exclusive = false;
  auto adopted = shared_memory::create(held.name, 4096, open_existing);
  REQUIRE(adopted);
  CHECK(error_of(shared_memory::open(held.name)) == std::error_code{});
}

TEST_CASE("memory_map: mapping a FIFO is an error at once, not a wait for a writer", "[ipc][memory_map][errors]") {
  char dir[] = "/tmp/corio-fifo-XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string fifo = std::string(dir) + "/f";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // In a child with an alarm: before, open() waited for a writer for ever.
  const int status = in_child([&] {
    ::alarm(10);
    return memory_map::map_file(fifo) ? 1 : 0;
  });
  ::unlink(fifo.c_str());
  ::rmdir(dir);
  CHECK(status == 0);
}

TEST_CASE("shared_memory: a child process attaches by name and its writes are seen", "[ipc][shared_memory]") {
  scoped_shm_name n("fork");
  auto shm = shared_memory::create(n.name, 1 << 16);
  REQUIRE(shm);
  const std::string name = n.name;
  constexpr int kChildren = 3;
  constexpr int kIncrements = 10000;
  for (int c = 0; c < kChildren; ++c) {
    // Each child attaches by name, fills its slice and bumps a shared atomic counter.
    int status = in_child([&name, c] {
      auto mine = shared_memory::open(name);
      if (!mine) {
        return 2;
      }
      auto slice = mine->view<std::int32_t>(4096 + static_cast<std::size_t>(c) * 400, 100);
      auto counter = mine->view<std::int64_t>(0, 1);
      if (!slice || !counter) {
        return 3;
      }
      for (int i = 0; i < 100; ++i) {
        (*slice)[static_cast<std::size_t>(i)] = c * 1000 + i;
      }
      std::atomic_ref<std::int64_t> count((*counter)[0]);
      for (int i = 0; i < kIncrements; ++i) {
        count.fetch_add(1);
      }
      return 0;
    });
    REQUIRE(status == 0);
  }
  auto counter = shm->view<const std::int64_t>(0, 1);
  REQUIRE(counter);
  CHECK((*counter)[0] == static_cast<std::int64_t>(kChildren) * kIncrements);
  for (int c = 0; c < kChildren; ++c) {
    auto slice = shm->view<const std::int32_t>(4096 + static_cast<std::size_t>(c) * 400, 100);
    REQUIRE(slice);
    CHECK((*slice)[0] == c * 1000);
    CHECK((*slice)[99] == c * 1000 + 99);
  }
}

TEST_CASE("memory_map: anonymous shared memory is shared with a forked child", "[ipc][memory_map]") {
  auto m = memory_map::anonymous(4096);
  REQUIRE(m);
  auto words = m->view<std::uint64_t>(0, 512);
  REQUIRE(words);
  int status = in_child([&words] {
    (*words)[511] = 0xC0FFEE;
    return 0;
  });
  REQUIRE(status == 0);
  CHECK((*words)[511] == 0xC0FFEE);
}

namespace {
corio::task<corio::result<void>> flush_it(const memory_map* m) { co_return co_await m->flush(); }
}  // namespace

// read(2) shares the page cache with a MAP_SHARED mapping, so this shows the change is in
// the file, not that msync reached the disk (durability cannot be observed from here).
TEST_CASE("memory_map: a file mapped read-write and changed reads back changed; flush() succeeds off the workers",
          "[ipc][memory_map]") {
  char path[] = "/tmp/corio-map-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  const std::string text = "hello, mapped file";
  REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  ::close(fd);
  {
    auto ro = memory_map::map_file(path);
    REQUIRE(ro);
    CHECK(ro->size() == text.size());
    CHECK(std::string(reinterpret_cast<const char*>(ro->data()), ro->size()) == text);
    CHECK(error_of(ro->view<char>(0, 5)) == std::errc::permission_denied);  // writable view of read-only
    REQUIRE(ro->view<const char>(0, 5));
  }
  {
    auto rw = memory_map::map_file(path, map_access::read_write);
    REQUIRE(rw);
    auto head = rw->view<char>(0, 5);
    REQUIRE(head);
    (*head)[0] = 'J';
    corio::runtime rt(corio_test::workers(1));
    CHECK(rt.block_on(flush_it(&*rw)));
    memory_map gone;
    CHECK(error_of(rt.block_on(flush_it(&gone))) == std::errc::invalid_argument);
  }
  char back[64] = {};
  const int again = ::open(path, O_RDONLY);
  REQUIRE(again >= 0);
  REQUIRE(::read(again, back, sizeof back) == static_cast<ssize_t>(text.size()));
  ::close(again);
  CHECK(std::string(back) == "Jello, mapped file");
  ::unlink(path);
}

TEST_CASE("shared_memory / memory_map: bad names, sizes, offsets and views are clear errors",
          "[ipc][shared_memory][errors]") {
  CHECK(error_of(shared_memory::create("no-slash", 10)) == std::errc::invalid_argument);
  CHECK(error_of(shared_memory::create("/a/b", 10)) == std::errc::invalid_argument);
  CHECK(error_of(shared_memory::create("/..", 10)) == std::errc::invalid_argument);
  const scoped_shm_name missing("missing");  // removed first: certainly absent
  CHECK(error_of(shared_memory::create(missing.name, 0)) == std::errc::invalid_argument);
  CHECK(error_of(shared_memory::open(missing.name)) == std::errc::no_such_file_or_directory);
  CHECK(error_of(shared_memory::remove(missing.name)) == std::errc::no_such_file_or_directory);
  CHECK(error_of(memory_map::map_file("/nonexistent/corio")) == std::errc::no_such_file_or_directory);
  CHECK(error_of(memory_map::anonymous(0)) == std::errc::invalid_argument);
  shared_memory_options setuid;
  setuid.mode = 04777;  // permission bits only: once this made a setuid object
  CHECK(error_of(shared_memory::create(missing.name, 10, setuid)) == std::errc::invalid_argument);
  setuid.mode = 0170600;
  CHECK(error_of(shared_memory::create(missing.name, 10, setuid)) == std::errc::invalid_argument);

  char path[] = "/tmp/corio-empty-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  CHECK(error_of(memory_map::map_file(path)) == std::errc::invalid_argument);  // empty file
  CHECK(error_of(memory_map::map(fd, 10, map_access::read_only, 100)) == std::errc::invalid_argument);  // offset
  ::close(fd);
  ::unlink(path);

  auto m = memory_map::anonymous(100);
  REQUIRE(m);
  CHECK(m->view<std::uint32_t>(96, 1));
  const memory_map& read_side = *m;
  CHECK(read_side.view<const std::uint32_t>(96, 1));  // a const handle gives const views
  CHECK(error_of(m->view<std::uint32_t>(97, 1)) == std::errc::invalid_argument);   // misaligned
  CHECK(error_of(m->view<std::uint32_t>(96, 2)) == std::errc::invalid_argument);   // past the end
  CHECK(error_of(m->view<std::uint32_t>(200, 0)) == std::errc::invalid_argument);  // offset past the end
  memory_map moved = std::move(*m);
  CHECK_FALSE(m->is_mapped());
  CHECK(moved.is_mapped());
  moved.unmap();
  CHECK(error_of(moved.view<std::uint32_t>(0, 1)) == std::errc::invalid_argument);
}

TEST_CASE("shared_memory: a size /dev/shm cannot hold is no_space_on_device at create, not a SIGBUS later",
          "[ipc][shared_memory][errors]") {
  // In a child with a /dev/shm of its own, 1 MiB (its names go with its mount namespace).
  // Before create() committed the memory, the first create() below succeeded (ftruncate
  // takes no memory on tmpfs) and touching its pages raised SIGBUS.
  corio_test::child c([] {
    if (!corio_test::private_dev_shm("1m")) {
      return corio_test::no_private_dev_shm;
    }
    if (error_of(shared_memory::create("/big", 4 << 20)) != std::errc::no_space_on_device) {
      return 2;
    }
    if (error_of(shared_memory::open("/big")) != std::errc::no_such_file_or_directory) {
      return 3;  // a new name that could not be committed is removed again
    }
    auto fits = shared_memory::create("/fits", 768 << 10);
    if (!fits) {
      return 4;
    }
    std::memset(fits->bytes().data(), 1, fits->size());  // committed: every page is there
    if (error_of(shared_memory::create("/rest", 512 << 10)) != std::errc::no_space_on_device) {
      return 5;  // 256 KiB are left
    }
    auto small = shared_memory::create("/small", 128 << 10);
    if (!small) {
      return 6;
    }
    // Growing an existing object past what is left: the same error; the name is not
    // this call's to remove, and the object keeps its size (grown but not committed, an
    // opener would map the larger size and fault past the memory there is).
    if (error_of(shared_memory::create("/small", 1 << 20, {.exclusive = false})) != std::errc::no_space_on_device) {
      return 7;
    }
    auto again = shared_memory::open("/small");
    if (!again || again->size() != (128 << 10)) {
      return 8;
    }
    std::memset(again->bytes().data(), 2, again->size());  // every page of it is there
    // A sparse object another program made (sized, never written, as Python's
    // SharedMemory does): growing it commits only what is added; its holes stay holes.
    const int raw = ::shm_open("/sparse", O_RDWR | O_CREAT | O_EXCL, 0600);
    if (raw < 0 || ::ftruncate(raw, 64 << 10) != 0) {
      return 9;
    }
    auto grown = shared_memory::create("/sparse", 96 << 10, {.exclusive = false});
    struct stat st {};
    const bool added_only = grown && ::fstat(raw, &st) == 0 && st.st_blocks * 512 == (32 << 10);
    ::close(raw);
    return added_only ? 0 : 10;
  });
  const int status = c.wait_status();
  if (status == corio_test::no_private_dev_shm) {
    WARN("skipped: no private /dev/shm (neither CAP_SYS_ADMIN nor a user namespace; the child said why)");
    return;
  }
  CHECK(status == 0);
}
