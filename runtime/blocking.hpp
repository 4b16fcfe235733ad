// spawn_blocking(fn): run blocking or CPU-heavy work on the runtime's separate, elastic
// thread pool, and await its result without blocking a worker.
//
// `co_await spawn_blocking(fn, token)` yields result<R> (R = fn's return type, void
// allowed); an exception thrown by fn is rethrown in the awaiter. The pool grows on demand
// up to runtime_config::max_blocking_threads and idle threads exit after
// blocking_keep_alive.
// Cancellation: a stop request before the job has started withdraws it (it never runs)
// and the await returns operation_canceled; a job that has started cannot be interrupted
// and is waited for.
// Errors: errc::no_runtime off a runtime's worker; errc::shut_down for an await begun
// after shutdown began (a job still queued when shutdown begins is dropped, and its
// awaiting task destroyed with the others, never resumed); the system's error
// (resource_unavailable_try_again, from pthread_create) when the pool has no thread and
// the system refuses a new one: the job did not run (with threads alive, the job waits
// for one of them instead, as at max_blocking_threads: for ever if each of them runs a
// job that waits for this one); std::bad_alloc thrown when the queue cannot grow.
// g++ 12: a lambda with a capture that has a destructor (a vector, a string, a
// shared_ptr), written inside the co_await expression, has that capture destroyed twice
// by the awaiting coroutine itself; name it first: `auto job = [v] {...};
// co_await spawn_blocking(std::move(job));` (README, "Known compiler bugs").
// Thread-safety: the job runs on a pool thread; the awaiter resumes on a worker.
// Cost: a lock, a condition-variable signal, and a cross-thread wake of a worker; a
// thread start when no idle thread is free for the queued jobs (up to the limit); with a
// token that can be stopped, a stop callback registered and removed.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <coroutine>
#include <exception>
#include <functional>
#include <optional>
#include <stop_token>
#include <system_error>
#include <type_traits>
#include <utility>

#include <corio/runtime/detail/when_child.hpp>
#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio {

/// The awaitable returned by spawn_blocking(); awaited once, yields result<R>.
template <class F>
class [[nodiscard]] blocking_awaiter : port::blocking_job {
 public:
  /// What `fn` returns; the await yields result<value_type>.
  using value_type = std::invoke_result_t<F&>;

  /// Holds `fn` until the await hands it to the blocking pool; see spawn_blocking().
  blocking_awaiter(F fn, std::stop_token token) : m_fn(std::move(fn)), m_token(std::move(token)) {}
  /// Moves a not-yet-awaited awaiter (the function and the token).
  blocking_awaiter(blocking_awaiter&& o) noexcept(std::is_nothrow_move_constructible_v<F>)
      : m_fn(std::move(o.m_fn)), m_token(std::move(o.m_token)) {}

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    m_home = port::current_runtime();
    if (m_home == nullptr) {
      m_error = make_error_code(errc::no_runtime);
      return false;
    }
    const detail::inherited_stop inherited = detail::inherited_token_of(h);
    if (port::stop_link<stop_fn>::stopped(m_token, inherited)) {
      m_error = cancelled_error();
      return false;
    }
    m_waiter = h;
    // The callbacks are registered before the job is queued: once it is queued a pool
    // thread may finish it and another worker resume us, so nothing may touch *this
    // after submit() succeeds. A stop that came before arm() ran our callback in arm(),
    // which found nothing to withdraw: look again. One after this look found nothing
    // queued either, but flagged the job under the pool's lock: submit() refuses it.
    m_stop.arm(m_token, inherited, stop_fn{this});
    if (port::stop_link<stop_fn>::stopped(m_token, inherited)) {
      m_stop.disarm();
      m_error = cancelled_error();
      return false;
    }
    bool queued = false;
    try {
      queued = port::blocking_submit(m_home, this);
    } catch (const std::system_error& e) {
      // No pool thread, and the system refused to start one (nothing was queued): an
      // error of the await, like every other failure of a result-returning call.
      m_stop.disarm();
      m_error = e.code();
      return false;
    }
    if (!queued) {
      // Refused: shutdown began, or a stop withdrew the job before it was queued.
      m_stop.disarm();
      const bool stopped = port::stop_link<stop_fn>::stopped(m_token, inherited);
      m_error = stopped ? cancelled_error() : make_error_code(errc::shut_down);
      return false;
    }
    return true;
  }

  [[nodiscard]] result<value_type> await_resume() {
    m_stop.disarm();
    if (m_error) {
      return unexpected(m_error);
    }
    if (m_exception) {
      std::rethrow_exception(m_exception);
    }
    if constexpr (std::is_void_v<value_type>) {
      return {};
    } else {
      return std::move(*m_value);
    }
  }

 private:
  struct stop_fn {
    blocking_awaiter* self;
    void operator()() const noexcept {
      if (port::blocking_withdraw(self->m_home, self)) {
        self->m_error = cancelled_error();
        port::wake(self->m_waiter, self->m_home);
      }
    }
  };

  void run() noexcept override {
    try {
      if constexpr (std::is_void_v<value_type>) {
        std::invoke(m_fn);
      } else {
        m_value.emplace(std::invoke(m_fn));
      }
    } catch (...) {
      m_exception = std::current_exception();
    }
    port::wake(m_waiter, m_home);
  }

  F m_fn;
  std::stop_token m_token;
  std::optional<detail::non_void_t<value_type>> m_value;
  std::exception_ptr m_exception;
  std::error_code m_error;
  std::coroutine_handle<> m_waiter{};
  detail::runtime_core* m_home = nullptr;
  port::stop_link<stop_fn> m_stop;
};

/// Runs `fn` on the blocking pool; `co_await` yields result<R> (see the header).
template <class F>
blocking_awaiter<std::decay_t<F>> spawn_blocking(F&& fn, std::stop_token token = {}) {
  return blocking_awaiter<std::decay_t<F>>(std::forward<F>(fn), std::move(token));
}

}  // namespace corio
