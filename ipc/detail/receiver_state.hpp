// Private: the shared state behind corio::ipc::stream_receiver (ipc/receiver.hpp).
//
// Design note
// -----------
// One receiver_state per receiver. It owns `buffer_count` buffers of `buffer_size` bytes
// (one anonymous mapping, page aligned, behind the provided-buffer ring's entries) and at
// most one recv SQE at a time, armed on the ring of the worker whose receive() first
// needed it (`m_owner`, fixed for the state's life because the buffer group is
// registered on that ring). Two modes, chosen once:
//
//   provided buffers  IORING_OP_RECV with IORING_RECV_MULTISHOT and IOSQE_BUFFER_SELECT
//                     on buffer group `m_bgid`, a buffer ring (IORING_REGISTER_PBUF_RING)
//                     registered on the owner's ring by the owner thread at the first
//                     arm. The kernel picks a free buffer per completion; one CQE per
//                     buffer filled (a message larger than a buffer spans several CQEs,
//                     in stream order).
//   fallback          one plain IORING_OP_RECV at a time into a free buffer of our own
//                     (kernel before 6.0, registration refused, receive_options::
//                     provided_buffers = false, or the test hook).
//
// Either way the receiver reads ahead: once started, the SQE stays armed while a buffer
// is free, whether or not a receive() waits. Completed buffers go to a waiting receive()
// (FIFO, nodes in their frames, woken through the scheduler, never inline) or to the
// queue `m_q`. Every queued or delivered buffer is a distinct buffer id, so the queue
// holds at most buffer_count entries by construction (a fixed ring of that size).
//
// Arming, cancelling and the doorbell to the owner are the pinned-multishot engine's
// (ipc/detail/pinned_multishot.hpp); the queue and the buffers are under its lock. The
// owner is pinned by the first arm: the buffer group is registered on its ring, so every
// later arm goes through the doorbell to that worker, rung when a buffer comes back on
// any thread.
//
// Returning a buffer (received_buffer's destructor, any thread): under m_lock, the
// buffer is written into the next ring entry (io_uring_buf_ring_add) and the ring's tail
// is published with a release store (io_uring_buf_ring_advance). The kernel is the only
// consumer: it reads the tail with an acquire load and then the entries below it, and it
// never writes an entry. The ring is single-producer by protocol, and the lock makes all
// returning threads one producer (their add+advance pairs are serialised and ordered by
// the lock), so the kernel sees exactly what a single-threaded producer would publish.
//
// Out of buffers. With every buffer queued or held by the user, the kernel ends the
// multishot with -ENOBUFS (data stays in the socket: nothing is lost, and the peer is
// throttled by TCP/Unix flow control). The state is then "stopped"; the first buffer to
// come back (m_in_ring > 0) rings the doorbell and the owner re-arms. Holding buffers is
// the back-pressure. A buffer returned between the kernel's -ENOBUFS and its CQE is seen
// by the CQE handler (it re-checks m_in_ring), so no wake-up is lost; nothing spins,
// because a re-arm happens only when a buffer came back.
//
// End of stream and errors are terminal and sticky: a CQE with res 0 (EOF) or an error
// (other than -ENOBUFS and our own cancel) ends the reading; queued data is delivered
// first, then every receive() yields EOF (an empty buffer) or the error. The runtime's
// shutdown cancel (-ECANCELED we did not ask for) is terminal as errc::operation_canceled.
//
// Lifetime. shared_ptr: held by the receiver handle, by each receive() awaiter, by each
// received_buffer, by the armed SQE and by a pending doorbell (the engine's). close()
// fails the waiters with errc::closed, drops queued buffers and has the owner cancel the
// SQE. The buffer memory
// lives as long as the state, i.e. until the final CQE and the last received_buffer. The
// destructor unregisters the buffer group on the owner: directly when it runs on the
// owner's thread, else through a small job posted to it (port::post); if the owner's
// shutdown drain is over, its ring is closed (or closing, with nothing armed on the
// group: the kernel no longer touches the buffers) and the memory is simply unmapped.
// Buffer group ids come from a global counter; -EEXIST on registration tries the next.
//
// Thread-safety: every member function may be called from any thread; the CQE and
// doorbell callbacks run on the owner. The runtime must outlive the state (the handle,
// awaiters and received buffers), as the owner's worker is referenced.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <vector>

#include <corio/ipc/detail/pinned_multishot.hpp>
#include <corio/sync/waiter_list.hpp>

struct io_uring_buf_ring;

namespace corio::ipc {

/// Options of stream_socket::receiver() (ipc/receiver.hpp).
struct receive_options {
  /// Bytes per buffer: one completion carries at most this much. Make it at least the
  /// usual message: a message split over several buffers costs a completion, a wake and
  /// (in an echo) a send per piece (measured: 4 KiB buffers for 16 KiB messages, ~4x the
  /// CPU per request of read_some).
  std::size_t buffer_size = 16 * 1024;
  /// Buffers (1..32768; the ring has the next power of two of entries). Queued plus
  /// user-held buffers never exceed it. Memory: buffer_size * buffer_count per receiver.
  std::size_t buffer_count = 8;
  /// Use a provided-buffer ring and multishot recv when the kernel has them (6.0+);
  /// false: the fallback (one plain recv at a time into the receiver's own buffers).
  bool provided_buffers = true;
};

/// Counters of one receiver (for tests and benchmarks).
struct receive_stats : multishot_stats {
  std::uint64_t bytes = 0;      ///< bytes the kernel delivered
  std::uint64_t enobufs = 0;    ///< multishot ends for lack of buffers
  std::size_t queued = 0;       ///< completed buffers nobody has taken yet
  std::size_t queued_peak = 0;  ///< most buffers ever queued at once
  std::size_t held = 0;         ///< buffers delivered and not yet given back
  bool provided_buffers = false;  ///< multishot recv on a provided-buffer ring
};

namespace detail {

/// One receive() waiting on a receiver. Written under the state's lock.
struct recv_waiter : corio::detail::waiter {
  int bid = -1;            ///< granted: the buffer (owned by the node until taken)
  std::uint32_t len = 0;   ///< granted: bytes in it
  int error = 0;           ///< granted: a negative errno instead of data
  bool eof = false;        ///< granted: end of stream
  bool no_runtime = false;
};

/// Test hook: receivers created while it is on use the fallback path. Not for production.
void simulate_no_provided_buffers(bool on) noexcept;
/// For tests: buffer groups registered and not yet released (unregistered on their
/// worker, or dropped with a ring that shut down).
[[nodiscard]] long live_buffer_groups() noexcept;

class receiver_state final : public pinned_multishot {
 public:
  receiver_state(int fd, const receive_options& options);
  ~receiver_state() override;

  /// False when the buffers could not be allocated (the handle then reports ENOMEM).
  [[nodiscard]] bool valid() const noexcept { return m_mem != nullptr; }
  /// await_suspend body: takes a queued buffer, or queues `w` (arming on this worker the
  /// first time). Returns true when the coroutine stays suspended.
  bool begin(recv_waiter& w, std::coroutine_handle<> h, const std::stop_token& token,
             const std::stop_token* inherited);
  /// Awaiter destructor, after abandon(): a buffer granted to a node whose frame was
  /// destroyed unresumed (runtime shutdown) is given back.
  void drop_unclaimed(recv_waiter& w) noexcept;
  /// A buffer delivered earlier comes back (any thread).
  void give_back(int bid) noexcept;
  [[nodiscard]] const std::byte* buffer(int bid) const noexcept { return m_buffers + static_cast<std::size_t>(bid) * m_size; }
  [[nodiscard]] receive_stats stats() const noexcept;

 private:
  struct entry {
    std::uint16_t bid;
    std::uint32_t len;
  };

  [[nodiscard]] bool want_armed_locked() const noexcept override;
  [[nodiscard]] bool want_cancel_locked() const noexcept override { return m_closed; }
  void on_claim_locked() noexcept override;
  void on_cqe_locked(int res, std::uint32_t flags, bool final, bool ours,
                     corio::detail::wake_batch& batch) noexcept override;
  void on_close_locked() noexcept override;
  void owner_gone_locked(corio::detail::wake_batch& batch) noexcept override;
  void fill_sqe(io_uring_sqe* sqe) noexcept override;

  [[nodiscard]] bool can_arm_locked() const noexcept;
  void recycle_locked(int bid) noexcept;
  void deliver_locked(int bid, std::uint32_t len, corio::detail::wake_batch& batch) noexcept;
  void end_waiters_locked(int error, corio::detail::wake_batch& batch) noexcept;
  // On the first arm's worker, outside the lock: registers the buffer ring there.
  void register_buffers(corio::detail::worker* w);

  const int m_fd;
  const std::size_t m_size;
  const unsigned m_count;
  unsigned m_ring_entries = 0;
  std::size_t m_map_len = 0;
  void* m_mem = nullptr;
  io_uring_buf_ring* m_br = nullptr;
  std::byte* m_buffers = nullptr;
  std::uint16_t m_bgid = 0;
  bool m_registered = false;

  std::vector<entry> m_q;  // fixed ring of m_count entries
  std::size_t m_q_head = 0;
  std::size_t m_q_size = 0;
  std::vector<std::uint16_t> m_free;  // fallback: buffers free in user space
  int m_oneshot_bid = -1;             // fallback: the buffer of the armed recv
  unsigned m_in_ring = 0;             // provided: buffers the kernel may pick
  std::size_t m_held = 0;
  bool m_multishot;
  bool m_started = false;
  bool m_eof = false;
  int m_error = 0;
  receive_stats m_stats;
};

}  // namespace detail
}  // namespace corio::ipc
