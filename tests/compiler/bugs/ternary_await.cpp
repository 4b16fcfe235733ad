// Known-bug reproducer (tests/compiler/known_bugs.sh): `c ? co_await a : co_await b`.
// g++ 12 destroys the chosen result twice; exits 1 when it does, 0 when it does not.
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

task pick(bool c) {
  counted r = c ? co_await ready{1} : co_await ready{2};
  co_return r.v;
}
}  // namespace

int main() {
  {
    task t = pick(true);
    (void)t;
  }
  std::printf("ternary_await: live objects after the coroutine: %d\n", live);
  return live == 0 ? 0 : 1;
}
