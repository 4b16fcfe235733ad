// The awaitable barrier (sync/barrier.hpp): arrivals, phase completion, arrive_and_drop and a
// cancelled waiter giving its arrival back.
#include <corio/sync/barrier.hpp>

namespace corio {

bool barrier::arrive_locked(detail::wake_batch& batch) noexcept {
  assert(m_remaining > 0 && "corio::barrier: more arrivals than expected");
  if (--m_remaining != 0) {
    return false;
  }
  m_remaining = m_expected;
  while (m_waiters.pop_into(batch, detail::wait_status::granted) != nullptr) {
  }
  return true;
}

// Outside the lock, before the phase's waiters are woken. The phase counts (phase())
// once the completion has run.
void barrier::complete_phase(detail::wake_batch& batch) noexcept {
  if (m_completion) {
    m_completion();
  }
  m_lock.lock();
  ++m_phase;
  m_lock.unlock();
  batch.wake_all();
}

// Under m_lock: a queued waiter always belongs to the current phase (a completing phase
// takes all of them), so its arrival is taken back.
void barrier::on_unlinked(void* self, detail::wake_batch&) noexcept {
  auto* b = static_cast<barrier*>(self);
  ++b->m_remaining;
}

void barrier::arrive_and_drop() noexcept {
  detail::wake_batch batch;
  m_lock.lock();
  assert(m_expected > 0 && "corio::barrier::arrive_and_drop: no participant left");
  --m_expected;
  bool last = arrive_locked(batch);
  m_lock.unlock();
  if (last) {
    complete_phase(batch);
  }
}

namespace detail {

// Under the lock: count the arrival. The last one completes at once and keeps the
// phase's waiters for after_completed() (lock dropped): completion first, then wakes.
bool barrier_wait_operation::try_now(wake_batch&) noexcept {
  if (!m_barrier->arrive_locked(m_phase_waiters)) {
    return false;
  }
  status = wait_status::granted;
  return true;
}

void barrier_wait_operation::after_completed() noexcept { m_barrier->complete_phase(m_phase_waiters); }

// Under the lock: try_now() arrived (not last), then a stop already requested won.
void barrier_wait_operation::cancelled_before_queueing() noexcept { ++m_barrier->m_remaining; }

}  // namespace detail

}  // namespace corio
