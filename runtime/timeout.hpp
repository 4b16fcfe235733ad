// timeout(awaitable, duration): await something, but give up after a duration;
// timeout_at(awaitable, deadline): the same with a deadline on corio::clock.
//
// The awaitable (wrapped in a task) and a timer run side by side; each stops the other
// when it finishes. If the awaitable yields a result<U> (every corio wait does), the
// timeout yields result<U>: the awaitable's own outcome whenever it had one — even if the
// timer fired at the same moment, so nothing that arrived is lost (a channel value
// received just as the deadline passed is returned) — and errc::timed_out ("operation
// timed out", equal to std::errc::timed_out; runtime/result.hpp) only when the
// awaitable ended cancelled by the timer. For any other T the timeout yields
// result<T>: the value if it came before the timer fired, else timed_out. A stop of the
// awaiting task stops both (then operation_canceled). An awaitable that ignores
// cancellation is waited for. The deadline saturates (runtime/time.hpp): a huge duration
// such as nanoseconds::max(), or a deadline such as the max() of time_point<clock, seconds>,
// never times out.
// Thread-safety and cost: when_all's, plus one std::stop_source and one timer.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <stop_token>
#include <system_error>
#include <type_traits>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/when_all.hpp>

namespace corio {

namespace detail {

template <class A>
using await_result_t = decltype(std::declval<A>().await_resume());

template <class A>
auto as_task(A awaitable) -> task<await_result_t<A>> {
  co_return co_await std::move(awaitable);
}
template <class T>
task<T> as_task(task<T> t) {
  return t;
}

template <class T>
using timeout_result_t = std::conditional_t<is_result<T>::value, T, result<T>>;

/// State shared by the two sides of a timeout (lives in the timeout's frame).
struct timeout_race {
  static constexpr std::uint8_t kUndecided = 0;
  static constexpr std::uint8_t kFinished = 1;  // the awaitable's outcome came first
  static constexpr std::uint8_t kTimedOut = 2;  // the timer fired first
  std::stop_source stop;        // inherited by both sides: the timer fired, or the caller stopped
  std::stop_source timer_stop;  // the awaitable finished: stop the timer
  // Who came first: the one CAS from kUndecided that succeeds. relaxed: the CAS only has
  // to pick one winner (a single atomic's modification order does that); the outcome and
  // `winner` are read by the timeout coroutine after when_all joined both sides, which
  // orders every write of theirs before the reads.
  std::atomic<std::uint8_t> winner{kUndecided};
  bool threw_cancelled = false;  // the awaitable reported its cancellation by throwing

  /// Claims the win for `side`; false if the other side had it already.
  bool claim(std::uint8_t side) noexcept {
    std::uint8_t undecided = kUndecided;
    return winner.compare_exchange_strong(undecided, side, std::memory_order_relaxed);
  }
};

struct forward_stop {
  std::stop_source* target;
  void operator()() const noexcept { target->request_stop(); }
};

template <class T>
task<void> run_awaited(task<T> body, timeout_race* race, std::optional<non_void_t<T>>* out,
                       std::exception_ptr* error) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(body);
      (void)race->claim(timeout_race::kFinished);
      out->emplace();
    } else {
      // Claimed as soon as the value is here, before it moves again: a timer firing while
      // it moves (or while a temporary of it is destroyed) must not win over it.
      T value = co_await std::move(body);
      (void)race->claim(timeout_race::kFinished);
      out->emplace(std::move(value));
    }
  } catch (const std::system_error& e) {
    race->threw_cancelled = e.code() == std::errc::operation_canceled;
    *error = std::current_exception();
  } catch (...) {
    *error = std::current_exception();
  }
  (void)race->claim(timeout_race::kFinished);  // an exception ends the race too (else a no-op)
  race->timer_stop.request_stop();
}

inline task<void> run_timer(clock::time_point deadline, timeout_race* race) {
  auto fired = co_await sleep_until(deadline, race->timer_stop.get_token());
  // A timer that fires after the awaitable finished (before it could stop us) has lost:
  // it cancels nothing and the outcome stands.
  if (fired && race->claim(timeout_race::kTimedOut)) {
    race->stop.request_stop();
  }
}

template <class A>
using timeout_task_t = task<timeout_result_t<typename decltype(as_task(std::declval<A>()))::value_type>>;

// The body of timeout() and timeout_at(): `limit` is a clock::duration (the deadline is
// taken when the timeout starts running) or a clock::time_point.
template <class A, class Limit>
auto timeout_impl(A awaitable, Limit limit) -> timeout_task_t<A> {
  using T = typename decltype(detail::as_task(std::move(awaitable)))::value_type;
  clock::time_point deadline;
  if constexpr (std::is_same_v<Limit, clock::time_point>) {
    deadline = limit;
  } else {
    deadline = deadline_after(limit);
  }
  detail::timeout_race race;
  std::stop_token outer = co_await get_stop_token();
  std::optional<std::stop_callback<detail::forward_stop>> link;
  if (outer.stop_possible()) {
    link.emplace(outer, detail::forward_stop{&race.stop});
  }
  std::stop_token inner = race.stop.get_token();
  std::optional<detail::non_void_t<T>> value;
  std::exception_ptr error;
  co_await detail::when_all_tuple_awaiter<void, void>(
      &inner, detail::run_awaited(detail::as_task(std::move(awaitable)), &race, &value, &error),
      detail::run_timer(deadline, &race));
  link.reset();
  // relaxed: when_all's join ordered both sides' writes before this read (timeout_race).
  const bool fired = race.winner.load(std::memory_order_relaxed) == detail::timeout_race::kTimedOut;
  if (error) {
    if (fired && race.threw_cancelled) {
      // An awaitable that throws on cancellation (e.g. a join_handle wait) was cut short.
      co_return unexpected(make_error_code(errc::timed_out));
    }
    std::rethrow_exception(error);
  }
  if constexpr (detail::is_result<T>::value) {
    // A result tells us whether the awaitable was cut short: only its cancellation by
    // our timer is a timeout; any other outcome (a value, another error) is returned.
    if (fired && !*value && value->error() == std::errc::operation_canceled) {
      co_return unexpected(make_error_code(errc::timed_out));
    }
    co_return std::move(*value);
  } else {
    // A plain value cannot say whether the awaitable finished or was cut short: if the
    // timer won the race (it fired before the value came), the outcome is a timeout.
    if (fired) {
      co_return unexpected(make_error_code(errc::timed_out));
    }
    if constexpr (std::is_void_v<T>) {
      co_return result<void>{};
    } else {
      co_return std::move(*value);
    }
  }
}

}  // namespace detail

/// Awaits `awaitable` for at most `duration` (saturating: nanoseconds::max() and the like
/// never time out); see the header comment.
template <class A, class Rep, class Period>
detail::timeout_task_t<A> timeout(A awaitable, std::chrono::duration<Rep, Period> duration) {
  return detail::timeout_impl(std::move(awaitable), saturating_cast(duration));
}

/// Awaits `awaitable` until `deadline` at most, any time_point<clock, D> (saturating: a
/// coarse one past clock::time_point's range never times out; a past deadline times out
/// at once unless the awaitable completes without suspending); see the header comment.
template <class A>
detail::timeout_task_t<A> timeout_at(A awaitable, saturating_time_point deadline) {
  return detail::timeout_impl(std::move(awaitable), deadline.get());
}

}  // namespace corio
