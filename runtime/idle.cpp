// The sleep/wake ("idle") protocol: when a worker searches for work, parks, and who wakes
// it. Every code path that upholds the invariant below is in this file; the counters it
// shares are runtime_core::idle (runtime/internal/idle.hpp), the park word is each
// worker's `m_parked`.
//
// Design note
// -----------
// Sleep/wake protocol. Invariant: **if runnable work exists in a queue, then at least one
// worker is awake (running or searching) or will wake.** It rests on two store-buffer
// (Dekker) pairs, each made of a store, a seq_cst fence and a load on both sides:
//   publisher: push task (release)  ; fence ; load searching, sleepers
//   parker:    sleepers += 1 ; parked = 1 ; fence ; re-check every queue
//   searcher:  searching -= 1                ; fence ; re-check every queue (in park)
// With the fences at least one side sees the other's store: either the publisher sees a
// sleeper and wakes it, or the parker sees the task and does not sleep. A publisher that
// sees `searching > 0` skips the wake: the searcher will see the task (or, being the last
// searcher, re-check before parking). A woken worker starts as a searcher (the waker
// counts it), so wakes do not cascade: at most one searcher is woken per burst, and the
// last searcher that finds work wakes the next (Tokio's policy). Searchers are bounded to
// half the workers (rounded up).
// The kernel side cannot lose a wake either: the worker sleeps in io_uring_enter with an
// IORING_OP_FUTEX_WAIT armed on `parked` expecting 1; a waker changes the word and then
// calls futex(FUTEX_WAKE). If the wait is armed after the change, the kernel sees
// *parked != 1 and completes it at once (-EAGAIN); if before, the FUTEX_WAKE completes it.
// Without FUTEX_WAIT (before Linux 6.7), a READ armed on an eventfd plays the same role.
//
// Who calls what:
//   - a publisher (worker.cpp: a push that leaves more than the next task queued, an
//     overflow, a batch taken from the global queue; runtime_core::schedule_remote and
//     spawn_root from other threads) calls runtime_core::notify_one() after its push;
//   - a batch of reaped completions and timers (maintenance) calls notify_one() only when
//     it leaves more than worker::kReapWakeThreshold tasks queued. A smaller backlog is
//     an exception to the invariant's "will wake" made on purpose: its worker is awake and
//     runs it next, so instead of a wake it gets a stamp (note_backlog). The owner wakes
//     a parked worker if the backlog is still there kBacklogWakeNs later between two
//     tasks (wake_for_old_backlog), and thieves leave a stamped queue alone until the
//     stamp is timer_takeover_delay old (has_stealable_work), so that the connections
//     of a busy worker stay on its ring. Because the owner may instead block inside its
//     current task, the stamp is also watched from outside, like a timer deadline: the
//     timer watcher parks at most until stamp + delay while the stamped queue holds
//     tasks, and then steals them (park() -> the loop's search). The stamp's store-load
//     pairs are the timers' (timers.cpp): stamp ; fence ; read the watcher and its
//     planned wake-up (wake it if it sleeps past stamp + 2 × delay, or wake a parked
//     worker if nobody watches) against claim or `parked = 1` ; fence ; read the
//     stamps. The slack of a second delay saves the wakes: a watcher that saw a stamp
//     younger than 2 × delay parks at most 2 × delay (m_last_backlog), so a worker that
//     stamps backlog after backlog wakes nobody; the watcher looks every one to two
//     delays. Only the owner adds to its queue, so a blocked owner's stamped queue only
//     shrinks. So a small backlog behind a blocked worker is stolen one to two takeover
//     delays after it was reaped (worker.hpp says what this trades). Tasks queued on top
//     of announced, unstamped ones, and every push outside maintenance, wake as before
//     and end the stamp (announce_queued);
//   - an idle worker calls start_searching() before stealing, stop_searching() once it
//     found work (the last searcher wakes the next), and park() when nothing was found;
//   - a cancel request for a parked worker (worker::push_cancel) and runtime shutdown
//     wake that worker directly (wake_if_parked, the park word's value 2);
//   - timers: one parked worker, the watcher, sleeps at most until the earliest deadline
//     of the other workers plus runtime_config::timer_takeover_delay, so it can fire the
//     timers of a worker stuck in a long task; a worker arming an earlier timer than the
//     watcher will wake for wakes it, and a watcher that starts running a task hands the
//     watch to a parked worker (runtime/timers.cpp: the store-load pairs there).
#include <corio/runtime/detail/frame_allocator.hpp>
#include <corio/runtime/internal/idle.hpp>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include <corio/runtime/detail/uring_compat.hpp>
#include <corio/runtime/internal/runtime_core.hpp>
#include <corio/runtime/internal/worker.hpp>

namespace corio::detail {

// ---------------------------------------------------------------------------------------
// publishers

void runtime_core::notify_one() noexcept {
  // seq_cst fence: publisher half of the store-buffer pairs (design note above);
  // pairs with the fence in worker::park() and the seq_cst RMW in stop_searching().
  store_load_barrier(idle.sleepers);
  if (idle.searching.load(std::memory_order_relaxed) != 0 || idle.sleepers.load(std::memory_order_relaxed) == 0) {
    return;
  }
  // Count the worker we are about to wake as a searcher *before* claiming it, so that
  // the woken worker never decrements `searching` below what we added.
  idle.searching.fetch_add(1, std::memory_order_seq_cst);
  std::size_t n = workers.size();
  std::size_t start = idle.wake_cursor.fetch_add(1, std::memory_order_relaxed) % n;
  // The timer watcher last (timers.cpp): woken for work it would hand its watch over,
  // which costs a second wake. relaxed: a preference only.
  const std::int32_t watcher = idle.timer_watcher.load(std::memory_order_relaxed);
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t i = 0; i < n; ++i) {
      std::size_t k = (start + i) % n;
      if ((static_cast<std::int32_t>(k) == watcher) != (pass == 1)) {
        continue;
      }
      worker& w = *workers[k];
      if (w.try_claim_as_searcher()) {
        idle.sleepers.fetch_sub(1, std::memory_order_seq_cst);
        w.unpark_signal();
        return;
      }
    }
  }
  idle.searching.fetch_sub(1, std::memory_order_seq_cst);
}

// ---------------------------------------------------------------------------------------
// a small backlog left by a reaped batch

void worker::note_backlog(std::size_t stealable, std::size_t ready_timers, bool unstamped_before) {
  const std::size_t queued = stealable + ready_timers;
  if (queued <= 1 || stealable == 0) {
    return;  // nothing but the task we run next, or nothing a thief could take
  }
  if (queued > kReapWakeThreshold || unstamped_before || m_takeover_delay_ns < 0 || rt.workers.size() < 2) {
    announce_queued();
    return;
  }
  const std::int64_t now = steady_now_ns();
  // relaxed: only we write it.
  const std::int64_t stamp = m_backlog_since.load(std::memory_order_relaxed);
  if (stamp != 0 && now - stamp >= kBacklogWakeNs) {
    announce_queued();  // an old backlog (or thieves emptied the stamped queue meanwhile)
    return;
  }
  if (stamp == 0) {
    // relaxed: the fence in wake_a_timer_watcher() orders them before the watcher's reads.
    m_backlog_since.store(now, std::memory_order_relaxed);
    m_last_backlog.store(now, std::memory_order_relaxed);
  }
  // A watcher that would sleep past stamp + 2 × delay is woken (so a blocked owner's
  // backlog is stolen one to two delays after it was stamped); one that parked while our
  // queue was empty (thieves) is bounded again too. Usually the watcher already parks
  // at most 2 × delay while we stamp (park_deadline), and nothing is woken.
  wake_a_backlog_watcher(stamp == 0 ? now : stamp);
}

void worker::wake_for_old_backlog() noexcept {
  if (m_queue.empty()) {
    m_backlog_since.store(0, std::memory_order_relaxed);  // we ran it (or a thief took it)
    return;
  }
  if (steady_now_ns() - m_backlog_since.load(std::memory_order_relaxed) >= kBacklogWakeNs) {
    announce_queued();
  }
}

void worker::announce_queued() noexcept {
  // relaxed: only we write the stamp. Clearing it makes our whole queue stealable. A
  // thief that reads the stale stamp after seeing the task (its acquire of our tail)
  // skips us; then the seq_cst fence in notify_one() orders our clear before our read
  // of `sleepers`, against its `parked = 1`, fence, read of the stamp: either it sees
  // the clear or we see it parked and wake it (design note).
  if (m_backlog_since.load(std::memory_order_relaxed) != 0) {
    m_backlog_since.store(0, std::memory_order_relaxed);
  }
  rt.notify_one();
}

bool worker::has_stealable_work() const noexcept {
  if (m_queue.empty()) {
    return false;
  }
  // relaxed: read after the queue's acquire loads; a stale young stamp is covered by
  // announce_queued()'s fence, a stale old one only lets a thief steal a little early.
  const std::int64_t stamp = m_backlog_since.load(std::memory_order_relaxed);
  return stamp == 0 || steady_now_ns() - stamp >= m_takeover_delay_ns;
}

// ---------------------------------------------------------------------------------------
// searchers

bool worker::start_searching() noexcept {
  if (m_searching) {
    return true;
  }
  // Bound the searchers to half the workers (rounded up) so idle workers do not all
  // hammer the queues of the busy ones.
  std::uint32_t cur = rt.idle.searching.load(std::memory_order_relaxed);
  if (2 * cur >= rt.workers.size()) {
    return false;
  }
  rt.idle.searching.fetch_add(1, std::memory_order_seq_cst);
  m_searching = true;
  return true;
}

void worker::stop_searching() {
  if (!m_searching) {
    return;
  }
  m_searching = false;
  // seq_cst: the last searcher to find work wakes another in case more is waiting
  // (a publisher skipped its wake because we were searching).
  if (rt.idle.searching.fetch_sub(1, std::memory_order_seq_cst) == 1) {
    rt.notify_one();
  }
}

// ---------------------------------------------------------------------------------------
// parking and waking a parked worker

bool worker::sees_work() const noexcept {
  if (rt.stopping() || !rt.inject.empty() || m_lifo != nullptr || !m_queue.empty() || !m_ready_timers.empty()) {
    return true;
  }
  if (m_cancel_head.load(std::memory_order_acquire) != nullptr || m_ring.cq_ready()) {
    return true;
  }
  for (const auto& w : rt.workers) {
    if (w.get() != this && w->has_stealable_work()) {
      return true;
    }
  }
  return false;
}

void worker::park() {
  if (m_searching) {
    m_searching = false;
    rt.idle.searching.fetch_sub(1, std::memory_order_seq_cst);
  }
  // Nothing queued here (the loop found no task): no backlog of ours to watch.
  m_backlog_since.store(0, std::memory_order_relaxed);
  // Neither searching nor asleep: a task published meanwhile is seen by the re-check
  // below. Sends the frame blocks this thread freed for other owners back to them, and
  // returns empty frame chunks to the OS if this thread holds many free blocks or blocks
  // that other threads freed into its chunks.
  detail::frame_idle();
  // "Wakes only when woken" until the bound is known: an armer reading that (its acquire
  // load of `parked` == 1 sees it) wakes us to be safe (runtime/timers.cpp).
  m_park_until.store(INT64_MAX, std::memory_order_relaxed);
  rt.idle.sleepers.fetch_add(1, std::memory_order_seq_cst);
  m_parked.store(1, std::memory_order_seq_cst);
  // seq_cst fence: the parker half of the store-buffer pairs in the design note; pairs
  // with the fence in runtime_core::notify_one(), and with the one in
  // worker::hand_over_timer_watch() (a watcher leaving sees us parked, or we see the
  // watch free).
  store_load_barrier(rt.idle.sleepers);
  if (sees_work()) {
    unpark_self();
    return;
  }
  const std::int64_t now = steady_now_ns();
  if (m_takeover_delay_ns >= 0 && take_over_timers(now)) {
    unpark_self();  // run the due timers taken over from a late worker (timers.cpp)
    return;
  }
  // The watcher bounds its sleep by the other workers' deadlines (timers.cpp); the
  // watch stays ours until we run a task (run_task hands it over).
  const bool watching = watch_timers();
  std::int64_t until = park_deadline(now, watching);
  m_park_until.store(until, std::memory_order_relaxed);
  arm_park_wait();
  bump(m_parks);
  // This enter also submits what find_work left queued (maintenance.cpp: kernel entries).
  const bool took_left_enter = std::exchange(m_enter_left, false);
  m_ring.submit_and_wait(until == INT64_MAX ? -1 : std::max<std::int64_t>(0, until - now));
  unpark_self();
  if (watching) {
    take_over_timers(steady_now_ns());  // the bound passed: the late timers first
  }
  const unsigned reaped = maintenance(maintenance_from::park);
  if (took_left_enter) {
    note_left_enter_reaped(reaped);
  }
}

void worker::unpark_self() {
  // acq_rel: pairs with the waker's exchange; tells us who ended the park.
  std::uint32_t prev = m_parked.exchange(0, std::memory_order_acq_rel);
  if (prev == 1) {
    // Woke on our own (I/O, timer, or we found work before sleeping).
    rt.idle.sleepers.fetch_sub(1, std::memory_order_seq_cst);
  } else if (prev == 0) {
    // Claimed by a searcher wake: the waker counted us as searching.
    m_searching = true;
  }
  // prev == 2: a direct wake (cancel request); the waker already fixed `sleepers`.
}

bool worker::try_claim_as_searcher() noexcept {
  if (m_parked.load(std::memory_order_relaxed) != 1) {
    return false;
  }
  std::uint32_t expected = 1;
  // acq_rel: pairs with unpark_self()'s exchange.
  return m_parked.compare_exchange_strong(expected, 0, std::memory_order_acq_rel, std::memory_order_relaxed);
}

void worker::wake_if_parked() noexcept {
  std::uint32_t expected = 1;
  if (m_parked.load(std::memory_order_relaxed) == 1 &&
      m_parked.compare_exchange_strong(expected, 2, std::memory_order_acq_rel, std::memory_order_relaxed)) {
    rt.idle.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    unpark_signal();
  }
}

void worker::unpark_signal() noexcept {
  if (m_use_futex) {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&m_parked), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  } else {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(m_eventfd, &one, sizeof one);
  }
}

void worker::arm_park_wait() {
  if (m_park_armed) {
    return;
  }
  io_uring_sqe* sqe = m_ring.get_sqe([this] { reap(); });
  if (m_use_futex) {
    static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
    uring::prep_futex_wait(sqe, reinterpret_cast<const std::uint32_t*>(&m_parked), 1, true);
  } else {
    io_uring_prep_read(sqe, m_eventfd, &m_eventfd_buffer, sizeof m_eventfd_buffer, 0);
  }
  io_uring_sqe_set_data64(sqe, kUserDataPark);
  m_park_armed = true;
}

}  // namespace corio::detail
