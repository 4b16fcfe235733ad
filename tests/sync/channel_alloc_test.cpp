// channel<T> when its buffer cannot grow, and how much it allocates. This program
// replaces the global operator new (replaced_new.hpp; its own executable: tests/meson.build,
// separate_tests): while a thread has armed it, an allocation of g_fail_from bytes or
// more throws std::bad_alloc.
#include <corio/sync/channel.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <string>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/task.hpp>

#include "replaced_new.hpp"
#include "sync_helpers.hpp"

namespace {
thread_local bool t_armed = false;
std::size_t g_fail_from = 0;  // set before arming, on the armed thread

void* checked_malloc(std::size_t n) noexcept {
  if (t_armed && n >= g_fail_from) {
    return nullptr;
  }
  return std::malloc(n == 0 ? 1 : n);
}

/// Allocations of `from` bytes or more fail on this thread while it lives.
struct fail_large_allocations {
  explicit fail_large_allocations(std::size_t from) {
    g_fail_from = from;
    t_armed = true;
  }
  ~fail_large_allocations() { t_armed = false; }
  fail_large_allocations(const fail_large_allocations&) = delete;
  fail_large_allocations& operator=(const fail_large_allocations&) = delete;
};

struct big {
  std::array<char, 4096> bytes{};
};
}  // namespace

void* corio_test_allocate(std::size_t n) noexcept { return checked_malloc(n); }  // replaced_new.hpp

TEST_CASE("channel: a small capacity allocates no more slots than it can use", "[sync][channel]") {
  // The buffer used to start at 16 slots whatever the capacity (64 KiB here).
  corio::channel<big> ch(1);
  {
    fail_large_allocations guard(2 * sizeof(big));
    REQUIRE(ch.try_send(big{}));
  }
  REQUIRE(ch.size() == 1);
  REQUIRE(ch.try_recv());
}

namespace {
corio::task<int> send_without_memory(corio::channel<big>& ch) {
  try {
    fail_large_allocations guard(2 * sizeof(big));
    (void)co_await ch.send(big{});  // the first value: the buffer must grow
    co_return 3;
  } catch (const std::bad_alloc&) {
  }
  if (ch.size() != 0) {  // takes the lock: it was released
    co_return 4;
  }
  if (!co_await ch.send(big{}) || ch.size() != 1) {  // still usable
    co_return 5;
  }
  co_return 0;
}
}  // namespace

TEST_CASE("channel: a send whose buffer cannot grow throws bad_alloc and leaves the channel usable", "[sync][channel]") {
  // It used to terminate: the allocation ran under the channel's lock inside a noexcept
  // function (and a throw from the queueing path would have left the lock held).
  auto out = corio_test::run_in_child([] {
    corio::runtime rt(corio_test::sync_config(1));
    corio::channel<big> ch(corio::unbounded_capacity);
    std::_Exit(rt.block_on(send_without_memory(ch)));
  });
  INFO(out.err);
  REQUIRE(out.exited_0);
}

TEST_CASE("channel: a try_send whose buffer cannot grow throws bad_alloc and leaves the value and channel", "[sync][channel]") {
  corio::channel<std::string> ch(corio::unbounded_capacity);
  std::string v(100, 'x');
  {
    fail_large_allocations guard(1);  // every allocation
    REQUIRE_THROWS_AS(ch.try_send(std::move(v)), std::bad_alloc);
  }
  REQUIRE(v == std::string(100, 'x'));
  REQUIRE(ch.size() == 0);
  REQUIRE(ch.try_send(std::move(v)));
  REQUIRE(ch.size() == 1);
}

TEST_CASE("channel: a send_blocking whose buffer cannot grow throws bad_alloc and leaves the channel usable", "[sync][channel]") {
  // The thread form reports the failed allocation as the awaitable does (from the
  // operation's result, after the lock is dropped).
  corio::channel<big> ch(corio::unbounded_capacity);
  {
    fail_large_allocations guard(2 * sizeof(big));
    REQUIRE_THROWS_AS(ch.send_blocking(big{}), std::bad_alloc);
  }
  REQUIRE(ch.size() == 0);  // takes the lock: it was released
  REQUIRE(ch.send_blocking(big{}));
  REQUIRE(ch.size() == 1);
}
