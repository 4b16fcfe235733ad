// corio::shield(task): await a task without passing it the awaiter's cancellation token,
// so it runs to completion even if the awaiting task is stopped (when_any, timeout, a
// stop token) — Trio's shielded cancel scope.
//
// For an operation that, once started, must not be abandoned half-way: a request whose
// reply must be read (the fork server's: a child would be created that nobody owns), the
// reap of a child killed on cancellation, a descriptor a helper task may be a moment from
// publishing. The awaiter's stop is seen again after the shielded task returns. The
// shielded task must be short or bounded by itself (it ignores the caller's stop), and
// an explicit token passed to the waits inside it still cancels them.
// Thread-safety and cost: those of awaiting the task (no allocation, no atomics).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <coroutine>
#include <utility>

#include <corio/runtime/port.hpp>
#include <corio/runtime/task.hpp>

namespace corio {

/// The awaitable returned by shield(): awaits the task without the awaiter's stop token.
template <class T>
class shielded {
 public:
  /// Holds `body` until awaited.
  explicit shielded(task<T> body) noexcept : m_body(std::move(body)) {}

  bool await_ready() const noexcept { return false; }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> parent) noexcept {
    m_handle = m_body.release();
    m_body = task<T>(m_handle);  // keep ownership: the frame dies with this awaiter
    m_handle.promise().continuation = parent;
    m_handle.promise().inherited_token = nullptr;  // the point: no token reaches the body
    m_handle.promise().abort_root = nullptr;       // nor an abort of the spawned task
    return port::transfer(m_handle);
  }
  // [[nodiscard]] when T is a result (result.hpp, rule 4).
  T await_resume() requires(!detail::is_result_v<T>) { return take(); }
  [[nodiscard]] T await_resume() requires detail::is_result_v<T> { return take(); }

 private:
  T take() {
    if constexpr (std::is_void_v<T>) {
      m_handle.promise().value();
    } else {
      return std::move(m_handle.promise().value());
    }
  }

  task<T> m_body;
  std::coroutine_handle<typename task<T>::promise_type> m_handle{};
};

/// `co_await shield(t)`: awaits `t` with no cancellation token (see the header comment).
template <class T>
shielded<T> shield(task<T> body) noexcept {
  return shielded<T>(std::move(body));
}

}  // namespace corio
