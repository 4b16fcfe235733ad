// Known-bug reproducer (tests/compiler/known_bugs.sh): a co_await in the right operand of
// && whose left operand makes a temporary with a destructor. g++ 12 stops with an internal
// compiler error (in lower_stmt, at gimple-low.cc) at every optimization level; it compiles
// and runs elsewhere.
#include <coroutine>
#include <exception>
#include <string>

namespace {
struct task {
  struct promise_type {
    task get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
};

struct ready {
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  bool await_resume() const noexcept { return true; }
};

int seen = 0;

task outer(std::string s) {
  if (s == std::string("x") && co_await ready{}) {
    seen = 1;
  }
  co_return;
}
}  // namespace

int main() {
  outer("x");
  return seen == 1 ? 0 : 1;
}
