// Known-bug reproducer (tests/compiler/known_bugs.sh): ?: inside a co_await expression,
// as `c ? co_await a : co_await b` and as `co_await (c ? a : b)`. g++ 12 destroys the
// chosen object twice in both; exits 1 when either form does, 0 when neither does.
#include <coroutine>
#include <cstdio>
#include <exception>

namespace {
int live = 0;  // constructed minus destroyed `counted` objects

struct counted {
  int v;
  explicit counted(int x) : v(x) { ++live; }
  counted(const counted& o) : v(o.v) { ++live; }
  ~counted() { --live; }
};

struct ready {  // an awaitable that completes at once with a counted value
  int x;
  explicit ready(int v) : x(v) { ++live; }
  ready(const ready& o) : x(o.x) { ++live; }
  ~ready() { --live; }
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  counted await_resume() const { return counted{x}; }
};

struct task {
  struct promise_type {
    int value = 0;
    task get_return_object() { return task{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_value(int v) { value = v; }
    void unhandled_exception() { std::terminate(); }
  };
  std::coroutine_handle<promise_type> h;
  ~task() { h.destroy(); }
};

task await_in_both_arms(bool c) {
  counted r = c ? co_await ready{1} : co_await ready{2};
  co_return r.v;
}

task await_the_chosen_one(bool c) {
  counted r = co_await (c ? ready{1} : ready{2});
  co_return r.v;
}
}  // namespace

int main() {
  {
    task t = await_in_both_arms(true);
    (void)t;
  }
  int after_both_arms = live;
  live = 0;
  {
    task t = await_the_chosen_one(true);
    (void)t;
  }
  int after_chosen = live;
  std::printf("ternary_await: live objects after the coroutines: %d, %d\n", after_both_arms, after_chosen);
  return after_both_arms == 0 && after_chosen == 0 ? 0 : 1;
}
