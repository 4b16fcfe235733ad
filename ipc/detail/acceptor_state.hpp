// Private: the shared state behind corio::ipc::basic_acceptor (ipc/acceptor.hpp).
//
// Design note
// -----------
// One acceptor_state per acceptor. It owns at most one accept SQE at a time: with
// multishot, one IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT; without (the kernel lacks
// it, or accept_options::multishot is false), one plain accept at a time. The SQE lives
// on the ring of the worker that armed it (`m_owner`), and only that worker touches it.
// Everything else is shared by every worker under one spin lock (`m_lock`):
//
//   m_queue    accepted descriptors nobody has asked for yet (bounded, see below);
//   m_waiters  accept() calls waiting for a descriptor (FIFO, nodes in their frames);
//   m_armed    an accept SQE is in the kernel (set when it is filled, cleared by its
//              final CQE, the one without IORING_CQE_F_MORE).
//
// Who arms. An accept() that must wait (or, with multishot, that leaves the queue at or
// below the low-water mark) arms the SQE on its *own* worker's ring when nothing is armed
// and no doorbell is pending. It decides under the lock and fills the SQE after dropping
// it (filling may reap completions, which take the lock). The final CQE of the SQE does
// not re-arm inline: the CQE handler runs inside the owner's reap loop, which must not
// take SQEs. It rings the doorbell instead.
//
// Doorbell. A `cancellable` pushed on the owner's MPSC cancel list (the runtime's
// cross-thread mechanism, port::post in runtime/port.hpp); the owner drains it in its next
// maintenance pass and reconciles: cancel the SQE (closed, or queue full) or re-arm it
// (waiters, or room in the queue). It is pushed at most once at a time (`m_doorbell_pending`,
// under the lock), and only (a) by the owner thread itself, or (b) by another thread while
// the SQE is armed — the owner cannot finish its shutdown drain while the SQE is in flight,
// and it drains its cancel list after every reap, so a pushed doorbell is always drained
// before the owner's ring closes. While a doorbell is pending nobody else arms, so the
// owner cannot change under it. The doorbell holds a reference to the state until drained.
//
// Descriptors reach tasks on other workers through m_waiters: the CQE handler (on the
// owner) pops the first waiter, stores the descriptor in its node and wakes it through
// the scheduler (never an inline resume); with no waiter, the descriptor is queued.
//
// Bound. With multishot, when the queue reaches `capacity` the handler asks the owner to
// cancel the SQE; it is re-armed when accept() calls bring the queue down to capacity / 2
// (hysteresis: no arm/cancel per connection under sustained overload). Descriptors the
// kernel completes before the cancel lands are queued too (they are already accepted), so
// the bound is capacity plus one kernel batch (the kernel's multishot loop accepts what is
// pending, at most the free CQ space). Connections beyond that stay in the listen backlog.
//
// Errors. A final CQE with an error (EMFILE, ENFILE, ENOMEM, ...) is handed to every
// waiting accept() and nothing is re-armed until the next accept() call (`m_hold`): the
// caller backs off, as with one-shot accept, and nothing spins. -ECANCELED that we did not
// ask for is the runtime's shutdown: nothing is re-armed either. -EINVAL as the first CQE
// of a multishot arm means the kernel does not know the flag: the state falls back to
// one-shot accepts and retries once (no error reported for it).
//
// Lifetime. shared_ptr: held by the acceptor handle, by each accept() awaiter, by the
// armed SQE (`m_armed_ref`, dropped by the final CQE) and by a pending doorbell. close()
// marks the state closed, fails the waiters with errc::closed, closes the queued
// descriptors and has the owner cancel the SQE; descriptors whose CQEs arrive afterwards
// are closed by the handler. The listening descriptor is borrowed (never closed here).
//
// Thread-safety: every member function may be called from any thread; the CQE and
// doorbell callbacks run on the owner. Cost: accept() from the queue is one lock and a
// pop; a hand-off to a waiter is one lock plus a scheduler wake; no allocation per
// connection except the queue's (a std::deque chunk now and then).
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <stop_token>
#include <vector>

#include <corio/runtime/port.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio::ipc {

/// Options of listener.incoming() (ipc/acceptor.hpp).
struct accept_options {
  /// Accepted connections held for accept() calls. With multishot, the accept SQE is
  /// cancelled when the queue reaches this size and re-armed at half of it.
  std::size_t queue_capacity = 64;
  /// Use IORING_ACCEPT_MULTISHOT when the kernel has it (Linux 5.19+). false: one plain
  /// accept SQE at a time, shared by every waiting accept() (the fallback path).
  bool multishot = true;
};

/// Counters of one acceptor (for tests and benchmarks).
struct accept_stats {
  std::uint64_t arms = 0;      ///< accept SQEs filled (multishot or one-shot)
  std::uint64_t cqes = 0;      ///< accept CQEs handled
  std::uint64_t accepted = 0;  ///< descriptors the kernel produced
  std::uint64_t errors = 0;    ///< error CQEs (delivered to waiting accepts)
  std::uint64_t stops = 0;     ///< cancels because the queue was full
  std::size_t queued = 0;      ///< descriptors in the queue now
  std::size_t queued_peak = 0; ///< most descriptors ever queued at once
  bool multishot = false;      ///< the acceptor uses IORING_ACCEPT_MULTISHOT
};

namespace detail {

/// One accept() waiting on an acceptor. Fields other than the links are written under
/// the state's lock (or by the owner before it is published).
struct accept_waiter : corio::detail::waiter {
  int fd = -1;          ///< granted: the accepted descriptor (owned by the node until taken)
  int error = 0;        ///< granted: a negative errno instead of a descriptor
  bool no_runtime = false;
};

/// Test hook: pretend the kernel lacks IORING_ACCEPT_MULTISHOT for acceptors created
/// while it is on (the fallback path). Not for production code.
void simulate_no_multishot_accept(bool on) noexcept;

class acceptor_state final : public port::io_completion,
                             public std::enable_shared_from_this<acceptor_state> {
 public:
  acceptor_state(int listen_fd, const accept_options& options);
  ~acceptor_state();
  acceptor_state(const acceptor_state&) = delete;
  acceptor_state& operator=(const acceptor_state&) = delete;

  /// await_suspend body: takes a queued descriptor, or queues `w` (and arms the SQE on
  /// this worker if needed). Returns true when the coroutine stays suspended. The stop
  /// callbacks must be registered before (they may already have run: w.status cancelled).
  bool begin(accept_waiter& w, std::coroutine_handle<> h, const std::stop_token& token,
             const std::stop_token* inherited);
  /// Stop callback body (any thread): a still-queued waiter leaves and is woken cancelled.
  void cancel(accept_waiter& w) noexcept;
  /// Awaiter destructor: a still-queued node leaves without a wake.
  void abandon(accept_waiter& w) noexcept;
  /// Awaiter destructor, after abandon(): a descriptor granted to a node whose frame was
  /// destroyed unresumed (runtime shutdown) is closed, not leaked.
  void drop_unclaimed(accept_waiter& w) noexcept;
  /// Idempotent. See the design note.
  void close() noexcept;
  [[nodiscard]] accept_stats stats() const noexcept;

 private:
  struct doorbell : port::cancellable {
    acceptor_state* state = nullptr;
  };
  enum class action : std::uint8_t { none, arm, cancel };

  static void cqe_arrived(io_completion* c, int res, std::uint32_t flags) noexcept;
  static void doorbell_rang(port::cancellable* c) noexcept;
  static void doorbell_noop(port::cancellable*) noexcept {}

  // All *_locked members: m_lock held.
  [[nodiscard]] bool want_armed_locked() const noexcept;
  void claim_arm_locked(corio::detail::worker* w);
  void ring_doorbell_locked() noexcept;
  void grant_locked(accept_waiter* w, int fd, int error, corio::detail::wake_batch& batch) noexcept;
  void push_queue_locked(int fd);
  // Outside the lock, on the worker that claimed the arm.
  void fill_sqe(corio::detail::worker* w, bool multishot);

  const int m_listen_fd;
  const std::size_t m_capacity;
  const std::size_t m_low_water;

  mutable corio::detail::sync_spin_lock m_lock;
  corio::detail::waiter_list m_waiters{m_lock};
  std::deque<int> m_queue;
  std::size_t m_queued_peak = 0;
  bool m_multishot;
  bool m_closed = false;
  bool m_armed = false;
  bool m_cancel_sent = false;       // an ASYNC_CANCEL for the armed SQE was submitted
  bool m_hold = true;               // re-arm only from an accept() call (start, after errors)
  bool m_doorbell_pending = false;
  std::uint32_t m_cqes_this_arm = 0;
  corio::detail::worker* m_owner = nullptr;  // ring of the armed (or last armed) SQE
  std::shared_ptr<acceptor_state> m_armed_ref;     // keeps us alive until the final CQE
  std::shared_ptr<acceptor_state> m_doorbell_ref;  // keeps us alive until drained
  doorbell m_doorbell;
  accept_stats m_stats;
};

/// Held by a listener: the acceptors made from it, closed when the listener dies (or is
/// assigned), before its descriptor is closed. Weak: an acceptor dies on its own too.
/// Thread-safety: the listener's owner only. Cost: one weak_ptr per incoming() call.
class acceptor_link {
 public:
  acceptor_link() = default;
  acceptor_link(acceptor_link&& other) noexcept : m_states(std::move(other.m_states)) {}
  acceptor_link& operator=(acceptor_link&& other) noexcept {
    if (this != &other) {
      close_all();
      m_states = std::move(other.m_states);
    }
    return *this;
  }
  acceptor_link(const acceptor_link&) = delete;
  acceptor_link& operator=(const acceptor_link&) = delete;
  ~acceptor_link() { close_all(); }

  void add(const std::shared_ptr<acceptor_state>& state);
  void close_all() noexcept;

 private:
  std::vector<std::weak_ptr<acceptor_state>> m_states;
};

}  // namespace detail
}  // namespace corio::ipc
