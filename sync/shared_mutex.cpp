// The awaitable reader-writer mutex (sync/shared_mutex.hpp): unlock, unlock_shared and handing
// the lock to the next writer or batch of readers.
#include <corio/sync/shared_mutex.hpp>

namespace corio {

void shared_mutex::unlock() noexcept {
  detail::wake_batch batch;
  m_lock.lock();
  if (!m_writer) {
    m_lock.unlock();
    assert(!"corio::shared_mutex::unlock: not held exclusively");
    return;  // release builds: defined as a no-op
  }
  m_writer = false;
  dispatch_locked(batch, true);
  m_lock.unlock();
}

void shared_mutex::unlock_shared() noexcept {
  detail::wake_batch batch;
  m_lock.lock();
  if (m_active_readers == 0) {
    m_lock.unlock();
    assert(!"corio::shared_mutex::unlock_shared: not held shared");
    return;  // release builds: defined as a no-op (the count does not wrap)
  }
  --m_active_readers;
  dispatch_locked(batch, false);
  m_lock.unlock();
}

// Under m_lock: admit whoever the policy (see the header) lets in now.
void shared_mutex::dispatch_locked(detail::wake_batch& batch, bool readers_first) noexcept {
  if (m_writer) {
    return;
  }
  if (!m_writers.empty() && !(readers_first && !m_readers.empty())) {
    if (m_active_readers == 0) {
      m_writer = true;
      m_writers.pop_into(batch, detail::wait_status::granted);
    }
    return;
  }
  while (m_readers.pop_into(batch, detail::wait_status::granted) != nullptr) {
    ++m_active_readers;
  }
}

}  // namespace corio
