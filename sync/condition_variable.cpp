// The awaitable condition variable (sync/condition_variable.hpp): wait, wait_until, notify_one and
// notify_all.
#include <corio/sync/condition_variable.hpp>

namespace corio {

task<result<void>> condition_variable::wait(mutex_guard& g, std::stop_token token) {
  mutex* m = g.release();
  // Always re-lock, uncancellably, so the caller owns the mutex again on every path.
  auto r = co_await detail::cv_wait_operation(m_waiters, *m, std::move(token));
  g = co_await m->lock_uncancellable();
  co_return r;
}

task<result<void>> condition_variable::wait_until(mutex_guard& g, saturating_time_point deadline,
                                                  std::stop_token token) {
  if (port::current_worker() == nullptr) {
    // Off a worker the timer side of timeout_at() cannot run (sleep_until yields
    // no_runtime) and the wait would block the thread before it started, ignoring the
    // deadline: refuse, like every other timed wait there. g still owns the mutex.
    co_return unexpected(make_error_code(errc::no_runtime));
  }
  mutex* m = g.release();
  // timeout() races the wait against a sleep; the loser is cancelled through the
  // inherited token, so the wait op always finishes (and always released the mutex).
  // `token` stops the wait op itself: operation_canceled, passed through by timeout().
  auto r = co_await timeout_at(detail::cv_wait_operation(m_waiters, *m, std::move(token)), deadline);
  g = co_await m->lock_uncancellable();
  co_return r;
}

void condition_variable::notify_one() noexcept {
  detail::wake_batch batch;
  m_lock.lock();
  m_waiters.pop_into(batch, detail::wait_status::granted);
  m_lock.unlock();
}

void condition_variable::notify_all() noexcept {
  detail::wake_batch batch;
  m_lock.lock();
  while (m_waiters.pop_into(batch, detail::wait_status::granted) != nullptr) {
  }
  m_lock.unlock();
}

}  // namespace corio
