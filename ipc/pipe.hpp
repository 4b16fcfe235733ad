// corio::ipc::pipe(), pipe_reader, pipe_writer and FIFOs: anonymous and named pipes as
// awaitables.
//
// Concept: pipe() makes an O_CLOEXEC pipe and returns its two ends. A read or write first
// tries preadv2/pwritev2 with RWF_NOWAIT (which never blocks) and completes at once when
// the pipe had data or room; only when it had none (EAGAIN) does it go through
// IORING_OP_READ / IORING_OP_WRITE on the awaiting worker's ring and wait (try_first_op,
// runtime/io_op.hpp). Each end keeps a ready hint (in its operations' record, which an
// operation in flight holds a reference to, so a completion never touches a destroyed
// or moved handle): after an EAGAIN it uses the ring directly until a ring completion
// moves every byte asked for; a descriptor that refuses
// RWF_NOWAIT (EOPNOTSUPP: older kernels' pipes, some non-pipe files handed to
// these classes) uses the ring for good. A loop on an always-ready pipe still yields to
// the worker's other tasks when its cooperative budget is spent. A write to a pipe whose
// reader is gone returns EPIPE (corio's workers block SIGPIPE, runtime/worker.cpp). A
// read returns 0 at end of file (every writer closed).
// FIFOs: make_fifo() is mkfifo(3). Opening a FIFO blocks until the other side opens it,
// so open_fifo_reader / open_fifo_writer run open(2) on the runtime's blocking pool
// (runtime/blocking.hpp), never on a worker. (IORING_OP_OPENAT does not fit: the kernel
// first tries the open with O_NONBLOCK, which returns a reader at once with no writer
// and fails a writer with ENXIO when no reader is there yet.)
// Thread-safety: one owner per end; one read and one write may be in flight together.
// Closing an end while a task's read or write is in flight on it cancels that operation
// (operation_canceled) before the descriptor is closed (ipc/owned_fd.hpp): a writer then
// gets EPIPE, and a queued read never reaches a descriptor that reuses the number. The
// syscall tried first runs under the same close lock: it never touches a reused number
// either (a closed end goes to the ring path, which reports bad_file_descriptor).
// Cost: with data or room at hand, one preadv2/pwritev2 (and the fd_ops mutex, taken
// uncontended) and no suspension; otherwise one failed syscall (only while the hint is on)
// plus one SQE and one CQE. No allocation; read_exact/write_all add a task frame.
// Back-pressure: a write completes when the pipe buffer (64 KiB by default, see
// set_capacity) took the bytes; with a reader that stops, write_all stays suspended.
// Cancellation: every wait takes a std::stop_token and honours the inherited one
// (std::errc::operation_canceled). A cancelled FIFO open returns operation_canceled at
// once; in the background, a short-lived helper thread (not the thread that requested
// the stop) opens the other end with O_NONBLOCK (which releases the blocked open(2)) and
// closes both, retrying for up to ~100 ms until the blocked open returns; an fd that the
// open still produced is closed. Limit: if the blocked open(2) cannot be released that
// way (the path was unlinked or replaced meanwhile), its blocking-pool thread stays in
// open(2) until some process opens the other end of that FIFO (the awaiter is not held).
// Side effect: a peer process blocked opening the same FIFO at that moment is released
// too (and sees end of file or EPIPE at once).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <fcntl.h>
#include <sys/types.h>

#include <cstddef>
#include <span>
#include <stop_token>
#include <string>

#include <corio/ipc/detail/ops.hpp>
#include <corio/ipc/owned_fd.hpp>
#include <corio/runtime/io.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// The read end of a pipe or FIFO, with awaitable reads.
class pipe_reader : public owned_fd {
 public:
  using owned_fd::owned_fd;

  /// Reads up to buf.size() bytes; yields result<std::size_t>, 0 at end of file.
  [[nodiscard]] auto read_some(std::span<std::byte> buf, std::stop_token token = {}) const {
    // The ring operation copies the token before the last argument moves it (the
    // order of a call's arguments is unspecified).
    auto ring = track(corio::io::read(fd(), buf, -1, token));
    ready_hint* hint = ring.hint();  // before `ring` is moved into the operation
    return make_try_first(std::move(ring), detail::nowait_rw<detail::io_direction::read>(fd(), buf.data(), buf.size()),
                          hinted_try(hint, buf.size()), std::move(token));
  }
  /// Vectored read (readv); yields result<std::size_t>. The iovec array must outlive the await.
  [[nodiscard]] auto readv(std::span<const iovec> iov, std::stop_token token = {}) const {
    // Made first: it copies the token that the last argument moves (see read_some).
    auto ring = track(detail::readv(fd(), iov, token));
    ready_hint* hint = ring.hint();  // before `ring` is moved into the operation
    return make_try_first(std::move(ring), detail::nowait_rw<detail::io_direction::read>(fd(), iov),
                          hinted_try(hint, detail::iov_bytes(iov)), std::move(token));
  }
  /// Reads exactly buf.size() bytes; corio::errc::closed if the pipe ends first.
  [[nodiscard]] task<result<void>> read_exact(std::span<std::byte> buf, std::stop_token token = {}) const;
};

/// The write end of a pipe or FIFO, with awaitable writes.
class pipe_writer : public owned_fd {
 public:
  using owned_fd::owned_fd;

  /// Writes up to buf.size() bytes (all of them if <= PIPE_BUF = 4096, atomically).
  [[nodiscard]] auto write_some(std::span<const std::byte> buf, std::stop_token token = {}) const {
    // Made first: it copies the token that the last argument moves (see read_some).
    auto ring = track(corio::io::write(fd(), buf, -1, token));
    ready_hint* hint = ring.hint();  // before `ring` is moved into the operation
    auto* data = const_cast<std::byte*>(buf.data());  // pwritev2's iovec is not const
    return make_try_first(std::move(ring), detail::nowait_rw<detail::io_direction::write>(fd(), data, buf.size()),
                          hinted_try(hint, buf.size()), std::move(token));
  }
  /// Vectored write (writev); yields result<std::size_t>. The iovec array must outlive the await.
  [[nodiscard]] auto writev(std::span<const iovec> iov, std::stop_token token = {}) const {
    // Made first: it copies the token that the last argument moves (see read_some).
    auto ring = track(detail::writev(fd(), iov, token));
    ready_hint* hint = ring.hint();  // before `ring` is moved into the operation
    return make_try_first(std::move(ring), detail::nowait_rw<detail::io_direction::write>(fd(), iov),
                          hinted_try(hint, detail::iov_bytes(iov)), std::move(token));
  }
  /// Writes all of `buf` (several writes if the pipe takes less at a time).
  [[nodiscard]] task<result<void>> write_all(std::span<const std::byte> buf, std::stop_token token = {}) const;
  /// F_SETPIPE_SZ: the pipe's buffer size (rounded up by the kernel); yields the new size.
  result<int> set_capacity(int bytes) const;
};

/// Both ends of a new pipe (pipe()).
struct pipe_pair {
  /// The read end.
  pipe_reader reader;
  /// The write end.
  pipe_writer writer;
};

/// pipe2(O_CLOEXEC).
[[nodiscard]] result<pipe_pair> pipe();

/// mkfifo(path, mode). EEXIST if the path exists.
result<void> make_fifo(const std::string& path, mode_t mode = 0600);

/// Opens a FIFO for reading; completes when a writer opens it (see the header comment).
[[nodiscard]] task<result<pipe_reader>> open_fifo_reader(std::string path, std::stop_token token = {});
/// Opens a FIFO for writing; completes when a reader opens it.
[[nodiscard]] task<result<pipe_writer>> open_fifo_writer(std::string path, std::stop_token token = {});

}  // namespace corio::ipc
