// Timers: sleep_for, sleep_until (and timeout(), in runtime/timeout.hpp).
//
// A sleep arms a node in the current worker's timer heap (no kernel timer per sleep: the
// worker sleeps in io_uring_enter with the earliest deadline as its timeout) and resumes
// on that worker when due. Equal deadlines fire in arming order. Resolution: the wake-up
// latency of the worker (~10-100 µs when idle); a worker busy with short tasks checks its
// timers every runtime_config::global_queue_interval ticks. If its worker is stuck in one
// long task or a blocking call, another worker that is idle or between tasks fires the
// sleep once it is runtime_config::timer_takeover_delay late (1 ms by default) and resumes
// the task itself (runtime/timers.cpp); with a single worker nobody can.
// Cancellation: the explicit token and the inherited one (when_any, timeout) cancel the
// sleep from any thread; it then returns std::errc::operation_canceled.
//
// Deadlines saturate. Every corio deadline is computed by deadline_after() (and every
// duration converted by saturating_cast()), so a duration too large for the clock —
// nanoseconds::max(), seconds::max(), hours(1'000'000'000), an infinite duration<double>
// — means "practically never" (clock::time_point::max(), about 292 years after boot)
// instead of overflowing into the past and firing at once. A negative duration is a
// deadline in the past (due at once); a NaN duration counts as zero. APIs that take a
// non-template duration take saturating_duration, which converts any duration this way;
// those that take a deadline take saturating_time_point, which clamps any
// time_point<clock, D> (the max() of time_point<clock, seconds> is "never") the same way.
//
// Thread-safety: one awaiter; the helpers are pure functions. Cost: O(log n) in the
// worker's heap, no allocation; the helpers are a few integer operations.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cerrno>
#include <chrono>
#include <coroutine>
#include <limits>
#include <optional>
#include <ratio>
#include <stop_token>
#include <type_traits>

#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio {

/// The clock of every corio deadline (monotonic).
using clock = std::chrono::steady_clock;

/// Converts any duration to clock::duration, clamping instead of overflowing: values
/// beyond the range give clock::duration::max() (or min()); a NaN gives zero. Any thread;
/// a multiplication and a division (128-bit for integral counts).
template <class Rep, class Period>
constexpr clock::duration saturating_cast(std::chrono::duration<Rep, Period> d) noexcept {
  using to = clock::duration;
  using factor = std::ratio_divide<Period, to::period>;
  constexpr auto hi = std::numeric_limits<to::rep>::max();
  constexpr auto lo = std::numeric_limits<to::rep>::min();
  if constexpr (std::is_floating_point_v<Rep>) {
    long double v = static_cast<long double>(d.count()) * factor::num / factor::den;
    if (v != v) {
      return to::zero();
    }
    if (v >= static_cast<long double>(hi)) {
      return to::max();
    }
    if (v <= static_cast<long double>(lo)) {
      return to::min();
    }
    return to(static_cast<to::rep>(v));
  } else {
    static_assert(std::is_integral_v<Rep> && sizeof(Rep) <= 8, "saturating_cast: an integral count of at most 64 bits");
    static_assert(factor::num < (std::intmax_t{1} << 62), "saturating_cast: period too large");
    // |count| < 2^64 and num < 2^62: the product fits in 128 bits.
    __extension__ using wide = __int128;
    wide v = static_cast<wide>(d.count()) * factor::num / factor::den;
    if (v >= static_cast<wide>(hi)) {
      return to::max();
    }
    if (v <= static_cast<wide>(lo)) {
      return to::min();
    }
    return to(static_cast<to::rep>(v));
  }
}

/// `from + d`, clamped to [time_point::min(), time_point::max()]: the one way corio
/// computes a deadline. time_point::max() never comes (it is ~292 years after boot).
/// Any thread; pure.
template <class Rep, class Period>
constexpr clock::time_point deadline_after(std::chrono::duration<Rep, Period> d, clock::time_point from) noexcept {
  clock::duration::rep base = from.time_since_epoch().count();
  clock::duration::rep add = saturating_cast(d).count();
  clock::duration::rep sum = 0;
  if (__builtin_add_overflow(base, add, &sum)) {
    return add > 0 ? clock::time_point::max() : clock::time_point::min();
  }
  return clock::time_point(clock::duration(sum));
}
/// deadline_after(d, clock::now()). Any thread; one clock read.
template <class Rep, class Period>
clock::time_point deadline_after(std::chrono::duration<Rep, Period> d) noexcept {
  return deadline_after(d, clock::now());
}

/// A duration parameter that saturates: implicitly built from any std::chrono::duration
/// by saturating_cast, so a non-template API (tcp_stream::connect, child::wait_for)
/// taking it cannot overflow at the call site as an implicit conversion to nanoseconds
/// would (hours::max() becomes "practically never"). Plain value; any thread.
class saturating_duration {
 public:
  /// Zero.
  constexpr saturating_duration() noexcept = default;
  /// saturating_cast(d); implicit on purpose, so any duration converts at the call site.
  template <class Rep, class Period>
  constexpr saturating_duration(std::chrono::duration<Rep, Period> d) noexcept
      : m_value(saturating_cast(d)) {}
  /// The clamped duration.
  constexpr clock::duration get() const noexcept { return m_value; }
  /// The clamped duration; implicit on purpose, so it passes where a clock::duration goes.
  constexpr operator clock::duration() const noexcept { return m_value; }

 private:
  clock::duration m_value{};
};

/// A deadline parameter that saturates: implicitly built from any
/// std::chrono::time_point<clock, D> by saturating_cast of its time since the epoch, so an
/// API taking it (sleep_until, timeout_at, interval::starting_at) accepts a coarse time
/// point — time_point<clock, hours>, or its max() — without the overflow of the implicit
/// conversion to nanoseconds (which is UB, and in practice a deadline in the past):
/// beyond clock::time_point's range it is time_point::max() ("never") or min() (due).
/// Plain value; any thread; a few integer operations.
class saturating_time_point {
 public:
  /// The clock's epoch.
  constexpr saturating_time_point() noexcept = default;
  /// Clamps `t` into clock::time_point; implicit on purpose, so any time point of the
  /// clock converts at the call site.
  template <class Duration>
  constexpr saturating_time_point(std::chrono::time_point<clock, Duration> t) noexcept
      : m_value(saturating_cast(t.time_since_epoch())) {}
  /// The clamped time point.
  constexpr clock::time_point get() const noexcept { return m_value; }
  /// The clamped time point; implicit on purpose, so it passes where a clock::time_point
  /// goes.
  constexpr operator clock::time_point() const noexcept { return m_value; }

 private:
  clock::time_point m_value{};
};

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
    const detail::inherited_stop inherited = detail::inherited_token_of(h);
    if (port::stop_link<stop_fn>::stopped(m_token, inherited)) {
      res = -ECANCELED;
      return false;
    }
    owner = w;
    waiter = h;
    deadline_ns = saturating_cast(m_deadline.time_since_epoch()).count();
    // The stop link first: once armed, the timer may be fired by another worker (a
    // takeover, runtime/timers.cpp) and this coroutine resumed there, so nothing here may
    // touch the awaiter after arm_timer(). A stop request in between is drained by this
    // worker after we return, and takes the timer out of the heap then.
    m_stop.arm(m_token, inherited, stop_fn{this});
    port::arm_timer(w, this);
    return true;
  }

  [[nodiscard]] result<void> await_resume() noexcept {
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

/// Suspends the current task until `deadline`, any time_point<clock, D> (saturating: a
/// coarse one past clock::time_point's range, as time_point<clock, hours>::max(), never
/// fires). Yields result<void> (operation_canceled if stopped first).
inline sleep_awaiter sleep_until(saturating_time_point deadline, std::stop_token token = {}) {
  return sleep_awaiter(deadline.get(), std::move(token));
}

/// Suspends the current task for `duration` (measured on the steady clock; saturating:
/// a huge duration never fires, a negative one returns at once).
template <class Rep, class Period>
sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> duration, std::stop_token token = {}) {
  return sleep_awaiter(deadline_after(duration), std::move(token));
}

}  // namespace corio
