// spawn(callable, args...) (issue 16 item 3): a capturing coroutine lambda spawned as a
// callable keeps its captures alive in the task's frame after the lambda object the
// caller held is gone; arguments are moved in (a move-only one) and a reference parameter
// refers to the frame's copy; runtime::spawn takes callables too; a callable that does
// not return a task does not compile.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include <memory>
#include <string>
#include <utility>

#include "helpers.hpp"

using corio_test::workers;

namespace {

// A capture that lives on the heap (longer than any small-string buffer).
std::string long_text() { return std::string(200, 'x') + "-tail"; }

corio::task<std::string> spawn_capturing_lambda() {
  corio::join_handle<std::string> h;
  {
    auto fn = [s = long_text()]() -> corio::task<std::string> {
      co_await corio::yield_now();  // resumes after the caller's lambda object is gone
      co_return s;
    };
    h = corio::spawn(std::move(fn));
  }  // `fn` (moved from) dies here; one worker: the task has not run yet
  co_return co_await h;
}

corio::task<std::string> spawn_lambda_temporary() {
  std::string text = long_text();
  auto h = corio::spawn([copy = text]() -> corio::task<std::string> {
    co_await corio::yield_now();
    co_return copy + "!";
  });
  co_return co_await h;
}

corio::task<int> spawn_move_only_argument() {
  auto h = corio::spawn(
      [](std::unique_ptr<int> p, const std::string& ref) -> corio::task<int> {
        co_await corio::yield_now();
        co_return *p + static_cast<int>(ref.size());
      },
      std::make_unique<int>(40), std::string("ab"));
  co_return co_await h;
}

corio::task<void> spawn_void(int* out) {
  auto h = corio::spawn([out]() -> corio::task<void> {
    *out = 9;
    co_return;
  });
  co_await h;
}

template <class F>
concept spawnable = requires(F f) { corio::spawn(std::move(f)); };

}  // namespace

// Not a task: rejected at compile time instead of failing inside the wrapper.
static_assert(!spawnable<decltype([] { return 1; })>);
static_assert(spawnable<decltype([]() -> corio::task<int> { co_return 1; })>);

TEST_CASE("spawn(callable): a capturing lambda's captures outlive the caller's lambda object",
          "[runtime][spawn_callable]") {
  corio::runtime rt(workers(1));
  CHECK(rt.block_on(spawn_capturing_lambda()) == long_text());
  CHECK(rt.block_on(spawn_lambda_temporary()) == long_text() + "!");
}

TEST_CASE("spawn(callable, args...): arguments are moved into the task's frame", "[runtime][spawn_callable]") {
  corio::runtime rt(workers(2));
  CHECK(rt.block_on(spawn_move_only_argument()) == 42);
  int out = 0;
  rt.block_on(spawn_void(&out));
  CHECK(out == 9);
}

TEST_CASE("runtime::spawn(callable, args...) from a plain thread", "[runtime][spawn_callable]") {
  corio::runtime rt(workers(2));
  auto h = rt.spawn([s = long_text()](int n) -> corio::task<std::size_t> { co_return s.size() + n; }, 1);
  REQUIRE(h);
  auto await_it = [](corio::join_handle<std::size_t> handle) -> corio::task<std::size_t> {
    co_return co_await handle;
  };
  CHECK(rt.block_on(await_it(std::move(*h))) == long_text().size() + 1);
}
