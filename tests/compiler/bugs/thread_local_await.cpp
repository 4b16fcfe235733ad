// Known-bug reproducer (tests/compiler/known_bugs.sh): a coroutine resumed on another
// thread must see that thread's thread_local objects and std::this_thread::get_id().
// clang caches both across co_await when optimizing; exits 1 when it does.
#include <coroutine>
#include <cstdio>
#include <exception>
#include <thread>

namespace {
std::coroutine_handle<> parked;
thread_local int slot;
bool stale_id = false;
bool stale_slot = false;

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
  auto id = std::this_thread::get_id();
  int* where = &slot;
  co_await park{};  // resumed on another thread
  stale_id = id == std::this_thread::get_id();
  stale_slot = where == &slot;
}
}  // namespace

int main() {
  hop();
  std::thread([] { parked.resume(); }).join();
  std::printf("thread_local_await: stale thread id %d, stale thread_local %d\n", stale_id, stale_slot);
  return stale_id || stale_slot ? 1 : 0;
}
