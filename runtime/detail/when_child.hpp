// The child coroutine that when_all / when_any wrap around each awaited task: it stores
// the task's result and, when it finishes, counts down a shared counter; the last child
// to finish resumes the parent (by symmetric transfer, on whichever worker it runs).
// Thread-safety: children may finish on different threads; the counter is atomic.
// Cost: one frame per child (recycled) and one atomic decrement per finish.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <variant>

#include <corio/runtime/port.hpp>
#include <corio/runtime/task.hpp>

namespace corio::detail {

template <class T>
using non_void_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

struct when_counter {
  std::atomic<std::size_t> remaining{0};
  std::coroutine_handle<> parent{};
  /// Called by each finishing child (and once by the parent after starting them all).
  /// Returns true for the last arrival.
  bool arrive() noexcept {
    // acq_rel: each child's release publishes its result; the last arrival's acquire
    // sees all of them before resuming the parent.
    return remaining.fetch_sub(1, std::memory_order_acq_rel) == 1;
  }
};

template <class T>
class when_child {
 public:
  struct promise_type : promise_base {
    when_counter* counter = nullptr;
    std::optional<non_void_t<T>> value;
    void (*on_finish)(void* ctx, std::size_t index) noexcept = nullptr;
    void* on_finish_ctx = nullptr;
    std::size_t index = 0;

    when_child get_return_object() noexcept {
      return when_child{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    struct final_awaiter {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        promise_type& p = h.promise();
        if (p.on_finish != nullptr) {
          p.on_finish(p.on_finish_ctx, p.index);
        }
        if (p.counter->arrive()) {
          return port::transfer(p.counter->parent);
        }
        return std::noop_coroutine();
      }
      void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }
    template <class U>
    void return_value(U&& v) {
      value.emplace(std::forward<U>(v));
    }
  };

  when_child() = default;
  explicit when_child(std::coroutine_handle<promise_type> h) : m_handle(h) {}
  when_child(when_child&& o) noexcept : m_handle(std::exchange(o.m_handle, {})) {}
  when_child& operator=(when_child&& o) noexcept {
    if (this != &o) {
      reset();
      m_handle = std::exchange(o.m_handle, {});
    }
    return *this;
  }
  ~when_child() { reset(); }

  promise_type& promise() const noexcept { return m_handle.promise(); }
  void start(when_counter* counter, const std::stop_token* token) noexcept {
    m_handle.promise().counter = counter;
    m_handle.promise().inherited_token = token;
    m_handle.resume();
  }
  /// The child's value; rethrows its exception.
  non_void_t<T> take() {
    if (m_handle.promise().exception) {
      std::rethrow_exception(m_handle.promise().exception);
    }
    return std::move(*m_handle.promise().value);
  }
  [[nodiscard]] bool failed() const noexcept { return static_cast<bool>(m_handle.promise().exception); }

 private:
  void reset() noexcept {
    if (m_handle) {
      m_handle.destroy();
      m_handle = {};
    }
  }
  std::coroutine_handle<promise_type> m_handle{};
};

template <class T>
when_child<T> make_when_child(task<T> t) {
  if constexpr (std::is_void_v<T>) {
    co_await std::move(t);
    co_return std::monostate{};
  } else {
    co_return co_await std::move(t);
  }
}

}  // namespace corio::detail
