// Private: the shared state behind corio::ipc::basic_acceptor (ipc/acceptor.hpp): the
// accept policy on top of the pinned-multishot engine (ipc/detail/pinned_multishot.hpp,
// which arms, cancels and reaches the owner worker).
//
// Design note
// -----------
// One acceptor_state per acceptor. Its SQE is one IORING_OP_ACCEPT with
// IORING_ACCEPT_MULTISHOT, or, without multishot (the kernel lacks it, or
// accept_options::multishot is false), one plain accept at a time. Under the engine's lock
// it keeps `m_queue`, the accepted descriptors nobody has asked for yet (bounded, below).
//
// Who arms. An accept() that must wait arms the SQE on its *own* worker when nothing is
// armed and no doorbell is pending; so does, with multishot, an accept() that takes a
// queued descriptor and leaves the queue at or below the low-water mark after the
// multishot stopped. Otherwise the engine's doorbell re-arms on the owner (waiters, or
// room in the queue).
//
// Descriptors reach tasks on other workers through the waiters: the CQE handler (on the
// owner) pops the first waiter, stores the descriptor in its node and wakes it through
// the scheduler; with no waiter, the descriptor is queued.
//
// Bound. With multishot, when the queue reaches `capacity` the owner cancels the SQE; it
// is re-armed when accept() calls bring the queue down to capacity / 2 (hysteresis: no
// arm/cancel per connection under sustained overload). Descriptors the kernel completes
// before the cancel lands are queued too (they are already accepted), so the bound is
// capacity plus one kernel batch (the kernel's multishot loop accepts what is pending, at
// most the free CQ space). Connections beyond that stay in the listen backlog.
//
// Errors. A final CQE with an error (EMFILE, ENFILE, ENOMEM, ...) is handed to every
// waiting accept() and nothing is re-armed until the next accept() call (`m_hold`): the
// caller backs off, as with one-shot accept, and nothing spins. -ECANCELED that we did not
// ask for is the runtime's shutdown: nothing is re-armed either. -EINVAL as the first CQE
// of a multishot arm means the kernel does not know the flag: the state falls back to
// one-shot accepts and retries once (no error reported for it).
//
// close() ends the waits with errc::closed, closes the queued descriptors and has the
// owner cancel the SQE; descriptors whose CQEs arrive afterwards are closed by the
// handler. The listening descriptor is borrowed (never closed here).
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

#include <corio/ipc/detail/pinned_multishot.hpp>
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
struct accept_stats : multishot_stats {
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

class acceptor_state final : public pinned_multishot {
 public:
  acceptor_state(int listen_fd, const accept_options& options);
  ~acceptor_state() override;

  /// await_suspend body: takes a queued descriptor, or queues `w` (and arms the SQE on
  /// this worker if needed). Returns true when the coroutine stays suspended. The stop
  /// callbacks must be registered before (they may already have run: w.status cancelled).
  bool begin(accept_waiter& w, std::coroutine_handle<> h, const std::stop_token& token,
             const std::stop_token* inherited);
  /// Awaiter destructor, after abandon(): a descriptor granted to a node whose frame was
  /// destroyed unresumed (runtime shutdown) is closed, not leaked.
  void drop_unclaimed(accept_waiter& w) noexcept;
  [[nodiscard]] accept_stats stats() const noexcept;

 private:
  [[nodiscard]] bool want_armed_locked() const noexcept override;
  [[nodiscard]] bool want_cancel_locked() const noexcept override;
  void on_claim_locked() noexcept override;
  void on_cqe_locked(int res, std::uint32_t flags, bool final, bool ours,
                     corio::detail::wake_batch& batch) noexcept override;
  void after_cqe() noexcept override;
  void on_close_locked() noexcept override;
  void after_close() noexcept override;
  void owner_gone_locked(corio::detail::wake_batch& batch) noexcept override;
  void fill_sqe(io_uring_sqe* sqe) noexcept override;

  void grant_locked(accept_waiter* w, int fd, int error, corio::detail::wake_batch& batch) noexcept;
  void push_queue_locked(int fd);

  const int m_listen_fd;
  const std::size_t m_capacity;
  const std::size_t m_low_water;

  std::deque<int> m_queue;
  std::size_t m_queued_peak = 0;
  int m_close_after_cqe = -1;  // owner only: a descriptor that arrived after close()
  std::deque<int> m_closing;   // close() only: the queue it took, closed after the lock
  bool m_multishot;
  bool m_hold = true;               // re-arm only from an accept() call (start, after errors)
  std::uint32_t m_cqes_this_arm = 0;
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
