// The out-of-line parts of the waiter queue (sync/waiter_list.hpp): the spin lock's slow
// path, waking a node, cancelling and abandoning a wait, closing and destroying a list.
#include <corio/sync/waiter_list.hpp>

#include <sched.h>

#include <cstdio>
#include <cstdlib>

#include <corio/runtime/port.hpp>

namespace corio::detail {

void sync_spin_lock::lock_slow() noexcept {
  for (;;) {
    int spins = 0;
    // relaxed: only a hint; the fetch_or below is the acquire.
    while ((m_word.load(std::memory_order_relaxed) & kLockedBit) != 0) {
      if (++spins > 64) {
        // The holder may have been preempted (2 cores shared by many threads).
        ::sched_yield();
        spins = 0;
      } else {
        port::cpu_relax();
      }
    }
    // acquire: pairs with unlock()'s release.
    if ((m_word.fetch_or(kLockedBit, std::memory_order_acquire) & kLockedBit) == 0) {
      return;
    }
  }
}

void wake_target::wake(bool front) const noexcept {
  if (parker != nullptr) {
    parker->notify();
  } else if (!front && home == port::current_runtime()) {
    port::yield(handle);
  } else {
    port::wake(handle, home);
  }
}

void waiter::yield_cpu() noexcept { ::sched_yield(); }

void waiter::wake() noexcept { wake_target{handle, home, parker}.wake(true); }

void waiter::wake_behind() noexcept { wake_target{handle, home, parker}.wake(false); }

// Destroying a primitive with waiters.
//
// Normally a bug: abort with a message in debug builds; in release builds the waiters are
// detached and never resumed (their frames leak rather than touch freed memory).
// Exception: runtime shutdown destroys suspended frames in arbitrary order, so a
// primitive living in one task's frame may die before the frames of tasks waiting on it.
// We recognise that case by the waiter's home runtime being in its stopping state (set
// before any frame is destroyed) and detach such waiters silently: their frames are about
// to be destroyed too.
// A detached node points at dead_list() with a final status (cancelled), so its stop
// callback (cancel()) and its destructor (abandon()) lock a live lock, see a final status
// and do nothing.
waiter_list& waiter_list::dead_list() noexcept {
  static sync_spin_lock dead_lock;
  static waiter_list dead(dead_lock);
  return dead;
}

bool waiter_list::unlink_cancelled(waiter& w, wake_batch& batch) noexcept {
  if (w.status != wait_status::queued) {
    return false;
  }
  remove(&w);
  w.status = wait_status::cancelled;
  unlinked(batch);
  return true;
}

void waiter_list::cancel(waiter& w) noexcept {
  wake_batch batch;
  m_lock->lock();
  if (unlink_cancelled(w, batch)) {
    batch.push(&w);  // woken last, after the lock is dropped
  } else if (w.status == wait_status::idle) {
    w.status = wait_status::cancelled;
  }
  m_lock->unlock();
}

void waiter_list::abandon(waiter& w) noexcept {
  {
    wake_batch batch;
    m_lock->lock();
    (void)unlink_cancelled(w, batch);
    m_lock->unlock();
  }
  w.wait_wake_done();
}

void waiter_list::close_all(wake_batch& batch) noexcept {
  while (waiter* w = pop_front()) {
    if (w->home != nullptr && port::stopping(w->home)) {
      w->status = wait_status::cancelled;
    } else {
      w->status = wait_status::closed;
      batch.push(w);
    }
  }
}

bool waiter_list::detach_all() noexcept {
  bool bug = false;
  waiter_list& dead = dead_list();
  m_lock->lock();
  while (waiter* w = m_head) {
    remove(w);
    bug = bug || !(w->home != nullptr && port::stopping(w->home));
    w->status = wait_status::cancelled;
    w->list = &dead;
  }
  m_lock->unlock();
  return bug;
}

waiter_list::~waiter_list() {
  if (m_head == nullptr) {
    return;
  }
  const bool bug = detach_all();
#ifndef NDEBUG
  if (bug) {
    std::fprintf(stderr, "corio: a sync primitive was destroyed while a task or thread was waiting on it\n");
    std::abort();
  }
#else
  (void)bug;
#endif
}

}  // namespace corio::detail
