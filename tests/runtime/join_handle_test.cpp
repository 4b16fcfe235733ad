// join_handle misuse (issue 10 item 5): awaiting consumes the handle, so a second await,
// and an await of a default-constructed, moved-from or detached handle, throw
// std::logic_error with a message instead of crashing or yielding a moved-from value;
// a cancelled wait keeps the handle; a task's exception and a shutdown consume it too.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/runtime/internal/runtime_core.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace std::chrono_literals;
using corio_test::workers;

namespace {

corio::task<std::vector<int>> make_values() { co_return std::vector<int>{1, 2, 3}; }

// The message of the logic_error that awaiting `h` throws ("" if it throws nothing).
template <class T>
corio::task<std::string> misuse_message(corio::join_handle<T>* h) {
  try {
    (void)co_await *h;
  } catch (const std::logic_error& e) {
    co_return e.what();
  }
  co_return "";
}

corio::task<std::size_t> await_twice(std::string* second) {
  auto h = corio::spawn(make_values());
  std::vector<int> first = co_await h;
  *second = co_await misuse_message(&h);
  co_return first.size() + (h.valid() ? 100 : 0);
}

corio::task<int> thrower() {
  throw std::runtime_error("boom");
  co_return 0;
}

corio::task<std::string> await_failed_twice(bool* first_threw) {
  auto h = corio::spawn(thrower());
  try {
    (void)co_await h;
  } catch (const std::runtime_error&) {
    *first_threw = true;
  }
  co_return co_await misuse_message(&h);
}

corio::task<int> slow_value(int v) {
  (void)co_await corio::sleep_for(50ms);
  co_return v;
}

corio::task<int> cancel_then_await() {
  auto h = corio::spawn(slow_value(7));
  auto r = co_await corio::timeout(h.wait({}), 1ms);  // stops the wait, not the task
  if (r || !h.valid()) {
    co_return -1;
  }
  co_return co_await h;
}

}  // namespace

TEST_CASE("join_handle: a second await throws logic_error instead of a moved-from value", "[runtime][join_handle]") {
  corio::runtime rt(workers(2));
  std::string second;
  CHECK(rt.block_on(await_twice(&second)) == 3);  // three values, and the handle is empty after
  CHECK(second.find("already awaited") != std::string::npos);
}

TEST_CASE("join_handle: awaiting a default-constructed, moved-from or detached handle throws logic_error",
          "[runtime][join_handle]") {
  corio::runtime rt(workers(1));
  corio::join_handle<int> empty;
  CHECK(rt.block_on(misuse_message(&empty)).find("corio::join_handle awaited without a task") == 0);

  auto h = rt.spawn(slow_value(1));
  REQUIRE(h);
  corio::join_handle<int> taken = std::move(*h);
  CHECK_FALSE(h->valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  CHECK(rt.block_on(misuse_message(&*h)).find("moved-from") != std::string::npos);

  taken.detach();
  CHECK(rt.block_on(misuse_message(&taken)).find("detached") != std::string::npos);
}

TEST_CASE("join_handle: a task's exception is rethrown once, then the handle is consumed", "[runtime][join_handle]") {
  corio::runtime rt(workers(1));
  bool first_threw = false;
  CHECK(rt.block_on(await_failed_twice(&first_threw)).find("already awaited") != std::string::npos);
  CHECK(first_threw);
}

TEST_CASE("join_handle: a cancelled wait keeps the handle, which then yields the value", "[runtime][join_handle]") {
  corio::runtime rt(workers(1));
  CHECK(rt.block_on(cancel_then_await()) == 7);
}

TEST_CASE("join_handle: block_on of an empty handle's await throws logic_error", "[runtime][join_handle]") {
  corio::runtime rt(workers(1));
  corio::join_handle<int> empty;
  auto join = [](corio::join_handle<int>* j) -> corio::task<int> { co_return co_await *j; };
  CHECK_THROWS_AS(rt.block_on(join(&empty)), std::logic_error);
}

namespace {

corio::task<int> finished_value() { co_return 7; }
corio::task<void> nothing() { co_return; }

std::atomic<int> g_release_phase{0};  // 1: the release is in its window; 2: runtime gone

void hold_release_until_runtime_gone() {
  g_release_phase.store(1, std::memory_order_release);
  g_release_phase.notify_all();
  while (g_release_phase.load(std::memory_order_acquire) != 2) {
    g_release_phase.wait(1, std::memory_order_acquire);
  }
}

}  // namespace

// A handle dropped on a thread that is none of the runtime's workers, while another thread
// destroys the runtime: the release must not touch the runtime's core after the registry
// (and then the core) may be gone. The hook holds the release between its decrement and
// its look at the runtime until the destruction has ended. Before the fix the release
// counted the state for the sweep in the freed core (heap-use-after-free under ASan; a
// silent write into freed memory elsewhere).
TEST_CASE("join_handle: dropped off the workers while the runtime is destroyed", "[runtime][join_handle]") {
  auto rt = std::make_unique<corio::runtime>(workers(1));
  auto handle = rt->spawn(finished_value());
  REQUIRE(handle.has_value());
  rt->block_on(nothing());  // one worker, FIFO: the first task has fully completed
  REQUIRE(handle->is_finished());
  g_release_phase.store(0);
  std::thread destroyer([&] {
    // Bounded: if the release never reaches the hook, the test fails instead of hanging.
    auto give_up = std::chrono::steady_clock::now() + 10s;
    while (g_release_phase.load(std::memory_order_acquire) == 0) {
      if (std::chrono::steady_clock::now() > give_up) {
        return;  // the hook never ran: phase stays 0, the runtime is left to the test
      }
      std::this_thread::sleep_for(1ms);
    }
    rt.reset();
    g_release_phase.store(2, std::memory_order_release);
    g_release_phase.notify_all();
  });
  corio::detail::g_test_hook_off_runtime_release.store(&hold_release_until_runtime_gone);
  handle->detach();  // the registry's reference is the only one left: the off-worker path
  corio::detail::g_test_hook_off_runtime_release.store(nullptr);
  destroyer.join();
  CHECK(g_release_phase.load() == 2);  // the hook ran, and the runtime was destroyed inside it
  CHECK(rt == nullptr);
}
