// interval: a periodic timer. `co_await iv.tick()` waits for the next tick of a fixed
// grid (start, start + period, start + 2 period, ...), as Tokio's time::interval.
//
//   auto iv = corio::interval::every(100ms);     // result<interval>
//   for (;;) {
//     auto t = co_await iv->tick(token);         // result<clock::time_point>
//     if (!t) break;                             // operation_canceled
//     poll_something();                          // *t: the instant this tick was due
//   }
//
// First tick: interval::every(period) ticks at once (first_tick::immediately, Tokio's
// default), then every period; with first_tick::after_period the first tick is one
// period from the call. interval::starting_at(start, period) puts the first tick at
// `start`.
//
// Missed ticks. A tick is missed when the task comes to tick() late (it ran longer than
// a period, or its worker was busy). What the following ticks do is the
// missed_tick_behavior:
//   burst (default): the grid stays; every missed tick fires at once, back to back, until
//          the interval has caught up (a 1 s stall of a 100 ms interval gives 10 ticks
//          without waiting).
//   delay: the grid restarts from the late tick: the next tick is due one period after
//          the late tick completed.
//   skip:  the missed ticks are dropped: the late tick fires once, and the next one is
//          the first grid point after it completed (the grid stays aligned).
// A tick that completes at most `late_threshold` (5 ms, Tokio's) after its due instant
// counts as on time for delay and skip (so wake-up latency does not make the grid drift);
// burst never looks at lateness.
//
// Cancellation: tick(token) stops on `token` and on the inherited stop token (when_any,
// timeout); it then yields operation_canceled and the tick it waited for is not consumed
// (the next tick() waits for the same instant).
// Errors: every() / starting_at() refuse a period <= 0 (or NaN) with
// std::errc::invalid_argument; a huge period saturates (runtime/time.hpp: "practically
// never"). tick() off a corio worker yields errc::no_runtime.
// Thread-safety: one task ticks an interval at a time; the interval must outlive (and not
// move during) a pending tick. Moving it between ticks is fine.
// Cost: a tick that is due already returns without suspending (after a cooperative-budget
// check: a burst of missed ticks yields to other tasks every 128 ticks); otherwise one
// sleep (runtime/time.hpp: O(log n) in the worker's timer heap, no allocation).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <algorithm>
#include <chrono>
#include <coroutine>
#include <stop_token>
#include <system_error>

#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/time.hpp>

namespace corio {

/// What an interval does with ticks it missed (see the header comment).
enum class missed_tick_behavior {
  burst,  ///< keep the grid; fire the missed ticks back to back
  delay,  ///< restart the grid one period after the late tick
  skip,   ///< drop the missed ticks; the next tick is the next grid point
};

/// When an interval made by interval::every() ticks first.
enum class first_tick {
  immediately,   ///< at once (Tokio's default)
  after_period,  ///< one period after the interval was made
};

/// A periodic timer (see the header comment). Move-only value; one ticking task at a time.
class interval {
 public:
  /// How late a tick may complete and still count as on time for delay and skip.
  static constexpr clock::duration late_threshold = std::chrono::milliseconds(5);

  /// An interval of `period` (> 0) whose first tick is now or one period from now.
  /// std::errc::invalid_argument for a period <= 0; a huge period saturates. Any thread.
  template <class Rep, class Period>
  static result<interval> every(std::chrono::duration<Rep, Period> period, first_tick first = first_tick::immediately,
                                missed_tick_behavior behavior = missed_tick_behavior::burst) {
    clock::duration p = saturating_cast(period);
    if (p <= clock::duration::zero()) {
      return unexpected(std::make_error_code(std::errc::invalid_argument));
    }
    clock::time_point now = clock::now();
    return interval(first == first_tick::immediately ? now : deadline_after(p, now), p, behavior);
  }

  /// An interval of `period` (> 0) whose first tick is due at `start`, any
  /// time_point<clock, D> (in the past: due at once; past clock::time_point's range:
  /// never, as a huge period). std::errc::invalid_argument for a period <= 0. Any thread.
  template <class Rep, class Period>
  static result<interval> starting_at(saturating_time_point start, std::chrono::duration<Rep, Period> period,
                                      missed_tick_behavior behavior = missed_tick_behavior::burst) {
    clock::duration p = saturating_cast(period);
    if (p <= clock::duration::zero()) {
      return unexpected(std::make_error_code(std::errc::invalid_argument));
    }
    // Before the clock's epoch (boot) is as good as at it, and keeps `now - due` in range.
    return interval(std::max(start.get(), clock::time_point{}), p, behavior);
  }

  /// Moves the interval (not while a tick is pending).
  interval(interval&&) noexcept = default;
  /// Move-assigns the interval (not while a tick is pending).
  interval& operator=(interval&&) noexcept = default;
  interval(const interval&) = delete;
  interval& operator=(const interval&) = delete;

  class tick_awaiter;
  /// Waits for the next tick; yields the instant it was due (result<clock::time_point>),
  /// or operation_canceled (the tick is then not consumed). See the header comment.
  [[nodiscard]] tick_awaiter tick(std::stop_token token = {}) noexcept;

  /// The instant the next tick is due.
  [[nodiscard]] clock::time_point next_tick() const noexcept { return m_next; }
  /// The period (saturated to clock::duration).
  [[nodiscard]] clock::duration period() const noexcept { return m_period; }
  /// The current policy for missed ticks.
  [[nodiscard]] missed_tick_behavior behavior() const noexcept { return m_behavior; }
  /// Changes the policy; it applies from the next tick that completes.
  void set_missed_tick_behavior(missed_tick_behavior b) noexcept { m_behavior = b; }
  /// Restarts the grid: the next tick is due one period from now.
  void reset() noexcept { m_next = deadline_after(m_period); }

 private:
  interval(clock::time_point first, clock::duration period, missed_tick_behavior behavior) noexcept
      : m_next(first), m_period(period), m_behavior(behavior) {}

  // Consumes the tick due at m_next, completed at `now`; returns its due instant.
  clock::time_point advance(clock::time_point now) noexcept {
    clock::time_point due = m_next;
    clock::duration late = now - due;
    if (m_behavior == missed_tick_behavior::burst || late <= late_threshold) {
      m_next = deadline_after(m_period, due);
    } else if (m_behavior == missed_tick_behavior::delay) {
      m_next = deadline_after(m_period, now);
    } else {
      // skip: the first grid point strictly after `now`. late < 2^63 ns and the product
      // is at most late + period, so only a huge period can saturate (then late < period).
      clock::duration steps = m_period * (late / m_period + 1);
      m_next = deadline_after(late < m_period ? m_period : steps, due);
    }
    return due;
  }

  clock::time_point m_next;
  clock::duration m_period;
  missed_tick_behavior m_behavior;
};

/// The awaitable of interval::tick(); yields result<clock::time_point>.
class [[nodiscard]] interval::tick_awaiter {
 public:
  /// Waits for `iv`'s next tick; `token` cancels the wait.
  tick_awaiter(interval* iv, std::stop_token token) noexcept
      : m_interval(iv), m_token(token), m_sleep(iv->m_next, std::move(token)) {}

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    // A tick already due completes without suspending, unless the task is stopped (the
    // sleep reports that) or its cooperative budget is spent (the sleep then fires at the
    // worker's next timer pass, letting other tasks run).
    if (port::current_worker() != nullptr && clock::now() >= m_interval->m_next && !m_token.stop_requested()) {
      const std::stop_token* inherited = detail::inherited_token_of(h);
      if ((inherited == nullptr || !inherited->stop_requested()) && !port::consume_budget()) {
        m_due_now = true;
        return false;
      }
    }
    return m_sleep.await_suspend(h);
  }

  [[nodiscard]] result<clock::time_point> await_resume() noexcept {
    if (!m_due_now) {
      result<void> slept = m_sleep.await_resume();
      if (!slept) {
        return unexpected(slept.error());
      }
    }
    return m_interval->advance(clock::now());
  }

 private:
  interval* m_interval;
  std::stop_token m_token;
  sleep_awaiter m_sleep;
  bool m_due_now = false;
};

inline interval::tick_awaiter interval::tick(std::stop_token token) noexcept {
  return tick_awaiter(this, std::move(token));
}

}  // namespace corio
