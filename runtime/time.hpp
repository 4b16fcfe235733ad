// Timers: sleep_for, sleep_until (and timeout(), in runtime/timeout.hpp).
//
// A sleep arms a node in the current worker's timer heap (no kernel timer per sleep: the
// worker sleeps in io_uring_enter with the earliest deadline as its timeout) and resumes
// on that worker when due. Equal deadlines fire in arming order. Resolution: the wake-up
// latency of the worker (~10-100 µs when idle); a worker busy with long tasks checks its
// timers every runtime_config::global_queue_interval ticks.
// Cancellation: the explicit token and the inherited one (when_any, timeout) cancel the
// sleep from any thread; it then returns std::errc::operation_canceled.
// Thread-safety: one awaiter. Cost: O(log n) in the worker's heap, no allocation.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cerrno>
#include <chrono>
#include <coroutine>
#include <optional>
#include <stop_token>

#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio {

/// The clock of every corio deadline (monotonic).
using clock = std::chrono::steady_clock;

/// Awaitable returned by sleep_until / sleep_for; yields result<void>.
class [[nodiscard]] sleep_awaiter : port::timer_node {
 public:
  /// Sleeps until `deadline` once awaited; `token` cancels the sleep.
  sleep_awaiter(clock::time_point deadline, std::stop_token token) : m_deadline(deadline), m_token(std::move(token)) {
    on_cancel_drained = &cancel_drained;
    on_resume = &resume;
  }
  /// Moves a not-yet-awaited sleep.
  sleep_awaiter(sleep_awaiter&& o) noexcept : sleep_awaiter(o.m_deadline, std::move(o.m_token)) {}
  sleep_awaiter(const sleep_awaiter&) = delete;
  sleep_awaiter& operator=(const sleep_awaiter&) = delete;

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    detail::worker* w = port::current_worker();
    if (w == nullptr) {
      m_no_runtime = true;
      return false;
    }
    const std::stop_token* inherited = detail::inherited_token_of(h);
    if (port::stop_link<stop_fn>::stopped(m_token, inherited)) {
      res = -ECANCELED;
      return false;
    }
    owner = w;
    waiter = h;
    deadline_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(m_deadline.time_since_epoch()).count();
    port::arm_timer(w, this);
    m_stop.arm(m_token, inherited, stop_fn{this});
    return true;
  }

  result<void> await_resume() noexcept {
    m_stop.disarm();
    if (m_no_runtime) {
      return unexpected(make_error_code(errc::no_runtime));
    }
    if (res == -ECANCELED) {
      return unexpected(cancelled_error());
    }
    return {};
  }

 private:
  struct stop_fn {
    sleep_awaiter* self;
    void operator()() const noexcept { self->request_cancel(); }
  };
  static void cancel_drained(port::cancellable* c) noexcept {
    auto* self = static_cast<sleep_awaiter*>(c);
    port::disarm_timer(self->owner, self);
    self->res = -ECANCELED;
    resume(c);
  }
  static void resume(port::cancellable* c) noexcept {
    auto* self = static_cast<sleep_awaiter*>(c);
    port::resume_timer(self->owner, self->waiter);
  }

  clock::time_point m_deadline;
  std::stop_token m_token;
  port::stop_link<stop_fn> m_stop;
  bool m_no_runtime = false;
};

/// Suspends the current task until `deadline`. Yields result<void> (operation_canceled
/// if stopped first).
inline sleep_awaiter sleep_until(clock::time_point deadline, std::stop_token token = {}) {
  return sleep_awaiter(deadline, std::move(token));
}

/// Suspends the current task for `duration` (measured on the steady clock).
template <class Rep, class Period>
sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> duration, std::stop_token token = {}) {
  return sleep_awaiter(clock::now() + std::chrono::duration_cast<clock::duration>(duration), std::move(token));
}

}  // namespace corio
