// The awaitable event (sync/event.hpp): set, try_wait, and consuming the event for an auto-reset
// waiter.
#include <corio/sync/event.hpp>

namespace corio {

// Under m_lock: is the event set? (auto-reset: and clear it.)
bool event::consume_locked() noexcept {
  // relaxed: m_lock orders the flag with set(); the acquire is in is_set() for lock-free
  // readers only.
  if (!m_set.load(std::memory_order_relaxed)) {
    return false;
  }
  if (m_mode == event_reset::automatic) {
    m_set.store(false, std::memory_order_relaxed);
  }
  return true;
}

void event::set() noexcept {
  detail::wake_batch batch;
  m_lock.lock();
  if (m_mode == event_reset::manual) {
    // release: pairs with is_set()'s acquire load (lock-free waiters).
    m_set.store(true, std::memory_order_release);
    while (m_waiters.pop_into(batch, detail::wait_status::granted) != nullptr) {
    }
  } else if (m_waiters.pop_into(batch, detail::wait_status::granted) == nullptr) {
    // release: as above; nobody waits, so the flag carries the set to the next wait.
    m_set.store(true, std::memory_order_release);
  }
  m_lock.unlock();
}

bool event::try_wait() noexcept {
  if (m_mode == event_reset::manual) {
    return is_set();
  }
  m_lock.lock();
  bool ok = consume_locked();
  m_lock.unlock();
  return ok;
}

}  // namespace corio
