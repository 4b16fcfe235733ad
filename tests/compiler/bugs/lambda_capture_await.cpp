// Known-bug reproducer (tests/compiler/known_bugs.sh): a lambda with a capture that has a
// destructor, written inside a co_await expression (`co_await make_awaiter([c] {...})`).
// g++ 12 destroys the capture twice, the second time from a stale slot of the frame, at
// every optimization level, whether the await suspends or not and whether the coroutine
// then resumes or is destroyed: a double free for a std::vector or std::string capture.
// Exits 1 when it does, 0 when each object is destroyed once.
#include <coroutine>
#include <cstdio>
#include <exception>
#include <utility>

namespace {
int live = 0;  // constructed minus destroyed `counted` objects

struct counted {
  int v;
  explicit counted(int x) : v(x) { ++live; }
  counted(const counted& o) : v(o.v) { ++live; }
  counted(counted&& o) noexcept : v(o.v) { ++live; }
  ~counted() { --live; }
};

// Holds a function object, as spawn_blocking's awaiter does; suspends or not.
template <class F>
struct holder {
  F fn;
  bool ready;
  bool await_ready() const noexcept { return ready; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  int await_resume() { return fn(); }
};

template <class F>
holder<F> hold(F fn, bool ready) {
  return holder<F>{std::move(fn), ready};
}

struct task {
  struct promise_type {
    task get_return_object() { return task{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
  std::coroutine_handle<promise_type> h;
  ~task() { h.destroy(); }
};

task await_a_capturing_lambda(bool ready) {
  counted c(1);
  (void)co_await hold([c] { return c.v; }, ready);
}
}  // namespace

int main() {
  {
    task t = await_a_capturing_lambda(true);  // completes at once
  }
  int after_completing = live;
  live = 0;
  {
    task t = await_a_capturing_lambda(false);  // destroyed while suspended
  }
  int after_destroying = live;
  std::printf("lambda_capture_await: live objects after the coroutines: %d, %d\n", after_completing,
              after_destroying);
  return after_completing == 0 && after_destroying == 0 ? 0 : 1;
}
