// corio::result<T> and corio::errc: the one error convention of corio.
//
// THE ERROR CONVENTION (README, "Design in one page", says the same). The return type
// decides: a function that returns result<T> reports every failure through it; a function
// that cannot (a constructor, a function returning something else) throws; joins rethrow.
//  1. Operations. Every fallible operation returns result<T> = tl::expected<T,
//     std::error_code> and reports every failure in it, misuse included: the OS, the peer,
//     a full or closed queue, a deadline, a stop request, the runtime shutting down, an
//     await off a worker thread (errc::no_runtime), an argument out of range
//     (std::errc::invalid_argument). It throws nothing of its own (std::bad_alloc and
//     exceptions of the caller's own callbacks pass through). OS failures carry
//     std::system_category() codes (from a CQE's -errno or from errno read right after a
//     syscall); runtime conditions carry corio::errc codes; a cancelled wait returns
//     std::errc::operation_canceled and an expired corio deadline errc::timed_out
//     ("operation timed out", so a process, channel or queue timeout does not read like
//     a network error; it compares equal to std::errc::timed_out), so `ec ==
//     std::errc::operation_canceled` and `ec == std::errc::timed_out` are the tests users
//     write. A socket's own ETIMEDOUT from the kernel stays the OS error.
//  2. No error channel. A constructor, and a function whose value is not a result, throw:
//     runtime's constructor std::system_error naming the cause; task_group's constructor
//     std::invalid_argument (max_running 0); corio::spawn (it returns a join_handle)
//     std::logic_error outside a runtime; when_any of an empty range
//     std::invalid_argument; join_handle::abort on a task not spawned abortable and
//     runtime::block_on on a worker std::logic_error.
//  3. Joins — `co_await handle`, handle.wait(token), runtime::block_on, when_all,
//     when_any, task_group::next and join_all — yield what the task's body produced, and
//     a body may throw, so a join rethrows the task's exception as a function call does.
//     The runtime's outcomes of a join (this wait was cancelled, errc::shut_down,
//     errc::aborted) come the same way, as std::system_error, so one catch sees every
//     outcome that is not a value; `co_await handle.join()` returns those three as a
//     result<T> instead (the task's own exception is still rethrown). Misusing a handle
//     (empty, moved-from, detached, already awaited) throws std::logic_error in every
//     form, join() included.
//  4. Dropped results warn. Every awaiter that yields a result (an operation's, or a
//     task<result<U>>'s, a join(), a join of a task returning a result) has a
//     [[nodiscard]] await_resume, so `co_await sock.write(buf);` that drops the result
//     warns under clang (-Wunused-result; an error in corio's -Werror builds; g++ 12 does
//     not diagnose a discarded co_await). Check the result, or write
//     `(void)co_await op;` where dropping it is meant. Awaiters of plain values (task<int>,
//     task<void>) are not marked, nor when_all/when_any (a tuple or variant that may hold
//     results). The unit test a_dropped_co_await_result_fails_to_compile_with_clang
//     (tests/compiler/nodiscard_check.sh, with clang++-19) checks the rule.
// Why not exceptions everywhere: a failed read, a timeout or a closed peer is an expected
// event on a server, handled next to the call; with result<T> the handling is visible at
// the call and costs no unwinding. Why not result<T> for joins: a task's body is user
// code that may throw, and swallowing its exception into an error_code would lose it.
// "task aborted" (errc::aborted) compares equal to no std::errc: it is not a cancelled
// wait.
// Thread-safety: plain values. Cost: none beyond the expected<> itself.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <system_error>
#include <type_traits>
#include <tl/expected.hpp>

namespace corio {

/// The outcome of a fallible corio operation: a T, or the std::error_code that says why not.
template <class T>
using result = tl::expected<T, std::error_code>;

using tl::unexpected;

namespace detail {
// A result<U>, or a type derived from one (e.g. ipc::pool_result<U>, which keeps more).
template <class U>
std::true_type is_result_test(const tl::expected<U, std::error_code>*);
std::false_type is_result_test(const void*);
template <class T>
struct is_result : decltype(is_result_test(static_cast<std::remove_reference_t<T>*>(nullptr))) {};
// True when T carries the error channel: an awaiter yielding it marks await_resume
// [[nodiscard]] (rule 4 above).
template <class T>
inline constexpr bool is_result_v = is_result<T>::value;
}  // namespace detail

/// Conditions raised by corio itself (not by the OS).
enum class errc {
  shut_down = 1,      ///< the runtime (or primitive) was shut down
  closed,             ///< the channel or stream was closed
  full,               ///< a bounded queue is full (try_ operations)
  empty,              ///< nothing to take (try_ operations)
  no_runtime,         ///< the operation must run on a corio worker thread
  invalid_config,     ///< a runtime_config value is out of range
  io_uring_refused,   ///< the kernel or a seccomp filter refused io_uring
  authentication_failed,  ///< the peer's key (or its answer to ours) did not match (ipc/authentication.hpp)
  message_size,       ///< a message is longer than the receiver's limit (ipc/connection.hpp)
  protocol_error,     ///< the peer sent a malformed or truncated message (ipc/connection.hpp)
  timed_out,          ///< a corio deadline passed first (timeout(), wait_for, connect/handshake limits)
  aborted,            ///< the awaited task was aborted through its join_handle (runtime/spawn.hpp)
};

/// The error category of corio::errc ("corio"); io_uring_refused compares equal to
/// std::errc::operation_not_permitted, invalid_config to std::errc::invalid_argument,
/// authentication_failed to std::errc::permission_denied, message_size to
/// std::errc::message_size, protocol_error to std::errc::bad_message and timed_out to
/// std::errc::timed_out.
const std::error_category& corio_category() noexcept;

/// Makes corio::errc values usable as std::error_code (found by ADL).
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), corio_category()};
}

/// The error a cancelled wait returns.
inline std::error_code cancelled_error() noexcept {
  return std::make_error_code(std::errc::operation_canceled);
}

/// An OS error from a negative errno (a CQE's res).
inline std::error_code os_error(int negative_errno) noexcept {
  return {-negative_errno, std::system_category()};
}

}  // namespace corio

template <>
struct std::is_error_code_enum<corio::errc> : std::true_type {};
