// A worker's timers: arming, disarming and firing its heap, and the takeover by which an
// idle (or between-tasks) worker fires the due timers of a worker that is stuck in a long
// task or a blocking call.
//
// Design note
// -----------
// Each worker keeps its sleeps in its own heap (internal/timer_heap.hpp) and fires them
// from its loop (maintenance) or by sleeping in io_uring_enter until the earliest
// deadline. A worker running one long task (a blocking call, a long computation) does
// neither, so without help its timers fire as late as the task runs.
//
// Takeover. Every worker publishes its earliest deadline (m_next_deadline). One idle
// worker at a time, the watcher (idle_state::timer_watcher), bounds its park by the
// others' earliest deadline plus runtime_config::timer_takeover_delay (default 1 ms), so
// a timer wakes one idle worker, not all of them. A parking worker, the watcher when its
// bound passes, and a busy worker every global_queue_interval ticks look for another
// worker's timer that is that late; finding one, they try-lock that worker's heap and pop
// its due timers (at most kMaxTakenPerPass): the earliest runs next on the taker (it
// resumes there, as a stolen task would), the others go to the taker's stealable queue,
// so that one long task among them cannot strand the rest. A worker in its loop fires its
// own timers on time, so takeover happens only behind a late worker, and the delay keeps
// the normal case local. The heap lock is a one-word spin lock: the owner takes it for
// every arm, disarm and firing pass that has something due (uncontended: an atomic
// exchange and a release store); a taker only try-locks it, never waiting for an owner.
//
// The watch. A worker claims it in park() and keeps it, parked or searching, until it
// runs a task: then (run_task) it hands the watch over, waking a parked worker if any
// worker has timers, since the task may be the next to run long. Store-load pairs (each a
// store, a seq_cst fence, a load on both sides) make sure a deadline is never unwatched:
//   - armer against watcher: arm_timer() publishes a new earliest deadline, fences, reads
//     the watcher; a claimer fences after its claim, then reads the deadlines. Either the
//     armer sees the watcher (and wakes it if its planned wake-up, m_park_until, is too
//     late for the new deadline), or the watcher's park_deadline() sees the deadline. With
//     no watcher the armer wakes one parked worker, which claims the watch when it parks.
//     A watcher re-parking fences after `parked = 1` before reading the deadlines.
//   - leaving watcher against parker: the watcher frees the watch, fences, looks for a
//     parked worker; a parker stores `parked = 1`, fences, then tries to claim. Either the
//     leaver sees the parker (and wakes it), or the parker claims the free watch.
// A parked worker publishes INT64_MAX ("only when woken") before its `parked` store and
// its real bound after reading the deadlines, so an armer reading a stale value wakes it
// needlessly, never leaves it asleep too long. notify_one() wakes the watcher last.
// Cost in the steady state (one worker sleeping in a loop, another idle): no syscall on
// the sleeper's side; the idle worker wakes once per sleep, delay after its deadline.
//
// Cancellation against a takeover. A taker claims each due node with a CAS idle ->
// completed on its cancel state, so a later stop request's own CAS fails and pushes
// nothing. If a stop request came first (requested or drained), the taker leaves the node
// out of the heap without resuming it, and the owner's cancel drain resumes it:
// disarm_timer() finds the node gone and does nothing else. Exactly one side resumes.
// (Such a cancelled sleep still waits for its blocked owner to drain the request.)
#include <corio/runtime/internal/worker.hpp>

#include <algorithm>
#include <chrono>
#include <thread>
#include <type_traits>

#include <corio/runtime/internal/runtime_core.hpp>
#include <corio/runtime/port.hpp>
#include <corio/runtime/time.hpp>

namespace corio::detail {

namespace {

/// Timers one takeover pass moves to the taker at most (the heap lock is held meanwhile).
constexpr std::size_t kMaxTakenPerPass = 64;
/// How soon a watcher looks again at a late timer whose owner held its lock.
constexpr std::int64_t kRetryNs = 100'000;

static_assert(std::is_same_v<clock::duration, std::chrono::nanoseconds>, "deadline_ns_after: ns on the steady clock");

/// `ns + delay_ns` (steady clock ns, as timer_node::deadline_ns), saturating like every
/// corio deadline (deadline_after, time.hpp): past the clock's range is "never".
std::int64_t deadline_ns_after(std::int64_t ns, std::int64_t delay_ns) noexcept {
  return deadline_after(std::chrono::nanoseconds(delay_ns), clock::time_point(clock::duration(ns)))
      .time_since_epoch()
      .count();
}

/// `ns + 2 × delay_ns`, saturating: how late the watcher may look at a backlog stamped
/// at `ns` (runtime/idle.cpp).
std::int64_t two_delays_after(std::int64_t ns, std::int64_t delay_ns) noexcept {
  return deadline_ns_after(deadline_ns_after(ns, delay_ns), delay_ns);
}

}  // namespace

void worker::lock_timers() noexcept {
  // acquire: pairs with unlock_timers()'s release, so the heap a taker changed is seen.
  while (m_timer_lock.exchange(true, std::memory_order_acquire)) {
    // A taker holds it for at most kMaxTakenPerPass pops; if its thread was preempted
    // meanwhile, give it the CPU instead of spinning through our time slice.
    for (unsigned spins = 0; m_timer_lock.load(std::memory_order_relaxed); ++spins) {
      if (spins < 256) {
        port::cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
  }
}

bool worker::try_lock_timers() noexcept {
  // relaxed pre-check: do not take the line exclusively when the owner holds it.
  // acquire on success: as in lock_timers().
  return !m_timer_lock.load(std::memory_order_relaxed) && !m_timer_lock.exchange(true, std::memory_order_acquire);
}

void worker::unlock_timers() noexcept {
  // release: publishes the heap changes made under the lock to the next holder.
  m_timer_lock.store(false, std::memory_order_release);
}

void worker::publish_next_deadline() noexcept {
  // relaxed: a hint read by other workers to decide whether to look (their try-lock
  // acquires the heap itself); the store-load pair with park() has its own fences.
  timer_node* first = m_timers.top();
  m_next_deadline.store(first != nullptr ? first->deadline_ns : INT64_MAX, std::memory_order_relaxed);
  m_timers_pending.store(m_timers.size(), std::memory_order_relaxed);
}

void worker::arm_timer(timer_node* node) {
  // Once the lock is released a taker may fire the node and resume its task elsewhere,
  // which reuses the node's memory: nothing below the unlock reads it.
  const std::int64_t deadline = node->deadline_ns;
  lock_timers();
  m_timers.push(node);
  const bool earliest = m_timers.top() == node;
  if (earliest) {
    m_next_deadline.store(deadline, std::memory_order_relaxed);
  }
  // relaxed: a metrics count (worker::metrics()), ordered with nothing; stored under the
  // lock, as publish_next_deadline() does, so the last store is the heap's current size.
  m_timers_pending.store(m_timers.size(), std::memory_order_relaxed);
  unlock_timers();
  if (earliest && m_takeover_delay_ns >= 0 && rt.workers.size() > 1) {
    wake_a_timer_watcher(deadline_ns_after(deadline, m_takeover_delay_ns));
  }
}

void worker::disarm_timer(timer_node* node) {
  lock_timers();
  if (m_timers.contains(node)) {
    m_timers.remove(node);
    publish_next_deadline();
  }
  unlock_timers();
}

void worker::fire_timers() {
  // Our own published earliest deadline is exact (only we lower it; a taker publishes
  // the new top after popping): nothing is due, no lock.
  const std::int64_t next = m_next_deadline.load(std::memory_order_relaxed);
  if (next == INT64_MAX) {
    return;
  }
  std::int64_t now = steady_now_ns();
  if (next > now) {
    return;
  }
  lock_timers();
  while (timer_node* t = m_timers.top()) {
    if (t->deadline_ns > now) {
      break;
    }
    m_timers.pop();
    t->res = 0;
    t->finished();  // queues the waiter on m_ready_timers (or leaves it to a cancel drain)
  }
  publish_next_deadline();
  unlock_timers();
}

bool worker::watch_timers() noexcept {
  if (m_watching_timers) {
    return true;
  }
  if (m_takeover_delay_ns < 0 || rt.workers.size() < 2) {
    return false;
  }
  std::int32_t nobody = -1;
  // acq_rel: an ownership hand-over (pairs with hand_over_timer_watch()'s release).
  if (!rt.idle.timer_watcher.compare_exchange_strong(nobody, static_cast<std::int32_t>(index),
                                                     std::memory_order_acq_rel, std::memory_order_relaxed)) {
    return false;
  }
  m_watching_timers = true;
  // seq_cst fence: the claim against an armer's deadline store (design note): either
  // the armer's later load of the watcher sees us, or park_deadline() sees its deadline.
  store_load_barrier(rt.idle.sleepers);
  return true;
}

void worker::hand_over_timer_watch() noexcept {
  m_watching_timers = false;
  // release: the next claimer's acquire CAS takes the watch after us.
  rt.idle.timer_watcher.store(-1, std::memory_order_release);
  // seq_cst fence: our release against a parker's `parked` store (park()'s fence): either
  // we see it parked here, or its claim after its fence sees the watch free.
  store_load_barrier(rt.idle.sleepers);
  bool timers_anywhere = false;
  for (const auto& w : rt.workers) {
    // A stamped backlog (idle.cpp) needs a watcher as a timer does.
    timers_anywhere |= w->m_next_deadline.load(std::memory_order_relaxed) != INT64_MAX || w->backlog_stamp() != 0;
  }
  if (!timers_anywhere || rt.idle.sleepers.load(std::memory_order_relaxed) == 0) {
    return;  // nothing to watch, or nobody idle to watch it (whoever parks next claims)
  }
  wake_another_parked();  // it claims the watch when it parks again
}

std::int64_t worker::park_deadline(std::int64_t now, bool watching) noexcept {
  std::int64_t until = m_next_deadline.load(std::memory_order_relaxed);
  if (!watching) {
    return until;
  }
  for (const auto& w : rt.workers) {
    if (w.get() == this) {
      continue;
    }
    std::int64_t theirs = w->m_next_deadline.load(std::memory_order_relaxed);
    if (theirs != INT64_MAX) {
      // A timer already that late that we could not take (its owner held the lock, so
      // it is in its loop): look again a little later instead of spinning.
      std::int64_t again = std::max(theirs, now + kRetryNs - m_takeover_delay_ns);
      until = std::min(until, deadline_ns_after(again, m_takeover_delay_ns));
    }
    // Tasks a worker queued without waking anyone (a stamped backlog, idle.cpp) are
    // stolen once the stamp is `delay` old, in case their worker blocks in its current
    // task: look then (the loop's search takes them; park()'s re-check sees them first
    // if they are that old already). An empty queue needs no look: only its owner adds
    // to it, and it publishes again when it does.
    const std::int64_t stamp = w->backlog_stamp();
    if (stamp != 0) {
      until = std::min(until, deadline_ns_after(stamp, m_takeover_delay_ns));
    }
    // A worker stamping backlogs wakes us only if we would sleep past stamp + 2 × delay
    // (idle.cpp: note_backlog): while it stamps, look every 2 × delay instead of being
    // woken for each. relaxed: a hint, ordered like the stamp. `age` is negative when
    // the stamp raced our clock read (still "recent"); compared without forming 2 × delay.
    const std::int64_t last = w->m_last_backlog.load(std::memory_order_relaxed);
    const std::int64_t age = now - last;
    if (last != 0 && (age < 0 || age - m_takeover_delay_ns < m_takeover_delay_ns)) {
      until = std::min(until, two_delays_after(now, m_takeover_delay_ns));
    }
  }
  return until;
}

bool worker::others_have_timers() const noexcept {
  for (const auto& w : rt.workers) {
    // relaxed: a hint, as in take_over_timers().
    if (w.get() != this && w->m_next_deadline.load(std::memory_order_relaxed) != INT64_MAX) {
      return true;
    }
  }
  return false;
}

bool worker::take_over_timers(std::int64_t now) {
  if (rt.stopping()) {
    return false;
  }
  bool took = false;
  const std::int64_t late = now - m_takeover_delay_ns;
  for (const auto& w : rt.workers) {
    if (w.get() != this && w->m_next_deadline.load(std::memory_order_relaxed) <= late) {
      took |= take_due_timers_of(*w, now);
    }
  }
  return took;
}

bool worker::take_due_timers_of(worker& victim, std::int64_t now) {
  if (!victim.try_lock_timers()) {
    return false;  // the owner is at its heap: it is in its loop and fires its own
  }
  m_taken_timers.clear();
  while (timer_node* t = victim.m_timers.top()) {
    if (t->deadline_ns > now || m_taken_timers.size() == kMaxTakenPerPass) {
      break;
    }
    victim.m_timers.pop();
    std::uint8_t expected = cancellable::idle;
    // acq_rel: as finished()'s exchange (pairs with request_cancel()'s CAS). On failure
    // a stop request owns the node: the owner's cancel drain resumes it.
    if (t->cancel_state.compare_exchange_strong(expected, cancellable::completed, std::memory_order_acq_rel,
                                                std::memory_order_relaxed)) {
      // Nobody else can reach the node now (the stop callback's CAS fails): it is ours.
      t->owner = this;
      t->res = 0;
      m_taken_timers.push_back(t->waiter.address());
    }
  }
  victim.publish_next_deadline();
  victim.unlock_timers();
  if (m_taken_timers.empty()) {
    return false;
  }
  bump(m_timers_taken, m_taken_timers.size());
  // The earliest runs next; the others go where idle workers can steal them, so one
  // long task among them cannot strand the rest again.
  schedule_timer(m_taken_timers.front());
  for (std::size_t i = 1; i < m_taken_timers.size(); ++i) {
    schedule_back(m_taken_timers[i]);
  }
  return true;
}

void worker::wake_a_backlog_watcher(std::int64_t stamp) noexcept {
  wake_a_timer_watcher(two_delays_after(stamp, m_takeover_delay_ns));
}

void worker::wake_a_timer_watcher(std::int64_t needed) noexcept {
  // seq_cst fence: the armer half of the store-load pair with park() (design note): our
  // deadline store above against its `parked` store.
  store_load_barrier(rt.idle.sleepers);
  if (rt.idle.sleepers.load(std::memory_order_relaxed) == 0) {
    return;  // nobody parked: whoever parks next reads our deadline
  }
  // relaxed: who watches is a hint here; a stale answer only costs a needless wake, or
  // none for a worker that is waking anyway and will read our deadline when it re-parks.
  std::int32_t watcher = rt.idle.timer_watcher.load(std::memory_order_relaxed);
  if (watcher >= 0 && static_cast<std::size_t>(watcher) < rt.workers.size()) {
    worker& w = *rt.workers[static_cast<std::size_t>(watcher)];
    // acquire: pairs with park()'s seq_cst `parked` store, so m_park_until is at least
    // the INT64_MAX stored before it.
    if (w.m_parked.load(std::memory_order_acquire) == 1 && w.m_park_until.load(std::memory_order_relaxed) > needed) {
      w.wake_if_parked();  // it re-parks bounded by our deadline
    }
    return;  // (not parked: it is waking, and reads our deadline when it parks again)
  }
  // No watcher: every parked worker sleeps without a bound from others; wake one, which
  // becomes the watcher when it parks again.
  wake_another_parked();
}

void worker::wake_another_parked() noexcept {
  for (const auto& w : rt.workers) {
    // acquire: as in wake_a_timer_watcher(), pairs with park()'s seq_cst `parked` store.
    if (w.get() != this && w->m_parked.load(std::memory_order_acquire) == 1) {
      w->wake_if_parked();
      return;
    }
  }
}

}  // namespace corio::detail
