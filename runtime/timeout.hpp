// timeout(awaitable, duration): await something, but give up after a duration.
//
// Built on when_any: the awaitable (wrapped in a task) races a sleep; whichever finishes
// first wins and the other is cancelled. Yields result<T> — the awaitable's value, or
// std::errc::timed_out. If the awaitable itself yields a result<U>, the result is
// flattened to result<U>. An awaitable that ignores cancellation is waited for (the
// timeout still reports timed_out).
// Thread-safety and cost: when_any's, plus one timer.
#pragma once

#include <chrono>
#include <system_error>
#include <type_traits>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/when_any.hpp>

namespace corio {

namespace detail {

template <class T>
struct is_result : std::false_type {};
template <class U>
struct is_result<tl::expected<U, std::error_code>> : std::true_type {};

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

inline task<void> sleep_task(clock::duration d) { (void)co_await sleep_for(d); }

template <class T>
using timeout_result_t = std::conditional_t<is_result<T>::value, T, result<T>>;

}  // namespace detail

/// Awaits `awaitable` for at most `duration`; see the header comment.
template <class A, class Rep, class Period>
auto timeout(A awaitable, std::chrono::duration<Rep, Period> duration)
    -> task<detail::timeout_result_t<typename decltype(detail::as_task(std::move(awaitable)))::value_type>> {
  using T = typename decltype(detail::as_task(std::move(awaitable)))::value_type;
  auto outcome = co_await when_any(detail::as_task(std::move(awaitable)),
                                   detail::sleep_task(std::chrono::duration_cast<clock::duration>(duration)));
  if (outcome.index() == 1) {
    co_return unexpected(std::make_error_code(std::errc::timed_out));
  }
  if constexpr (std::is_void_v<T>) {
    co_return result<void>{};
  } else {
    co_return std::get<0>(std::move(outcome));
  }
}

}  // namespace corio
