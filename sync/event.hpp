// corio::event: a flag tasks can wait for, in manual-reset or auto-reset flavour.
//
// Concept: `co_await ev.wait()` returns at once while the event is set, else suspends
// until set() is called.
//   - event_reset::manual: set() wakes every waiter and the event stays set until reset().
//   - event_reset::automatic: set() wakes exactly one waiter (the oldest); with nobody
//     waiting it stays set until one wait() consumes it. Several set() calls with nobody
//     waiting count as one (it is a flag, not a counter: use a semaphore for that).
// Thread-safety: every member from any thread (off a worker, wait() blocks the thread).
// Cost: is_set / a wait on a set manual event = one acquire load; a wait on a set
// auto-reset event, a set(), a reset() = one spin-lock section; a wait that suspends =
// one load and one spin-lock section (plus one when it is woken). No allocation.
// Lifetime: set() makes its last access to the event with the store that publishes the
// flag, so a thread that sees it set (is_set, try_wait, a wait) may destroy it at once.
// Fairness: FIFO (auto-reset: the oldest waiter gets each set()).
// Resumes on: a woken waiter is rescheduled, never resumed inline inside set(): onto the
// setting worker's LIFO slot when it is a worker of the waiter's runtime, else through
// the waiter's runtime's global queue.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cstdint>
#include <stop_token>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/sync/detail/wait_operation.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio {

/// How an event behaves once set: `manual` stays set and releases every waiter until
/// reset(); `automatic` releases one waiter and clears itself.
enum class event_reset { manual, automatic };

class event;

namespace detail {

class event_wait_operation : public wait_operation<event_wait_operation> {
 public:
  event_wait_operation(event& e, waiter_list& waiters, std::stop_token token) noexcept
      : wait_operation(waiters, std::move(token)), m_event(&e) {}
  event_wait_operation(event_wait_operation&& o) noexcept : wait_operation(std::move(o)), m_event(o.m_event) {}

  bool await_ready() noexcept;
  [[nodiscard]] result<void> await_resume() noexcept { return granted_or_cancelled(); }
  bool try_now(wake_batch& batch) noexcept;

 private:
  event* m_event;
};

}  // namespace detail

/// A flag tasks can wait for, manual-reset or auto-reset; see the header.
class event {
 public:
  /// An event of the given `mode`, set from the start if `initially_set`.
  explicit event(event_reset mode = event_reset::manual, bool initially_set = false) noexcept
      : m_mode(mode), m_lock(initially_set ? kSetBit : 0) {}
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  /// Precondition: nobody waits (see mutex::~mutex).
  ~event() = default;

  /// Awaitable yielding result<void> once the event is (or becomes) set; an auto-reset
  /// event is consumed by it. Cancellation: a wait whose stop (`token` or the inherited
  /// token) wins the race with set() ends with operation_canceled and consumed nothing.
  /// A wait that a set() granted first returns success even if the stop came at the
  /// same moment, and has consumed an auto-reset event: whoever awaits it must keep that
  /// result. So an auto-reset wait is not cancel-safe as a losing branch of when_any:
  /// granted, it is dropped with the branch (when_any discards a loser's result) and
  /// the set it consumed is lost — nobody sees it. Use timeout(), which returns a wait
  /// granted as the deadline passed, or try_wait(). (Manual-reset: nothing is consumed.)
  /// Resumes on: see header.
  [[nodiscard]] detail::event_wait_operation wait(std::stop_token token = {}) noexcept {
    return {*this, m_waiters, std::move(token)};
  }

  /// Sets the event (see the header for each mode).
  void set() noexcept;
  /// Clears the event. One spin-lock section: a reset() and a set() called at the same
  /// time take effect in some order, and every waiter and reader agrees on that order.
  void reset() noexcept;
  /// Auto-reset: consumes the event if set. Manual: reports it.
  [[nodiscard]] bool try_wait() noexcept;
  /// True while the event is set (a snapshot; consumes nothing).
  [[nodiscard]] bool is_set() const noexcept {
    // An acquire load (sync_spin_lock::published_bits): what the setter wrote before
    // set() is visible once we see true.
    return (m_lock.published_bits() & kSetBit) != 0;
  }
  /// The reset mode given at construction.
  [[nodiscard]] event_reset mode() const noexcept { return m_mode; }

 private:
  friend class detail::event_wait_operation;

  bool consume_locked() noexcept;

  // The flag lives in m_lock's published bits: changed under the lock, made visible to
  // the lock-free readers (is_set, try_wait and wait on a manual event) by the unlock
  // store itself. So the setter's last access to the event is that store, and whoever
  // sees the event set may destroy it at once (a latch opened by its last count_down).
  // A separate atomic flag stored before the unlock would leave the setter still
  // touching the event (the unlock) after a reader could see it set; stored after the
  // unlock, it could land after a later reset() or consuming wait (a stale "set").
  static constexpr std::uint8_t kSetBit = 1;
  const event_reset m_mode;
  detail::sync_spin_lock m_lock;
  detail::waiter_list m_waiters{m_lock};
};

namespace detail {
inline bool event_wait_operation::await_ready() noexcept {
  if (!m_event->is_set()) {
    return false;  // the wait will queue; await_suspend re-checks under the lock
  }
  if (m_event->m_mode == event_reset::manual) {
    status = wait_status::granted;
    return !budget_spent();
  }
  return ready_under_lock();
}
inline bool event_wait_operation::try_now(wake_batch&) noexcept {
  if (m_event->consume_locked()) {
    status = wait_status::granted;
    return true;
  }
  return false;
}
}  // namespace detail

}  // namespace corio
