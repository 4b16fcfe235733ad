// Known-bug reproducer (tests/compiler/known_bugs.sh): errno read after a co_await that
// resumed on another thread must be that thread's. clang 14 reuses the first thread's
// errno address when optimizing; exits 1 when it does.
#include <cerrno>
#include <coroutine>
#include <cstdio>
#include <exception>
#include <thread>

namespace {
std::coroutine_handle<> parked;
int seen = -1;

struct park {
  bool await_ready() noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept { parked = h; }
  void await_resume() noexcept {}
};

struct task {
  struct promise_type {
    task get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
};

task hop() {
  errno = 1;
  co_await park{};  // resumed on a thread whose errno is 7
  seen = errno;
}
}  // namespace

int main() {
  hop();
  std::thread([] {
    errno = 7;
    parked.resume();
  }).join();
  std::printf("errno_await: errno after the hop %d (7 expected)\n", seen);
  return seen == 7 ? 0 : 1;
}
