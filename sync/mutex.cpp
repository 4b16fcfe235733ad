// The awaitable mutex (sync/mutex.hpp): the contended paths of lock and unlock (the uncontended
// ones are inline in the header) and a cancelled waiter leaving the queue.
#include <corio/sync/mutex.hpp>

namespace corio {

// Under m_lock. Either takes the free mutex, or marks it contended so that the owner's
// unlock() takes the slow path and finds the waiter we are about to queue.
bool mutex::try_lock_or_mark_contended() noexcept {
  std::uint32_t s = m_state.load(std::memory_order_relaxed);
  for (;;) {
    if (s == kUnlocked) {
      // acquire: pairs with unlock()'s release CAS (the previous owner's writes).
      if (m_state.compare_exchange_weak(s, kLocked, std::memory_order_acquire, std::memory_order_relaxed)) {
        return true;
      }
    } else if (s == kLocked) {
      // relaxed: no data is published; the owner's failing release CAS in unlock() then
      // serialises with us through m_lock in unlock_slow().
      if (m_state.compare_exchange_weak(s, kContended, std::memory_order_relaxed, std::memory_order_relaxed)) {
        return false;
      }
    } else {
      return false;
    }
  }
}

// Our last access to the mutex must be the store that lets another thread take it: a
// task that gets it with try_lock() may unlock it and destroy it at once (the last user
// of a reference-counted object). So when nobody is left to hand it to, we put the state
// back to kLocked under m_lock and release it with a CAS after dropping m_lock; a locker
// that marked it kContended in between makes the CAS fail, and we go round again to hand
// the mutex to that waiter.
void mutex::unlock_slow() noexcept {
  for (;;) {
    detail::wake_batch batch;
    m_lock.lock();
    detail::waiter* next = m_waiters.pop_into(batch, detail::wait_status::granted);
    if (next != nullptr) {
      if (m_waiters.empty()) {
        // The lock passes to `next` and nobody else waits. relaxed: the new owner learns
        // of the hand-off (and our critical section) through m_lock and the scheduler.
        m_state.store(kLocked, std::memory_order_relaxed);
      }
      m_lock.unlock();
      return;  // batch's destructor wakes `next` (it touches `next`, not the mutex)
    }
    // Nobody waits (the last waiter was cancelled after our fast-path CAS failed, or a
    // lock was cancelled before it queued). relaxed: only a locker under m_lock reads it.
    m_state.store(kLocked, std::memory_order_relaxed);
    m_lock.unlock();
    std::uint32_t expected = kLocked;
    // release: pairs with try_lock()'s acquire CAS. Our last access on success.
    if (m_state.compare_exchange_strong(expected, kUnlocked, std::memory_order_release,
                                        std::memory_order_relaxed)) {
      return;
    }
    // A locker marked it kContended after we dropped m_lock: it is queued (or about to
    // be, under m_lock); hand the mutex over.
  }
}

// Under m_lock. A cancelled or destroyed waiter left, or a lock that marked the mutex
// kContended was cancelled before it queued: with nobody left in the queue the holder's
// unlock() may take the fast path again. The mutex stays held (waiters only exist, and
// a lock is only refused, while it is).
void mutex::uncontend_if_no_waiter() noexcept {
  if (m_waiters.empty()) {
    // relaxed: only the state's value matters; m_lock orders it with the lockers.
    m_state.store(kLocked, std::memory_order_relaxed);
  }
}

void mutex::on_unlinked(void* self, detail::wake_batch&) noexcept {
  static_cast<mutex*>(self)->uncontend_if_no_waiter();
}

}  // namespace corio
