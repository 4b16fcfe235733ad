// Known-bug reproducer (tests/compiler/known_bugs.sh): a braced list inside a co_await
// expression. g++ 12 rejects it ("array used as initializer"); it compiles elsewhere.
#include <coroutine>
#include <exception>
#include <string>
#include <vector>

namespace {
struct task {
  struct promise_type {
    task get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  void await_resume() const noexcept {}
};

std::size_t seen = 0;

task consume(std::vector<std::string> v) {
  seen = v.size();
  co_return;
}

task outer() { co_await consume(std::vector<std::string>{"a", "b"}); }
}  // namespace

int main() {
  outer();
  return seen == 2 ? 0 : 1;
}
