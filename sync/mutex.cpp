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

void mutex::unlock_slow() noexcept {
  detail::wake_batch batch;
  m_lock.lock();
  detail::waiter* next = m_waiters.pop_into(batch, detail::wait_status::granted);
  if (next == nullptr) {
    // The last waiter was cancelled after our fast-path CAS failed: really unlock.
    // release: pairs with try_lock()'s acquire CAS.
    m_state.store(kUnlocked, std::memory_order_release);
  } else if (m_waiters.empty()) {
    // The lock passes to `next` and nobody else waits. relaxed: the new owner learns of
    // the hand-off (and our critical section) through m_lock and the scheduler queue.
    m_state.store(kLocked, std::memory_order_relaxed);
  }
  m_lock.unlock();
  // batch's destructor wakes `next` (LIFO slot of this worker when it is its runtime's).
}

// A cancelled or destroyed waiter left: if it was the last, the holder's unlock() may
// take the fast path again. The mutex stays held (waiters only exist while it is).
void mutex::on_unlinked(void* self, detail::wake_batch&) noexcept {
  auto* m = static_cast<mutex*>(self);
  if (m->m_waiters.empty()) {
    m->m_state.store(kLocked, std::memory_order_relaxed);
  }
}

}  // namespace corio
