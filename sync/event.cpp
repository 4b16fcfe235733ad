// The awaitable event (sync/event.hpp): set, try_wait, and consuming the event for an auto-reset
// waiter.
#include <corio/sync/event.hpp>

namespace corio {

// Under m_lock: is the event set? (auto-reset: and clear it.)
bool event::consume_locked() noexcept {
  if ((m_lock.bits() & kSetBit) == 0) {
    return false;
  }
  if (m_mode == event_reset::automatic) {
    m_lock.set_bits(0);
  }
  return true;
}

// The flag is published by m_lock.unlock(), our last access to the event (see the
// member comment in event.hpp); the batch is woken after it and touches only the
// waiters' nodes.
void event::set() noexcept {
  detail::wake_batch batch;
  m_lock.lock();
  if (m_mode == event_reset::manual) {
    m_lock.set_bits(kSetBit);
    while (m_waiters.pop_into(batch, detail::wait_status::granted) != nullptr) {
    }
  } else if (m_waiters.pop_into(batch, detail::wait_status::granted) == nullptr) {
    m_lock.set_bits(kSetBit);  // nobody waits: the flag carries the set to the next wait
  }
  m_lock.unlock();
}

void event::reset() noexcept {
  m_lock.lock();
  m_lock.set_bits(0);
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
