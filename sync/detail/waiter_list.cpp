#include <corio/sync/detail/waiter_list.hpp>

#include <sched.h>

#include <cstdio>
#include <cstdlib>

#include <corio/runtime/detail/runtime_core.hpp>
#include <corio/runtime/detail/scheduling.hpp>

namespace corio::detail {

void sync_spin_lock::lock_slow() noexcept {
  for (;;) {
    int spins = 0;
    // relaxed: only a hint; the exchange below is the acquire.
    while (m_locked.load(std::memory_order_relaxed)) {
      if (++spins > 64) {
        // The holder may have been preempted (2 cores shared by many threads).
        ::sched_yield();
        spins = 0;
      } else {
        __builtin_ia32_pause();
      }
    }
    // acquire: pairs with unlock()'s release.
    if (!m_locked.exchange(true, std::memory_order_acquire)) {
      return;
    }
  }
}

void waiter::wake() noexcept {
  if (parker != nullptr) {
    parker->notify();
  } else {
    schedule_wake(handle, home);
  }
}

void waiter::wake_behind() noexcept {
  if (parker == nullptr && home == current_runtime()) {
    schedule_yield(handle);
  } else {
    wake();
  }
}

// Destroying a primitive with waiters.
//
// Normally a bug: assert in debug builds; in release builds the waiters are detached and
// never resumed (their frames leak rather than touch freed memory).
// Exception: runtime shutdown destroys suspended frames in arbitrary order, so a
// primitive living in one task's frame may die before the frames of tasks waiting on it.
// We recognise that case by the waiter's home runtime being in its stopping state (set
// before any frame is destroyed) and detach such waiters silently: their frames are about
// to be destroyed too, and a detached node's destructor does not touch the list.
waiter_list::~waiter_list() {
  while (waiter* w = m_head) {
    remove(w);
    const bool shutting_down = w->home != nullptr && w->home->stopping();
    w->list = nullptr;
    w->status = wait_status::cancelled;
    if (!shutting_down) {
#ifndef NDEBUG
      std::fprintf(stderr, "corio: a sync primitive was destroyed while a task or thread was waiting on it\n");
      std::abort();
#endif
    }
  }
}

}  // namespace corio::detail
