// The awaitable counting semaphore (sync/semaphore.hpp): release and granting permits to queued
// waiters in order.
#include <corio/sync/semaphore.hpp>

namespace corio {

void semaphore::release(std::size_t n) noexcept {
  detail::wake_batch batch;
  m_lock.lock();
  assert(n <= m_max - m_count && "corio::semaphore::release: count would exceed the declared maximum");
  m_count = (n <= m_max - m_count) ? m_count + n : m_max;
  grant_locked(batch);
  m_lock.unlock();
}

// Under m_lock: serve waiters oldest first while the head's request fits.
void semaphore::grant_locked(detail::wake_batch& batch) noexcept {
  while (detail::waiter* w = m_waiters.front()) {
    if (w->amount > m_count) {
      break;
    }
    m_count -= w->amount;
    m_waiters.pop_into(batch, detail::wait_status::granted);
  }
}

}  // namespace corio
