// Private: the pinned-multishot engine shared by ipc's acceptor (acceptor_state) and
// receiver (receiver_state). They keep only their queue policy; arming, cancelling,
// closing, the wake path to the owner worker, the lifetime and the shared counters are here.
//
// Design note
// -----------
// A pinned multishot is one io_uring SQE that completes many times (IORING_ACCEPT_MULTISHOT,
// IORING_RECV_MULTISHOT) — or, as a fallback, one plain SQE armed again after each
// completion — shared by every task that waits on it, from any worker. The SQE lives on
// the ring of one worker, the owner (`m_owner`); only the owner thread touches it. The
// rest is shared by every thread under one spin lock (`m_lock`):
//
//   m_waiters           the waiting calls (FIFO, nodes in their frames), woken through
//                       the scheduler, never resumed inline;
//   m_armed             an SQE is in the kernel: set when an arm is claimed, cleared by its
//                       final CQE (the one without IORING_CQE_F_MORE);
//   m_cancel_sent       an ASYNC_CANCEL for the armed SQE was submitted;
//   m_closed            close() ran: waits end with errc::closed, the SQE is cancelled;
//   m_doorbell_pending  the doorbell (below) is on the owner's list;
//   plus the derived state's queue (accepted descriptors, filled buffers) and policy.
//
// Arming. A thread that decides under the lock that the SQE must be armed claims the arm
// (claim_arm_locked: m_armed, the owner, the SQE's reference) and fills the SQE after
// dropping the lock (arm()), on the owner: filling may reap completions, whose handlers
// take the lock. A waiting call on a worker may claim on its own worker when nothing is
// armed and no doorbell is pending (the acceptor does; the receiver only for its first arm,
// its buffer group being registered on that ring). Nobody claims while a doorbell is
// pending, so the owner cannot change under it.
//
// The one wake path: the doorbell. A CQE handler runs inside the owner's reap loop, which
// must not take SQEs, and another thread must not touch the owner's ring; both ask the
// owner to reconcile by posting the doorbell (a port::cancellable) on its list with
// port::post(), which finds the owner by its serial — so a doorbell rung for a worker whose
// runtime is gone fails cleanly instead of touching freed memory. The owner drains it in
// its next maintenance pass and, under the lock: cancels the armed SQE if the policy says
// so (want_cancel_locked: closed, a full queue), or arms it again if the policy wants it
// armed (want_armed_locked: waiters, free buffers, room in the queue) and its runtime is
// not stopping. The doorbell is posted at most once at a time and holds a reference to
// the state until drained. post() fails only once the owner's shutdown drain is over; the
// drain waited for the SQE's final CQE, so nothing is armed then, and the policy is told
// (owner_gone_locked) to end what would wait for it.
//
// Completions. Each CQE (on the owner) goes to the policy (on_cqe_locked) with whether it
// is the final one and whether a cancel we sent ended it (-ECANCELED we did not ask for is
// the runtime's shutdown). Then the engine reconciles: it rings the doorbell if the armed
// SQE should be cancelled, or if a finished one should be armed again.
//
// Lifetime. shared_ptr: held by the handle, by each waiting awaiter, by the armed SQE
// (m_armed_ref, dropped by the final CQE) and by a pending doorbell (m_doorbell_ref). A
// reference that may be the last is dropped after the lock is released.
//
// Thread-safety: every public member may be called from any thread; the CQE handler and
// the doorbell run on the owner. The runtime of the owner must outlive the state.
// Cost: a hand-off to a waiter is one lock and a scheduler wake; a doorbell is one CAS on
// the owner's thread, plus a global mutex from elsewhere (post()'s liveness check).
#pragma once

#include <coroutine>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <type_traits>

#include <corio/runtime/port.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio::ipc {

/// The engine's counters in accept_stats and receive_stats (for tests and benchmarks).
struct multishot_stats {
  std::uint64_t arms = 0;  ///< SQEs filled (multishot or one-shot)
  std::uint64_t cqes = 0;  ///< CQEs handled
};

}  // namespace corio::ipc

namespace corio::ipc::detail {

/// The corio::detail names the engine and its policies (pinned_multishot.cpp,
/// acceptor.cpp, receiver.cpp) use unqualified: each says `using namespace multishot_names;`.
namespace multishot_names {
using corio::detail::wait_status;
using corio::detail::wake_batch;
using corio::detail::waiter;
using corio::detail::worker;
}  // namespace multishot_names

class pinned_multishot : public port::io_completion, public std::enable_shared_from_this<pinned_multishot> {
 public:
  pinned_multishot(const pinned_multishot&) = delete;
  pinned_multishot& operator=(const pinned_multishot&) = delete;

  /// Stop callback body (any thread): a still-queued wait leaves and is woken cancelled.
  /// What the SQE produces meanwhile stays queued for the next wait.
  void cancel(corio::detail::waiter& w) noexcept { m_waiters.cancel(w); }
  /// Awaiter destructor: a still-queued node leaves without a wake.
  void abandon(corio::detail::waiter& w) noexcept { m_waiters.abandon(w); }
  /// Idempotent; the caller holds a reference. Marks the state closed, ends the waits
  /// (errc::closed), has the owner cancel the SQE and lets the policy drop its queue
  /// (on_close_locked, then after_close).
  void close() noexcept;

 protected:
  pinned_multishot() noexcept;
  virtual ~pinned_multishot() = default;

  // --- the policy (derived), all but fill_sqe under m_lock ---
  /// Nothing is armed: should an SQE be armed now?
  [[nodiscard]] virtual bool want_armed_locked() const noexcept = 0;
  /// The SQE is armed and no cancel was sent: should it be cancelled now?
  [[nodiscard]] virtual bool want_cancel_locked() const noexcept = 0;
  /// An arm was just claimed (e.g. take the buffer a one-shot receive fills).
  virtual void on_claim_locked() noexcept {}
  /// One CQE. `final`: no IORING_CQE_F_MORE (the SQE is no longer armed). `ours`: a
  /// cancel we sent ended it. Wake what it completes through `batch`.
  virtual void on_cqe_locked(int res, std::uint32_t flags, bool final, bool ours,
                             corio::detail::wake_batch& batch) noexcept = 0;
  /// On the owner, after a CQE's lock is dropped (before the wakes): what must not run
  /// under the spin lock (closing a descriptor that arrived after close()).
  virtual void after_cqe() noexcept {}
  /// close(), the first time, under the lock: drop the queue (what must not run under
  /// the spin lock is left for after_close).
  virtual void on_close_locked() noexcept = 0;
  /// close(), the first time, after the lock is dropped (before the wakes).
  virtual void after_close() noexcept {}
  /// The doorbell could not be posted: the owner's runtime has finished its shutdown, and
  /// nothing will be armed there any more. End what would wait for it.
  virtual void owner_gone_locked(corio::detail::wake_batch& batch) noexcept = 0;
  /// On the owner, outside the lock, for an arm it claimed: prepare the SQE (its
  /// user_data is set by the engine).
  virtual void fill_sqe(io_uring_sqe* sqe) noexcept = 0;

  // --- for the derived state ---
  /// Under the lock: whether the wait of `w` was stopped before it could start (a stop
  /// that comes first wins, as for io_op: nothing is taken from the queue).
  static bool stopped_first(const corio::detail::waiter& w, const std::stop_token& token,
                            const std::stop_token* inherited) noexcept;
  /// Before the lock, at the start of a wait: `w` will resume `h` on the calling
  /// runtime and may be queued on this state's list.
  void prepare_waiter(corio::detail::waiter& w, std::coroutine_handle<> h) noexcept {
    w.handle = h;
    w.home = port::current_runtime();
    w.list = &m_waiters;
  }
  /// Under the lock, with nothing armed and no doorbell pending: the calling worker `w`
  /// will arm (call arm(w) after unlocking). Keeps the state alive until the final CQE.
  void claim_arm_locked(corio::detail::worker* w);
  /// Outside the lock, on the worker that claimed: fills the SQE and queues it with the
  /// worker's next batch (counted in flight once, multishot or not, until its final CQE).
  void arm(corio::detail::worker* w);
  /// Under the lock: asks the owner to reconcile (see the design note). Returns a
  /// reference to drop after unlocking (non-null when the post failed).
  [[nodiscard]] std::shared_ptr<pinned_multishot> ring_doorbell_locked(corio::detail::wake_batch& batch) noexcept;
  /// stats() body: the policy's counters (`policy()`, called under the lock, returns a
  /// struct derived from multishot_stats) with the engine's filled in.
  template <class Policy>
  [[nodiscard]] auto stats_with(Policy policy) const noexcept {
    m_lock.lock();
    auto s = policy();
    static_assert(std::is_base_of_v<multishot_stats, decltype(s)>);
    s.arms = m_arms;
    s.cqes = m_cqes;
    m_lock.unlock();
    return s;
  }

  mutable corio::detail::sync_spin_lock m_lock;
  corio::detail::waiter_list m_waiters{m_lock};
  bool m_closed = false;
  bool m_armed = false;
  bool m_cancel_sent = false;
  bool m_doorbell_pending = false;
  corio::detail::worker* m_owner = nullptr;  ///< ring of the armed (or last armed) SQE
  std::uint64_t m_owner_serial = 0;          ///< port::serial(m_owner), for port::post
  std::uint64_t m_arms = 0;                  ///< SQEs filled (stats)
  std::uint64_t m_cqes = 0;                  ///< CQEs handled (stats)

 private:
  struct doorbell : port::cancellable {
    pinned_multishot* state = nullptr;
  };
  static void cqe_arrived(port::io_completion* c, int res, std::uint32_t flags) noexcept;
  static void doorbell_rang(port::cancellable* c) noexcept;
  /// Under the lock, for close(): marks the state closed, ends the waits (errc::closed)
  /// and has the owner cancel the SQE. Returns false if it was closed already. `drop`: as
  /// ring_doorbell_locked's result.
  bool mark_closed_locked(corio::detail::wake_batch& batch, std::shared_ptr<pinned_multishot>& drop) noexcept;

  std::shared_ptr<pinned_multishot> m_armed_ref;     // keeps us alive until the final CQE
  std::shared_ptr<pinned_multishot> m_doorbell_ref;  // keeps us alive until drained
  doorbell m_doorbell;
};

}  // namespace corio::ipc::detail
