// One io_uring, owned by one worker thread: the only code in corio that calls liburing's
// setup, submit and reap functions.
//
// The ring is created on its worker thread with SINGLE_ISSUER | DEFER_TASKRUN |
// TASKRUN_FLAG when the kernel accepts them (6.1+), else COOP_TASKRUN, else plain. SQEs are filled by
// awaitables and submitted in batches by the worker loop. A full SQ flushes (submits)
// and, if the kernel still holds every slot, reaps completions until one frees up: it
// never fails. Once an SQE is in the SQ it belongs to the kernel: a failing submit is
// retried later, never rolled back (the operation's state lives until its CQE).
// Thread-safety: owner thread only (SINGLE_ISSUER would reject others with -EEXIST).
// Cost: get_sqe is a few loads and stores; submit()/submit_and_wait() are at most one
// io_uring_enter each (~125-200 ns on bare metal; ~1 µs on a VM whose syscalls trap to
// the hypervisor), amortized over the batch (liburing skips the
// call of a timed wait when a completion is already there and nothing is queued).
#pragma once

#include <liburing.h>

#include <cstdint>
#include <string>
#include <system_error>

#include <corio/runtime/result.hpp>

namespace corio::detail {

struct ring_options {
  unsigned entries = 256;
  bool defer_taskrun = true;
};

class ring {
 public:
  ring() = default;
  ring(const ring&) = delete;
  ring& operator=(const ring&) = delete;
  ~ring() { close(); }

  /// Creates the ring; on failure returns the error and fills `why` with the cause.
  std::error_code open(const ring_options& options, std::string& why) noexcept;
  void close() noexcept;
  [[nodiscard]] bool is_open() const noexcept { return m_open; }

  /// An SQE to fill; never null (see the header comment). `reap` is called to process
  /// completions when the SQ is full and the kernel has not consumed it.
  template <class Reap>
  io_uring_sqe* get_sqe(Reap&& reap) {
    io_uring_sqe* sqe = io_uring_get_sqe(&m_ring);
    while (sqe == nullptr) {
      submit();
      sqe = io_uring_get_sqe(&m_ring);
      if (sqe == nullptr) {
        reap();
        sqe = io_uring_get_sqe(&m_ring);
      }
    }
    ++m_unsubmitted;
    return sqe;
  }

  /// Submits prepared SQEs and runs deferred task work; never blocks.
  void submit() noexcept;
  /// Submits and waits for at least one completion or `timeout_ns` (< 0: no limit).
  void submit_and_wait(long long timeout_ns) noexcept;

  /// Calls fn(cqe) for every completion ready; returns how many.
  template <class Fn>
  unsigned for_each_cqe(Fn&& fn) {
    unsigned count = 0;
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    io_uring_for_each_cqe(&m_ring, head, cqe) {
      fn(cqe);
      ++count;
    }
    io_uring_cq_advance(&m_ring, count);
    m_cqes_reaped += count;
    return count;
  }

  /// Provided-buffer rings (IORING_REGISTER_PBUF_RING): register `entries` (a power of
  /// two) entries at `br` (page aligned, caller's memory) as group `bgid`. Returns 0 or a
  /// negative errno. Owner thread only (SINGLE_ISSUER).
  int register_buf_ring(io_uring_buf_ring* br, unsigned entries, unsigned short bgid) noexcept {
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<unsigned long>(br);
    reg.ring_entries = entries;
    reg.bgid = bgid;
    return io_uring_register_buf_ring(&m_ring, &reg, 0);
  }
  int unregister_buf_ring(unsigned short bgid) noexcept { return io_uring_unregister_buf_ring(&m_ring, bgid); }

  [[nodiscard]] bool has_unsubmitted() const noexcept { return m_unsubmitted != 0; }
  [[nodiscard]] bool cq_ready() const noexcept { return io_uring_cq_ready(&m_ring) != 0; }
  [[nodiscard]] bool defer_taskrun() const noexcept { return m_defer_taskrun; }
  /// Set up with IORING_SETUP_TASKRUN_FLAG (the kernel flags completions waiting to be posted).
  [[nodiscard]] bool taskrun_flag() const noexcept { return m_taskrun_flag; }
  /// On an open DEFER_TASKRUN ring set up with TASKRUN_FLAG: whether completions wait to
  /// be posted by an enter (the kernel's IORING_SQ_TASKRUN, or a CQ overflow); false on
  /// other rings. A hint (IO_URING_READ_ONCE: a relaxed load of a word the kernel writes):
  /// a stale false is safe, since a waiting enter runs pending work before it would sleep
  /// and then does not sleep; a stale true costs one enter.
  [[nodiscard]] bool task_work_pending() const noexcept {
    return m_taskrun_flag &&
           (IO_URING_READ_ONCE(*m_ring.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
  }
  /// The converse, where the kernel can say it: true on an open DEFER_TASKRUN ring set up
  /// with TASKRUN_FLAG whose IORING_SQ_TASKRUN and CQ-overflow flags are clear, where an
  /// enter with nothing to submit would post no completion the CQ does not show already
  /// (every completion of such a ring is posted by task work that raises the flag, or
  /// straight into the CQ). False on other rings, where only an enter can tell. A hint
  /// like task_work_pending(): a stale true delays a completion until the next enter.
  [[nodiscard]] bool nothing_to_post() const noexcept { return m_taskrun_flag && !task_work_pending(); }
  [[nodiscard]] bool supports(unsigned opcode) const noexcept {
    return opcode < 256 && m_supported[opcode];
  }
  [[nodiscard]] int fd() const noexcept { return m_ring.ring_fd; }
  [[nodiscard]] std::uint64_t sqes_submitted() const noexcept { return m_sqes_submitted; }
  [[nodiscard]] std::uint64_t cqes_reaped() const noexcept { return m_cqes_reaped; }
  /// Calls of submit() and submit_and_wait(): each is one io_uring_enter, except the few
  /// liburing skips (nothing queued and nothing to poll, or a completion already there).
  [[nodiscard]] std::uint64_t enters() const noexcept { return m_enters; }

 private:
  io_uring m_ring{};
  bool m_open = false;
  bool m_defer_taskrun = false;
  bool m_taskrun_flag = false;  // set up with IORING_SETUP_TASKRUN_FLAG
  unsigned m_unsubmitted = 0;
  std::uint64_t m_sqes_submitted = 0;
  std::uint64_t m_cqes_reaped = 0;
  std::uint64_t m_enters = 0;
  bool m_supported[256] = {};
};

}  // namespace corio::detail
