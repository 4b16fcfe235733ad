// The few scheduler entry points that awaitables use (implemented in runtime/worker.cpp).
//
// Thread-safety: all functions may be called from any thread; on a worker thread they use
// that worker's queues, elsewhere they go through the runtime's global inject queue.
// Cost: a thread-local load plus a queue push (no atomics for the LIFO slot); a wake of a
// parked worker only when the worker.cpp policy asks for one.
#pragma once

#include <coroutine>
#include <stop_token>

namespace corio::detail {

class worker;
class runtime_core;

/// The worker running on this thread, or nullptr outside the runtime.
worker* current_worker() noexcept;

/// Symmetric-transfer guard. g++ at -O0 does not compile symmetric transfer as a tail
/// call, so a long chain of synchronously completing co_awaits would grow the stack
/// without bound. Every transfer counts; past a limit the target is re-queued on the
/// current worker instead (which unwinds the stack) and noop_coroutine() is returned.
std::coroutine_handle<> transfer(std::coroutine_handle<> next) noexcept;

/// The runtime this thread works for, or nullptr outside a runtime.
runtime_core* current_runtime() noexcept;

/// Makes `h` (a coroutine of runtime `home`) runnable. A wake from one of `home`'s workers
/// goes to that worker's LIFO slot (cheap hand-off); from any other thread it goes
/// through `home`'s global queue and wakes an idle worker.
void schedule_wake(std::coroutine_handle<> h, runtime_core* home) noexcept;

/// Makes `h` runnable at the back of the current worker's queue (a yield).
void schedule_yield(std::coroutine_handle<> h) noexcept;

/// Charges one unit of the running task's cooperative budget. Returns true when the
/// budget is spent and the caller (an awaitable that could complete synchronously)
/// should suspend and re-queue instead, so one busy task cannot starve the others.
bool consume_budget() noexcept;

}  // namespace corio::detail
