// The README's workarounds for known compiler bugs ("Known compiler bugs"), written as a
// user would with corio's tasks, behave as the README says under the compiler that builds
// them (CI: g++ 12 at -O0 and -O3, clang 19 at -O3). The bugs themselves are checked by
// known_bugs.sh.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include <coroutine>
#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "thread_id.hpp"

namespace {
int live = 0;  // constructed minus destroyed `counted` objects (one task at a time)

struct counted {
  int v;
  explicit counted(int x) : v(x) { ++live; }
  counted(const counted& o) : v(o.v) { ++live; }
  counted(counted&& o) noexcept : v(o.v) { ++live; }
  ~counted() { --live; }
};

corio::task<counted> make(int x) { co_return counted{x}; }

corio::task<int> pick_with_if(bool c) {
  std::optional<counted> r;
  if (c) {
    r.emplace(co_await make(1));
  } else {
    r.emplace(co_await make(2));
  }
  co_return r->v;
}

corio::task<int> pick_then_await(bool c) {
  auto chosen = c ? make(1) : make(2);
  counted r = co_await std::move(chosen);
  co_return r.v;
}

corio::task<std::size_t> total_length(std::vector<std::string> words) {
  std::size_t n = 0;
  for (const auto& w : words) {
    n += w.size();
  }
  co_return n;
}

corio::task<std::size_t> named_list_then_await() {
  std::vector<std::string> words{"corio", "io", "uring"};
  co_return co_await total_length(std::move(words));
}

// The capturing-lambda workaround: the job is named before the co_await.
corio::task<int> named_job_then_await() {
  counted c(7);
  auto job = [c] { return c.v; };
  auto r = co_await corio::spawn_blocking(std::move(job));
  co_return r ? *r : 0;
}

corio::task<bool> non_empty(std::string s) { co_return !s.empty(); }

// The && workaround: the await in a statement of its own, then the test with temporaries.
corio::task<int> await_then_test(std::string s) {
  bool awaited = co_await non_empty(s);
  if (s == std::string("corio") && awaited) {
    co_return 1;
  }
  co_return 0;
}
}  // namespace

TEST_CASE("an if/else around two co_awaits destroys the chosen result once", "[compiler]") {
  live = 0;
  CHECK(corio::run(pick_with_if(true)) == 1);
  CHECK(corio::run(pick_with_if(false)) == 2);
  CHECK(live == 0);
}

TEST_CASE("awaiting a task that ?: chose in an earlier statement destroys its result once", "[compiler]") {
  live = 0;
  CHECK(corio::run(pick_then_await(true)) == 1);
  CHECK(corio::run(pick_then_await(false)) == 2);
  CHECK(live == 0);
}

TEST_CASE("a braced list named before the co_await reaches the awaited task intact", "[compiler]") {
  CHECK(corio::run(named_list_then_await()) == 12);
}

TEST_CASE("a capturing lambda named before the co_await is destroyed once", "[compiler]") {
  live = 0;
  CHECK(corio::run(named_job_then_await()) == 7);
  CHECK(live == 0);
}

TEST_CASE("an await moved out of an && with a temporary gives the && its value", "[compiler]") {
  CHECK(corio::run(await_then_test("corio")) == 1);
  CHECK(corio::run(await_then_test("uring")) == 0);
  CHECK(corio::run(await_then_test("")) == 0);
}

namespace {
// A coroutine that a test resumes on a thread of its choice.
std::coroutine_handle<> parked;

struct park {
  bool await_ready() noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept { parked = h; }
  void await_resume() noexcept {}
};

struct eager {
  struct promise_type {
    eager get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
};

eager hop(std::thread::id* before, std::thread::id* after) {
  *before = corio_test::current_thread_id();
  co_await park{};
  *after = corio_test::current_thread_id();
}
}  // namespace

TEST_CASE("a thread id read out of line is fresh after the coroutine changes threads", "[compiler]") {
  std::thread::id before;
  std::thread::id after;
  std::thread::id resumer;
  hop(&before, &after);
  std::thread([&] {
    resumer = std::this_thread::get_id();
    parked.resume();
  }).join();
  CHECK(before == std::this_thread::get_id());
  CHECK(after == resumer);
  CHECK(after != before);
}
