// Private: io_uring socket and pipe operations as awaitables built on corio::io_op.
//
// mapped_op<T, Prep, Map> is an io_op whose result<int> is turned into result<T> by Map
// (e.g. an accepted fd into a tcp_stream). Prep lambdas that point the SQE at state
// (msghdr, sockaddr) keep that state inside themselves: the lambda lives in the io_op, in
// the awaiting frame, until the CQE arrives (runtime/io_op.hpp, "Ownership").
// nowait_rw is the syscall that pipe reads and writes try before the ring, nowait_accept
// the one that listeners' accept() tries, nowait_sendmsg a connection's send's
// (try_first_op, runtime/io_op.hpp).
#pragma once

#include <liburing.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <span>
#include <stop_token>
#include <utility>

#include <corio/runtime/io.hpp>
#include <corio/runtime/io_op.hpp>
#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>

namespace corio::ipc::detail {

template <class T, class Prep, class Map>
class [[nodiscard]] mapped_op : public io_op<Prep> {
 public:
  mapped_op(Prep prep, Map map, std::stop_token token)
      : io_op<Prep>(std::move(prep), std::move(token)), m_map(std::move(map)) {}
  mapped_op(mapped_op&& other) noexcept : io_op<Prep>(std::move(other)), m_map(std::move(other.m_map)) {}

  [[nodiscard]] result<T> await_resume() noexcept {
    result<int> r = io_op<Prep>::await_resume();
    if (!r) {
      return unexpected(r.error());
    }
    return m_map(*r);
  }

 private:
  Map m_map;
};

template <class T, class Prep, class Map>
mapped_op<T, Prep, Map> make_mapped(Prep prep, Map map, std::stop_token token) {
  return mapped_op<T, Prep, Map>(std::move(prep), std::move(map), std::move(token));
}

/// recv(2) through the ring; yields bytes (0 = end of stream).
inline auto recv(int fd, std::span<std::byte> buf, int flags, std::stop_token token) {
  return corio::io::detail::make_sized(
      [fd, buf, flags](io_uring_sqe* sqe) { io_uring_prep_recv(sqe, fd, buf.data(), buf.size(), flags); },
      std::move(token));
}

/// send(2) through the ring with MSG_NOSIGNAL: a closed peer gives EPIPE, never SIGPIPE.
inline auto send(int fd, std::span<const std::byte> buf, int flags, std::stop_token token) {
  return corio::io::detail::make_sized(
      [fd, buf, flags](io_uring_sqe* sqe) {
        io_uring_prep_send(sqe, fd, buf.data(), buf.size(), flags | MSG_NOSIGNAL);
      },
      std::move(token));
}

/// sendmsg/recvmsg with only an iovec array (vectored socket I/O, MSG_NOSIGNAL on send).
inline auto sendv(int fd, std::span<const iovec> iov, std::stop_token token) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov.data());
  msg.msg_iovlen = iov.size();
  return corio::io::detail::make_sized(
      [fd, msg](io_uring_sqe* sqe) mutable { io_uring_prep_sendmsg(sqe, fd, &msg, MSG_NOSIGNAL); },
      std::move(token));
}
inline auto recvv(int fd, std::span<const iovec> iov, std::stop_token token) {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov.data());
  msg.msg_iovlen = iov.size();
  return corio::io::detail::make_sized(
      [fd, msg](io_uring_sqe* sqe) mutable { io_uring_prep_recvmsg(sqe, fd, &msg, 0); }, std::move(token));
}

/// sendmsg/recvmsg with a caller-owned msghdr (which must outlive the await).
inline auto sendmsg(int fd, const msghdr* msg, int flags, std::stop_token token) {
  return corio::io::detail::make_sized(
      [fd, msg, flags](io_uring_sqe* sqe) { io_uring_prep_sendmsg(sqe, fd, msg, flags | MSG_NOSIGNAL); },
      std::move(token));
}
inline auto recvmsg(int fd, msghdr* msg, int flags, std::stop_token token) {
  return corio::io::detail::make_sized(
      [fd, msg, flags](io_uring_sqe* sqe) { io_uring_prep_recvmsg(sqe, fd, msg, flags); }, std::move(token));
}

/// readv/writev for pipes (no SIGPIPE concern there: workers block SIGPIPE and pipes give EPIPE).
inline auto readv(int fd, std::span<const iovec> iov, std::stop_token token) {
  return corio::io::detail::make_sized(
      [fd, iov](io_uring_sqe* sqe) {
        io_uring_prep_readv(sqe, fd, iov.data(), static_cast<unsigned>(iov.size()), static_cast<__u64>(-1));
      },
      std::move(token));
}
inline auto writev(int fd, std::span<const iovec> iov, std::stop_token token) {
  return corio::io::detail::make_sized(
      [fd, iov](io_uring_sqe* sqe) {
        io_uring_prep_writev(sqe, fd, iov.data(), static_cast<unsigned>(iov.size()), static_cast<__u64>(-1));
      },
      std::move(token));
}

/// connect(2) through the ring; `addr` must outlive the await.
inline auto connect(int fd, const sockaddr* addr, socklen_t len, std::stop_token token) {
  return io_op([fd, addr, len](io_uring_sqe* sqe) { io_uring_prep_connect(sqe, fd, addr, len); },
               std::move(token));
}

/// accept4(2) through the ring with SOCK_CLOEXEC; Map turns the fd into a stream type.
template <class T, class Map>
auto accept(int fd, Map map, std::stop_token token) {
  return make_mapped<T>(
      [fd](io_uring_sqe* sqe) { io_uring_prep_accept(sqe, fd, nullptr, nullptr, SOCK_CLOEXEC); }, std::move(map),
      std::move(token));
}

/// Which way a nowait_rw moves bytes: out of the descriptor (preadv2) or into it (pwritev2).
enum class io_direction { read, write };

/// The try of a pipe read (io_direction::read) or write (write) before the ring, for
/// try_first_op: one preadv2/pwritev2 with RWF_NOWAIT at the file position, which takes
/// or gives what the pipe holds or has room for and fails with EAGAIN instead of
/// blocking (the descriptor may be a blocking one). Kernels or files without RWF_NOWAIT
/// support fail with EOPNOTSUPP; try_first_op then uses the ring for good. Returns the
/// bytes moved or a negative errno. A pipe write with no reader gives EPIPE (workers
/// block SIGPIPE, as for the ring's write).
template <io_direction Direction>
class nowait_rw {
 public:
  /// One buffer (copied into this object: it may move).
  nowait_rw(int fd, void* data, std::size_t size) noexcept : m_fd(fd), m_one{data, size} {}
  /// The caller's iovec array, which must outlive the await.
  nowait_rw(int fd, std::span<const iovec> iov) noexcept
      : m_fd(fd), m_iov(iov.data()), m_count(static_cast<int>(iov.size())) {}

  int operator()() noexcept {
    const iovec* iov = m_iov != nullptr ? m_iov : &m_one;
    ssize_t n = Direction == io_direction::write ? ::pwritev2(m_fd, iov, m_count, -1, RWF_NOWAIT)
                                                 : ::preadv2(m_fd, iov, m_count, -1, RWF_NOWAIT);
    return n >= 0 ? static_cast<int>(n) : -errno;
  }

 private:
  int m_fd;
  iovec m_one{};
  const iovec* m_iov = nullptr;
  int m_count = 1;
};

/// Whether listeners made by bind() are non-blocking and accept directly first
/// (nowait_accept): where the kernel's io_uring accept copes with a non-blocking listener
/// (Linux 5.19+, the release that brought multishot accept). One load after the first call.
inline bool direct_accept_supported() noexcept { return port::features().multishot_accept; }

/// The try of a listener's accept() before the ring, for try_first_op with fixed_try
/// (tcp_listener and unix_listener): one accept4(2) with the ring's accept's flags (the
/// connection is a blocking, close-on-exec socket). Returns the descriptor or a negative
/// errno.
/// Why: a burst of connects queues many connections at once. Through the ring alone, each
/// one costs an SQE, a CQE and a resumption of the accepting task at the back of its
/// worker's run queue, behind every other runnable task (in a server, the connections
/// accepted so far), so one accept loop took one connection per pass over the queue and
/// fell behind the burst (issue 16 item 15: 795 ms against 497 ms for the multishot
/// acceptor with 1,500 clients). A listener made by bind() is non-blocking where
/// direct_accept_supported() (the ring's accept then polls internally), so accept4
/// either takes a queued connection without suspending or fails with EAGAIN, and only
/// then does the accept go through the ring and wait. A failed try costs one syscall, so
/// there is no ready hint: fixed_try tries every time on such a listener, never on a
/// blocking one (a descriptor of the caller's). try_first_op charges the cooperative
/// budget for each connection taken at once, runs the try under the descriptor's close
/// lock (tracked_op::attempt_now: a close() on another thread never lets it touch a
/// reused number; a closed listener goes to the ring path, which reports
/// bad_file_descriptor), and leaves stops and off-worker use to the ring path
/// (operation_canceled, errc::no_runtime).
class nowait_accept {
 public:
  /// `listen_fd`: the listening socket.
  explicit nowait_accept(int listen_fd) noexcept : m_fd(listen_fd) {}

  int operator()() const noexcept {
    int fd = ::accept4(m_fd, nullptr, nullptr, SOCK_CLOEXEC);
    return fd >= 0 ? fd : -errno;
  }

 private:
  int m_fd;
};
/// The try of a connection's send before the ring, for try_first_op with fixed_try
/// (ipc/connection.cpp): one sendmsg(2) with MSG_DONTWAIT | MSG_NOSIGNAL, the flags of the
/// ring's sendmsg below. Returns the bytes sent (at most MAX_RW_COUNT, so an int) or a
/// negative errno; EAGAIN when the socket buffer is full.
/// Why: the send cannot block, so through the ring it only added a suspension, an SQE and
/// a completion to reap, and in request/reply traffic that completion, reaped by the
/// worker's next find_work entry, kept the worker from handing its entry to the park
/// (runtime/maintenance.cpp): the job server's kernel entries per job at one client fell
/// from 5.2-6.8 io_uring_enter to 2.8 plus 2 sendmsg (README, the job server).
class nowait_sendmsg {
 public:
  /// `msg` must outlive the await.
  nowait_sendmsg(int fd, const msghdr* msg) noexcept : m_fd(fd), m_msg(msg) {}

  int operator()() noexcept {
    ssize_t n = ::sendmsg(m_fd, m_msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    return n >= 0 ? static_cast<int>(n) : -errno;
  }

 private:
  int m_fd;
  const msghdr* m_msg;
};

/// The bytes an iovec array asks for (try_first_op's `want`).
inline std::size_t iov_bytes(std::span<const iovec> iov) noexcept {
  std::size_t n = 0;
  for (const iovec& v : iov) {
    n += v.iov_len;
  }
  return n;
}

}  // namespace corio::ipc::detail
