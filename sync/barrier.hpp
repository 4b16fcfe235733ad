// corio::barrier: a reusable rendezvous for a fixed number of tasks, in phases.
//
// Concept: barrier(n, completion). Each phase, n arrivals are expected; the task that
// makes the last arrival runs completion() and then releases every waiter of the phase,
// which starts the next phase. arrive_and_drop() also lowers n for later phases.
// Thread-safety: every member from any thread (off a worker, waiting blocks the thread).
// Cost: one spin-lock section per arrival; the last also wakes the phase's waiters.
// Fairness: a phase's waiters are released together, oldest first.
// Resumes on: waiters are rescheduled by the last arriving task, never inline: onto its
// worker's LIFO slot (others behind it in the local queue) when it is a worker of the
// waiters' runtime, else through their runtime's global queue.
// completion() runs on the last arriver's thread after the barrier's lock is dropped
// and before any waiter of the phase is woken. It must not throw.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stop_token>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/sync/detail/wait_operation.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio {

class barrier;

namespace detail {

class barrier_wait_operation : public wait_operation<barrier_wait_operation> {
 public:
  barrier_wait_operation(barrier& b, waiter_list& waiters, std::stop_token token) noexcept
      : wait_operation(waiters, std::move(token)), m_barrier(&b) {}
  barrier_wait_operation(barrier_wait_operation&& o) noexcept : wait_operation(std::move(o)), m_barrier(o.m_barrier) {}

  bool await_ready() const noexcept { return false; }
  [[nodiscard]] result<void> await_resume() noexcept { return granted_or_cancelled(); }
  bool try_now(wake_batch& batch) noexcept;
  void after_completed() noexcept;
  void cancelled_before_queueing() noexcept;

 private:
  barrier* m_barrier;
  wake_batch m_phase_waiters;  // the last arrival's: woken after the completion ran
};

}  // namespace detail

/// A reusable rendezvous for a fixed number of tasks, phase after phase; see the header.
class barrier {
 public:
  /// Expects `expected` (> 0) arrivals per phase; the last arrival of each phase runs
  /// `completion` (if any; it must not throw) before the phase's waiters are released.
  explicit barrier(std::ptrdiff_t expected, std::function<void()> completion = {})
      : m_expected(expected), m_remaining(expected), m_completion(std::move(completion)) {
    assert(expected > 0 && "corio::barrier: expected count must be positive");
  }
  barrier(const barrier&) = delete;
  barrier& operator=(const barrier&) = delete;
  /// Precondition: nobody waits (see mutex::~mutex).
  ~barrier() = default;

  /// Awaitable: arrives (when awaited) and waits for the phase to complete. Yields
  /// result<void>. Cancellation: a stop that wins before the phase completes ends the
  /// wait with operation_canceled and takes the arrival back (the phase then still needs
  /// as many arrivals as before; the task may arrive again). A stop that loses to the
  /// phase's completion is ignored: the wait succeeds. The last arrival never waits, so
  /// it cannot be cancelled.
  /// Precondition: the barrier is not destroyed while anyone waits.
  [[nodiscard]] detail::barrier_wait_operation arrive_and_wait(std::stop_token token = {}) noexcept {
    return {*this, m_waiters, std::move(token)};
  }

  /// Arrives without waiting and lowers the expected count of later phases by one.
  void arrive_and_drop() noexcept;

  /// The number of completed phases: a phase counts once its completion function has
  /// returned (so a waiter woken by the phase, or the last arriver after its
  /// arrive_and_wait, always sees it counted; an observer never sees a phase counted
  /// whose completion is still running).
  [[nodiscard]] std::uint64_t phase() noexcept {
    m_lock.lock();
    std::uint64_t p = m_phase;
    m_lock.unlock();
    return p;
  }

 private:
  friend class detail::barrier_wait_operation;

  /// Under m_lock: counts one arrival; on the last, starts the next phase and moves the
  /// waiters to `batch`. Returns true for the last arrival.
  bool arrive_locked(detail::wake_batch& batch) noexcept;
  void complete_phase(detail::wake_batch& batch) noexcept;
  /// A waiter left its phase without it completing (cancelled, or its frame destroyed).
  static void on_unlinked(void* self, detail::wake_batch& batch) noexcept;

  detail::sync_spin_lock m_lock;
  std::ptrdiff_t m_expected;   // guarded by m_lock
  std::ptrdiff_t m_remaining;  // guarded by m_lock
  std::uint64_t m_phase = 0;   // completed phases (after their completion); guarded by m_lock
  std::function<void()> m_completion;
  detail::waiter_list m_waiters{m_lock, this, &barrier::on_unlinked};
};

}  // namespace corio
