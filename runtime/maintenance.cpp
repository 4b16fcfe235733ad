// What a worker does between tasks: maintenance() (cancel requests, entering the kernel
// to submit and collect completions, timers, the registry sweep, the backlog stamp) and
// reap(), plus the rule by which find_work leaves its kernel entry to the park.
//
// Kernel entries: out of local tasks, find_work enters the kernel once (io_uring_enter:
// submit what is queued, and on a DEFER_TASKRUN ring run the task work that posts
// completions); if it then finds nothing, the park enters again to sleep. When the SQEs
// queued there do not complete at once (a task that woke its peer with a futex syscall
// and now waits on a FUTEX_WAIT, say), the first enter collects nothing and the second
// would have done both. So after kQuietPollsToLeave find_work enters in a row that reaped
// no completion of a user operation (this and the back-off's other constants are worker
// members, runtime/internal/worker.hpp), find_work leaves its enter to the park
// (leave_enter_to_park): about one io_uring_enter per wake instead of two (1.25 in a
// steady ping-pong, with the probes below and run_task's submit every kSubmitInterval
// tasks), ~1 µs a wake-up where a syscall costs that.
//   - A task found after all (a steal, the inject queue, a park that returned early)
//     submits the queued SQEs before it runs (run_loop): no SQE waits behind a task.
//   - At most one enter is left between two enters: a second find_work enters. Cancel
//     requests drained in that maintenance are never left: their SQEs go in at once.
//   - Never while completions wait to be posted (the ring's IORING_SQ_TASKRUN flag,
//     set up with IORING_SETUP_TASKRUN_FLAG): then the enter is sure to collect them.
//   - Every kProbeEvery-th time find_work enters anyway, to see whether enters still
//     collect nothing; one that reaps something ends the leaving. So does a park with a
//     left enter that reaps more than one user completion (work the skipped enter would
//     likely have found, or that came in while it slept): a wrong guess, after which
//     twice as many quiet polls in a row are needed to leave again (up to
//     kMaxQuietPollsToLeave; a right guess halves it, down to kQuietPollsToLeave). A left
//     SQE that completes inline when the park submits it (one completion, no sleep) is
//     not told apart from a wake-up; the next probe sees it. A wrong guess costs a park
//     round instead of an enter: the park protocol's atomics, frame_idle() (which may
//     return memory to the OS), and with several workers the wake-ups others send to a
//     worker that looks asleep and a timer-watch hand-over. The left SQEs go in that much
//     later (a bounded delay: they are submitted before any task runs, and a park with
//     task work pending runs it first and does not sleep).
// Only on DEFER_TASKRUN rings (elsewhere the kernel posts completions without an enter).
// On those, an enter with nothing to submit is not made at all while the kernel's
// IORING_SQ_TASKRUN flag says no completion waits to be posted (ring::nothing_to_post()):
// it would collect nothing the CQ does not show already (the job server's worker made
// ~0.2 such enters per job at one client, 2026-12-06).
// Workloads whose enters complete something (a send that completes inline, a read of
// data already there) keep entering at find_work as before.
#include <corio/runtime/internal/worker.hpp>

#include <algorithm>
#include <cstdint>

#include <corio/runtime/detail/completion.hpp>
#include <corio/runtime/internal/runtime_core.hpp>

namespace corio::detail {

bool worker::leave_enter_to_park() noexcept {
  if (!m_ring.defer_taskrun() || m_enter_left || m_quiet_polls < m_leave_after || m_ring.task_work_pending()) {
    return false;
  }
  if (++m_left_since_probe >= kProbeEvery) {
    return false;  // a probe: this one enters (and resets the count below)
  }
  m_enter_left = true;
  return true;
}

void worker::note_left_enter_reaped(unsigned reaped) noexcept {
  if (reaped > 1) {
    // The skipped enter would have found work: enter again, and ask for twice as many
    // quiet polls before the next try.
    m_quiet_polls = 0;
    m_leave_after = static_cast<std::uint8_t>(std::min<unsigned>(m_leave_after * 2u, kMaxQuietPollsToLeave));
  } else {
    m_leave_after = static_cast<std::uint8_t>(std::max<unsigned>(m_leave_after / 2u, kQuietPollsToLeave));
  }
}

unsigned worker::maintenance(maintenance_from from) {
  // Tasks already queued without a stamp were announced (or are the one we run next):
  // more on top of them wake a worker as before (note_backlog). relaxed: our own stamp.
  const bool unstamped_before = !m_queue.empty() && m_backlog_since.load(std::memory_order_relaxed) == 0;
  m_in_maintenance = true;
  const bool cancels = drain_cancels();  // cancel SQEs go in now: never left to the park
  // An enter only to collect what is in flight is skipped when the kernel says no
  // completion waits to be posted (ring::nothing_to_post(): the CQ already shows all).
  const bool poll_in_flight =
      (from == maintenance_from::tick || (from == maintenance_from::find_work && m_ring.defer_taskrun())) &&
      !m_ring.nothing_to_post();
  bool polled = false;
  if ((m_ring.has_unsubmitted() || (poll_in_flight && m_in_flight != 0)) &&
      !(from == maintenance_from::find_work && !cancels && leave_enter_to_park())) {
    m_enter_left = false;
    m_ring.submit();
    polled = from == maintenance_from::find_work;
  }
  const unsigned reaped = reap();
  if (polled) {
    m_left_since_probe = 0;
    m_quiet_polls = reaped != 0 ? 0 : static_cast<std::uint8_t>(std::min<unsigned>(m_quiet_polls + 1u, 255u));
  }
  fire_timers();
  if (from == maintenance_from::tick && m_takeover_delay_ns >= 0 && others_have_timers()) {
    // Busy, yet between two tasks: fire what a blocked worker left overdue (timers.cpp).
    // The guard saves the clock read when no other worker has a timer.
    take_over_timers(steady_now_ns());
  }
  rt.sweep_own_shard(index);
  m_in_maintenance = false;
  // Wakes a parked worker for a large backlog, stamps a small one (idle.cpp).
  note_backlog(m_queue.size(), m_ready_timers.size(), unstamped_before);
  m_sqes.store(m_ring.sqes_submitted(), std::memory_order_relaxed);
  m_enters.store(m_ring.enters(), std::memory_order_relaxed);
  return reaped;
}

unsigned worker::reap() {
  unsigned user = 0;
  unsigned n = m_ring.for_each_cqe([this, &user](io_uring_cqe* cqe) {
    std::uint64_t data = cqe->user_data;
    if (data == kUserDataIgnore) {
      return;
    }
    if (data == kUserDataPark) {
      m_park_armed = false;
      return;
    }
    ++user;
    // A multishot operation (e.g. the acceptor's IORING_ACCEPT_MULTISHOT) was counted
    // once, by the get_sqe() that armed it; its CQEs with F_MORE do not end it, only the
    // final one (without F_MORE) does, so shutdown waits for exactly that one.
    if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
      --m_in_flight;
    }
    auto* op = reinterpret_cast<io_completion*>(data);
    op->on_cqe(op, cqe->res, cqe->flags);
  });
  if (n != 0) {
    bump(m_cqes, n);
  }
  return user;
}

}  // namespace corio::detail
