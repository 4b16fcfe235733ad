// corio::ipc::owned_fd: the RAII owner of one file descriptor, base of every ipc handle.
//
// Concept: holds a descriptor and closes it on destruction or close(). Move-only.
// Closing while operations are in flight: the stream and pipe operations (read_some,
// write_some, accept, send_fds, ...) register themselves with their owned_fd while the
// kernel holds them. close() (or the destructor) with none in flight closes at once; with
// some in flight it cancels them first (each through its own worker's ring, whichever
// worker that is: they complete with std::errc::operation_canceled unless they had
// finished) and the last of them to complete closes the descriptor. So a peer sees the
// connection end (no pending read keeps the socket open), the descriptor number is not
// reused while an operation may still use it, and a pipe's writer gets EPIPE once the
// reader is closed. An operation awaited after its owned_fd was closed yields
// std::errc::bad_file_descriptor. (An awaitable must not outlive the handle that made
// it; awaiting it right away, as `co_await s.read_some(buf)` does, is always safe.)
// Thread-safety: one owner; close() and the destructor may run on any thread (a worker or
// not) while other tasks' operations are in flight, which is what the registration is for.
// An operation that read the descriptor just before a close() on another thread never
// runs on it: close() and an operation's registration settle on one atomic which of them
// came first (the operation then fails with bad_file_descriptor, or close() cancels it),
// even when it is the handle's first operation.
// Cost: an int and a pointer (a relaxed atomic load per fd(), a plain load on x86). The
// first operation allocates a small shared record (a mutex and a list head; one CAS
// installs it); each operation then takes its mutex twice (start and end), uncontended.
// close() with nothing in flight is one CAS and one close(2). The close(2) itself is
// synchronous (cheap for sockets and pipes; it blocks only with SO_LINGER set).
// Cancellation: nothing here waits.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <unistd.h>

#include <atomic>
#include <coroutine>
#include <mutex>
#include <system_error>
#include <utility>

#include <corio/runtime/io_op.hpp>
#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>

namespace corio::ipc {

namespace detail {

/// One operation in flight on an owned_fd (a link in its fd_ops list).
struct fd_op_link {
  fd_op_link* prev = nullptr;
  fd_op_link* next = nullptr;
  corio::port::cancellable* op = nullptr;
};

/// What an owned_fd shares with its operations. Created by the first operation; freed
/// when neither the owned_fd nor any operation object refers to it any more. A handle
/// closed (or released) before any operation made its record gets closed_record()
/// instead, so that an operation made later finds it closed.
class fd_ops {
 public:
  fd_ops() = default;
  fd_ops(const fd_ops&) = delete;
  fd_ops& operator=(const fd_ops&) = delete;

  /// The one record, shared by every handle closed before its first operation: closed
  /// from the start (nothing ever starts through it), never freed and not counted
  /// (acquire and release skip it); its ready hint is only read (no try runs through a
  /// closed record). Thread-safety: any thread, also during static initialisation and
  /// destruction (it is constant-initialised).
  static fd_ops* closed_record() noexcept;

  /// One more holder (the owned_fd, or an operation object).
  void acquire() noexcept {
    if (m_shared) {
      return;  // closed_record(): not counted
    }
    // relaxed: a holder already exists, so the record cannot go meanwhile (as shared_ptr).
    m_refs.fetch_add(1, std::memory_order_relaxed);
  }
  /// One holder fewer; the last frees the record.
  void release() noexcept {
    if (m_shared) {
      return;  // closed_record(): never freed
    }
    // acq_rel: the last holder must see every other holder's writes before deleting.
    if (m_refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete this;
    }
  }

  /// Starts an operation with `start()` (its await_suspend) unless the descriptor was
  /// closed; links it while the kernel holds it. Returns false when closed (nothing
  /// started), else sets `suspended` to what start() returned (false: it finished at
  /// once and was not linked).
  template <class Start>
  bool begin(fd_op_link& link, corio::port::cancellable* op, Start&& start, bool& suspended) {
    std::lock_guard lock(m_mutex);
    if (m_closed) {
      return false;
    }
    // The lock is held across start(): a close() cannot slip between the check above and
    // the SQE naming this descriptor.
    suspended = start();
    if (suspended) {
      link.op = op;
      link.prev = nullptr;
      link.next = m_head;
      if (m_head != nullptr) {
        m_head->prev = &link;
      }
      m_head = &link;
    }
    return true;
  }

  /// Runs `attempt()` — a synchronous call on the descriptor that cannot block (a
  /// non-blocking accept4) — unless the descriptor was closed. Returns false when closed
  /// (nothing ran). The lock is held across the call, as in begin(): a close() on another
  /// thread cannot hand the number to a new descriptor while it runs.
  template <class Attempt>
  bool run_unless_closed(Attempt&& attempt) {
    std::lock_guard lock(m_mutex);
    if (m_closed) {
      return false;
    }
    attempt();
    return true;
  }

  /// The operation linked by begin() has completed (or its frame is being destroyed);
  /// the last one after a close() closes the descriptor.
  void end(fd_op_link& link) noexcept;

  /// Owner: from now on nothing starts on the descriptor; `fd` (if >= 0) is closed now if
  /// nothing is in flight, else what is in flight is cancelled and the last of it to
  /// complete closes `fd`.
  void close(int fd) noexcept;

  /// Whether operations that try a non-blocking syscall first should (try_first_op).
  /// Kept here, not in the handle: an operation in flight updates it on completion, and
  /// it holds a reference to this record, not to the handle.
  ready_hint& hint() noexcept { return m_hint; }

 private:
  struct closed_tag {};
  constexpr explicit fd_ops(closed_tag) noexcept : m_shared(true), m_closed(true) {}

  ready_hint m_hint;
  std::atomic<int> m_refs{1};
  const bool m_shared = false;  // closed_record(), set at construction, never written
  std::mutex m_mutex;
  fd_op_link* m_head = nullptr;  // operations in flight
  bool m_closed = false;
  int m_fd = -1;  // to close when the last operation in flight completes
};

/// An operation that registers with an fd_ops while in flight. Wraps any io_op-based
/// awaitable (read, recv, accept, sendmsg, ...) and yields what it yields.
template <class Op>
class [[nodiscard]] tracked_op {
 public:
  tracked_op(fd_ops* ops, Op op) : m_ops(ops), m_op(std::move(op)) { m_ops->acquire(); }
  tracked_op(tracked_op&& other) noexcept : m_ops(std::exchange(other.m_ops, nullptr)), m_op(std::move(other.m_op)) {}
  tracked_op(const tracked_op&) = delete;
  tracked_op& operator=(const tracked_op&) = delete;
  tracked_op& operator=(tracked_op&&) = delete;
  ~tracked_op() {
    if (m_ops == nullptr) {
      return;  // moved from
    }
    if (m_linked) {
      m_ops->end(m_link);  // destroyed while suspended (runtime shutdown, after its drain)
    }
    m_ops->release();
  }

  bool await_ready() noexcept { return false; }
  /// Runs `attempt()` now (a synchronous, non-blocking try of the same operation) unless
  /// the descriptor was closed; false when closed. For awaiters with a fast path that
  /// needs no SQE (listener accept()).
  template <class Attempt>
  bool attempt_now(Attempt&& attempt) {
    return m_ops->run_unless_closed(std::forward<Attempt>(attempt));
  }

  /// The descriptor's ready hint (try_first_op, runtime/io_op.hpp). It lives in the
  /// record this operation holds a reference to, so it stays valid for the operation's
  /// whole life even when the handle is destroyed or moved meanwhile.
  [[nodiscard]] ready_hint* hint() const noexcept { return &m_ops->hint();
  }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    bool suspended = false;
    if (!m_ops->begin(m_link, &m_op, [&] { return m_op.await_suspend(h); }, suspended)) {
      m_closed = true;
      return false;
    }
    m_linked = suspended;
    return suspended;
  }
  [[nodiscard]] auto await_resume() noexcept -> decltype(std::declval<Op&>().await_resume()) {
    if (m_closed) {
      return unexpected(std::make_error_code(std::errc::bad_file_descriptor));
    }
    auto r = m_op.await_resume();
    if (m_linked) {
      m_linked = false;
      m_ops->end(m_link);
    }
    return r;
  }

 private:
  fd_ops* m_ops;
  Op m_op;
  fd_op_link m_link;
  bool m_linked = false;
  bool m_closed = false;
};

}  // namespace detail

/// Owns a file descriptor and closes it on destruction (after cancelling the operations
/// in flight on it). Move-only; the base of corio's sockets, pipes and queues.
class owned_fd {
 public:
  /// Empty: no descriptor.
  owned_fd() noexcept = default;
  /// Takes ownership of `fd` (-1 for none).
  explicit owned_fd(int fd) noexcept : m_fd(fd) {}
  /// Takes over `other`'s descriptor (and its operations' record); `other` is empty afterwards.
  owned_fd(owned_fd&& other) noexcept
      : m_fd(other.m_fd.exchange(-1, std::memory_order_relaxed)),
        m_ops(other.m_ops.exchange(nullptr, std::memory_order_relaxed)) {}
  /// Closes the descriptor held so far (if any), then takes over `other`'s.
  owned_fd& operator=(owned_fd&& other) noexcept {
    if (this != &other) {
      close();
      drop_ops();
      m_fd.store(other.m_fd.exchange(-1, std::memory_order_relaxed), std::memory_order_relaxed);
      // relaxed: moving is the single owner's business (no operation starts meanwhile).
      m_ops.store(other.m_ops.exchange(nullptr, std::memory_order_relaxed), std::memory_order_relaxed);
    }
    return *this;
  }
  owned_fd(const owned_fd&) = delete;
  owned_fd& operator=(const owned_fd&) = delete;
  /// close().
  ~owned_fd() {
    close();
    drop_ops();
  }

  /// The descriptor (-1 when empty). Ownership stays here.
  [[nodiscard]] int fd() const noexcept { return m_fd.load(std::memory_order_relaxed); }
  /// True while a descriptor is held.
  [[nodiscard]] bool is_open() const noexcept { return fd() >= 0; }
  /// is_open().
  explicit operator bool() const noexcept { return is_open(); }
  /// Gives up ownership and returns the descriptor; operations in flight are cancelled
  /// (the descriptor stays open) and none starts on it afterwards through this handle.
  [[nodiscard]] int release() noexcept {
    // relaxed: which operations may still start is decided by close_ops() (m_ops).
    int fd = m_fd.exchange(-1, std::memory_order_relaxed);
    if (fd >= 0) {
      close_ops(-1);
    }
    return fd;
  }
  /// Closes the descriptor (idempotent): at once if no operation is in flight, else
  /// after cancelling them (see the header comment).
  void close() noexcept {
    // relaxed: only one caller gets the descriptor; close_ops() orders the rest.
    int fd = m_fd.exchange(-1, std::memory_order_relaxed);
    if (fd >= 0) {
      close_ops(fd);
    }
  }

 protected:
  /// Wraps an operation on fd() so that close() can cancel it while it is in flight.
  template <class Op>
  detail::tracked_op<Op> track(Op op) const {
    return detail::tracked_op<Op>(ops(), std::move(op));
  }

 private:
  // The shared record, created by the first operation (closed_record() after a close).
  detail::fd_ops* ops() const;
  // Marks the handle's operations closed and closes `fd` (-1: none) once none is in flight.
  void close_ops(int fd) noexcept;
  void drop_ops() noexcept {
    if (detail::fd_ops* ops = m_ops.exchange(nullptr, std::memory_order_acq_rel)) {
      ops->release();
    }
  }

  // Atomic so that close() may run while another task's operation reads fd() (relaxed:
  // whether that operation may still start is decided through m_ops, then under the
  // fd_ops mutex).
  std::atomic<int> m_fd{-1};
  // Created lazily by (const) operations, or set to closed_record() by a close() or
  // release() that came first: two tasks, or an operation and a close(), may race to
  // set it from null, and one CAS decides (ops(), close_ops()).
  mutable std::atomic<detail::fd_ops*> m_ops{nullptr};
};

}  // namespace corio::ipc
