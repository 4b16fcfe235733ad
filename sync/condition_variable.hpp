// corio::condition_variable: wait for a condition guarded by a corio::mutex.
//
// Concept: `co_await cv.wait(g)` atomically releases the mutex held by guard `g` and
// suspends the task until notify_one()/notify_all() (or a stop); then it re-locks the
// mutex before returning, whatever the outcome. Use the predicate forms: wake-ups may be
// spurious in the sense that another task can change the state before the woken one
// re-locks.
// No lost wake-ups: the waiter is queued on the condition variable *before* the mutex is
// released, so a notify issued after the waiter checked the predicate under the mutex
// (by a task that then took the mutex to change the state) always finds it.
// Thread-safety: every member from any thread; notify does not need the mutex held.
// Cost: wait = one coroutine frame (recycled) + one spin-lock section to queue + the
// mutex re-lock; notify_one = one spin-lock section.
// Fairness: FIFO: notify_one wakes the oldest waiter; the woken then queue on the mutex.
// Resumes on: a woken waiter is rescheduled, never resumed inline inside notify_*():
// onto the notifying worker's LIFO slot when it is a worker of the waiter's runtime,
// else through the waiter's runtime's global queue.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <chrono>
#include <concepts>
#include <stop_token>
#include <system_error>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/timeout.hpp>
#include <corio/sync/detail/wait_operation.hpp>
#include <corio/sync/waiter_list.hpp>
#include <corio/sync/mutex.hpp>

namespace corio {

namespace detail {

/// Queues on the condition variable, then releases the mutex (in every outcome). The
/// caller (condition_variable::wait) re-locks it.
class cv_wait_operation : public wait_operation<cv_wait_operation> {
 public:
  cv_wait_operation(waiter_list& waiters, mutex& m, std::stop_token token) noexcept
      : wait_operation(waiters, std::move(token)), m_mutex(&m) {}
  cv_wait_operation(cv_wait_operation&& o) noexcept : wait_operation(std::move(o)), m_mutex(o.m_mutex) {}

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    mutex* m = m_mutex;
    switch (suspend_outcome(h)) {
      case wait_outcome::completed:
        m->unlock();  // never queued (a stop came first): release anyway, the caller re-locks
        return false;
      case wait_outcome::unblocked:
        // Not on a corio worker: the thread blocked while queued and the wait is over;
        // after_queued_action() already released the mutex (it may be someone else's now).
        return false;
      case wait_outcome::suspended:
        break;
    }
    return true;  // after_queued_action() released the mutex
  }
  [[nodiscard]] result<void> await_resume() noexcept { return granted_or_cancelled(); }

  bool try_now(wake_batch&) const noexcept { return false; }
  struct unlock_action {
    mutex* m;
    void operator()() const noexcept { m->unlock(); }
  };
  unlock_action after_queued_action() const noexcept { return {m_mutex}; }

 private:
  mutex* m_mutex;
};

}  // namespace detail

/// Lets tasks wait, with a corio::mutex released, until notified; see the header.
class condition_variable {
 public:
  condition_variable() noexcept = default;
  condition_variable(const condition_variable&) = delete;
  condition_variable& operator=(const condition_variable&) = delete;
  /// Precondition: nobody waits (see mutex::~mutex).
  ~condition_variable() = default;

  /// Releases `g`'s mutex, waits for a notify, re-locks. Yields result<void>.
  /// Precondition: g.owns_lock(). On return g owns the mutex again, in every outcome.
  /// Cancellation: `token` or the inherited token ends the wait with
  /// operation_canceled (after re-locking). Errors: operation_canceled only.
  /// Off a corio worker (a coroutine resumed by a plain thread) the wait blocks that
  /// thread, with the same results (the timed waits below do not: no_runtime).
  task<result<void>> wait(mutex_guard& g, std::stop_token token = {});

  /// Waits until pred() holds (checked under the mutex). Yields result<void>;
  /// operation_canceled if stopped first.
  template <class Pred>
    requires std::predicate<Pred&>
  task<result<void>> wait(mutex_guard& g, Pred pred, std::stop_token token = {}) {
    while (!pred()) {
      if (auto r = co_await wait(g, token); !r) {
        co_return r;
      }
    }
    co_return result<void>{};
  }

  /// Like wait(g, token), but gives up after `d` (or at `deadline`): errc::timed_out
  /// (mutex re-locked). A notify that arrives as the deadline passes is reported as a
  /// success. Errors: timed_out, operation_canceled (`token` or the inherited token),
  /// no_runtime: awaited off a corio worker (a coroutine driven by a plain thread), where
  /// no timer can run — returned at once, without waiting; g still owns the mutex (as
  /// sleep_for and timeout() report no_runtime there).
  template <class Rep, class Period>
  task<result<void>> wait_for(mutex_guard& g, std::chrono::duration<Rep, Period> d, std::stop_token token = {}) {
    co_return co_await wait_until(g, deadline_after(d),
                                  std::move(token));
  }
  /// wait_for() with an absolute `deadline` on corio's steady clock, any
  /// time_point<clock, D> (saturating, runtime/time.hpp: time_point<clock, hours>::max()
  /// never times out).
  task<result<void>> wait_until(mutex_guard& g, saturating_time_point deadline, std::stop_token token = {});

  /// Waits until pred() holds or the deadline passes. Yields pred()'s final value (false
  /// on timeout), or operation_canceled if `token` or the awaiting task is stopped, or
  /// no_runtime off a corio worker when pred() is false (see wait_until above).
  template <class Pred>
    requires std::predicate<Pred&>
  task<result<bool>> wait_until(mutex_guard& g, saturating_time_point deadline, Pred pred,
                                std::stop_token token = {}) {
    while (!pred()) {
      auto r = co_await wait_until(g, deadline, token);
      if (!r) {
        if (r.error() == std::errc::timed_out) {
          co_return pred();
        }
        co_return unexpected(r.error());
      }
    }
    co_return true;
  }
  /// wait_until(g, deadline, pred, token) with the deadline `d` from now.
  template <class Rep, class Period, class Pred>
    requires std::predicate<Pred&>
  task<result<bool>> wait_for(mutex_guard& g, std::chrono::duration<Rep, Period> d, Pred pred,
                              std::stop_token token = {}) {
    co_return co_await wait_until(g, deadline_after(d), std::move(pred),
                                  std::move(token));
  }

  /// Wakes the oldest waiter, if any.
  void notify_one() noexcept;
  /// Wakes every current waiter.
  void notify_all() noexcept;

 private:
  detail::sync_spin_lock m_lock;
  detail::waiter_list m_waiters{m_lock};
};

}  // namespace corio
