// corio::ipc::socket, stream_socket, datagram_socket: the shared base of every socket type.
//
// Concept: `socket` owns a socket descriptor (SOCK_CLOEXEC) and offers options and
// addresses; `stream_socket` adds byte-stream I/O (TCP and Unix stream), `datagram_socket`
// message I/O (UDP and Unix datagram). Every wait is an io_uring operation on the awaiting
// worker's ring (runtime/io_op.hpp): recv, send, sendmsg, recvmsg. Sends use MSG_NOSIGNAL:
// writing to a closed peer yields EPIPE or ECONNRESET, never SIGPIPE.
// Thread-safety: one owner per socket object. One read and one write may be in flight at
// once (from different tasks); two concurrent reads (or writes) interleave their bytes.
// Closing or destroying a socket while other tasks' operations are in flight cancels
// them first (operation_canceled) and closes the descriptor after the last: the peer sees
// the end and the number is not reused under them (ipc/owned_fd.hpp).
// Cost: read_some / write_some / send / recv are one SQE + one CQE and no allocation;
// read_exact / write_all / send_to / recv_from are a task (one recycled frame) around them.
// Back-pressure: a write completes only when the kernel accepted the bytes (socket send
// buffer); with a peer that stops reading, write_all stays suspended — nothing is buffered
// in user space.
// Cancellation: every wait takes an optional std::stop_token and honours the token inherited
// from its task (when_any, timeout). A cancelled wait returns std::errc::operation_canceled;
// a cancelled read_some, readv or recv loses no data (it read nothing); a cancelled
// read_exact may have consumed a prefix, which is in buf but not reported, and a
// cancelled write_all or writev_all may have sent a prefix (either way the stream
// position is then unknown: close the connection).
// Options and addresses are synchronous system calls (they never block).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <span>
#include <stop_token>

#include <corio/ipc/address.hpp>
#include <corio/ipc/detail/ops.hpp>
#include <corio/ipc/owned_fd.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

class stream_receiver;
struct receive_options;

/// A socket descriptor with its options; the base of every corio socket.
class socket : public owned_fd {
 public:
  using owned_fd::owned_fd;

  /// A new socket(domain, type | SOCK_CLOEXEC, protocol).
  [[nodiscard]] static result<socket> open(int domain, int type, int protocol = 0);

  /// getsockname(2) / getpeername(2).
  [[nodiscard]] result<socket_address> local_address() const;
  /// getpeername(2): the connected peer's address.
  [[nodiscard]] result<socket_address> peer_address() const;

  /// setsockopt(2) / getsockopt(2) with an int value.
  result<void> set_option(int level, int name, int value);
  /// getsockopt(2) of an int option.
  [[nodiscard]] result<int> option(int level, int name) const;

  /// SO_REUSEADDR.
  result<void> set_reuse_address(bool on) { return set_option(SOL_SOCKET, SO_REUSEADDR, on ? 1 : 0); }
  /// SO_KEEPALIVE: probe an idle connection.
  result<void> set_keepalive(bool on) { return set_option(SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0); }
  /// SO_SNDBUF / SO_RCVBUF (the kernel doubles the value and applies its limits).
  result<void> set_send_buffer_size(int bytes) { return set_option(SOL_SOCKET, SO_SNDBUF, bytes); }
  /// SO_RCVBUF (the kernel doubles the value and applies its limits).
  result<void> set_recv_buffer_size(int bytes) { return set_option(SOL_SOCKET, SO_RCVBUF, bytes); }
  /// SO_SNDBUF as the kernel applied it.
  [[nodiscard]] result<int> send_buffer_size() const { return option(SOL_SOCKET, SO_SNDBUF); }
  /// SO_RCVBUF as the kernel applied it.
  [[nodiscard]] result<int> recv_buffer_size() const { return option(SOL_SOCKET, SO_RCVBUF); }
  /// The pending error (SO_ERROR), cleared by reading it.
  [[nodiscard]] result<int> pending_error() const { return option(SOL_SOCKET, SO_ERROR); }
  /// SO_LINGER with a zero timeout: close() then resets the connection (RST).
  result<void> set_linger_reset();
};

/// Byte-stream I/O shared by tcp_stream and unix_stream.
class stream_socket : public socket {
 public:
  using socket::socket;

  /// Reads up to buf.size() bytes; yields result<std::size_t>, 0 at end of stream.
  [[nodiscard]] auto read_some(std::span<std::byte> buf, std::stop_token token = {}) const {
    return track(detail::recv(fd(), buf, 0, std::move(token)));
  }
  /// Writes up to buf.size() bytes; yields result<std::size_t> (bytes accepted).
  [[nodiscard]] auto write_some(std::span<const std::byte> buf, std::stop_token token = {}) const {
    return track(detail::send(fd(), buf, 0, std::move(token)));
  }
  /// Vectored read / write (recvmsg / sendmsg); the iovec array must outlive the await.
  [[nodiscard]] auto readv(std::span<const iovec> iov, std::stop_token token = {}) const {
    return track(detail::recvv(fd(), iov, std::move(token)));
  }
  /// Vectored write (sendmsg); yields result<std::size_t>.
  [[nodiscard]] auto writev(std::span<const iovec> iov, std::stop_token token = {}) const {
    return track(detail::sendv(fd(), iov, std::move(token)));
  }
  /// Reads exactly buf.size() bytes. Errors: corio::errc::closed if the stream ends first,
  /// the OS error, or operation_canceled; on any error the bytes read so far are in buf
  /// (a prefix of unreported length, gone from the stream).
  [[nodiscard]] task<result<void>> read_exact(std::span<std::byte> buf, std::stop_token token = {}) const;
  /// Writes all of buf (several sends if the kernel takes less at a time).
  [[nodiscard]] task<result<void>> write_all(std::span<const std::byte> buf, std::stop_token token = {}) const;
  /// Writes all of the iovecs (sendmsg, at most IOV_MAX iovecs per call, as many calls as
  /// needed; the array is copied, the buffers are not).
  [[nodiscard]] task<result<void>> writev_all(std::span<const iovec> iov, std::stop_token token = {}) const;
  /// An opt-in receiver reading this socket into kernel-selected buffers (multishot recv
  /// on a provided-buffer ring; ipc/receiver.hpp). The socket must outlive it. Include
  /// <corio/ipc/receiver.hpp> to use it. Errors: ENOMEM when its buffers cannot be mapped.
  [[nodiscard]] result<stream_receiver> receiver() const;
  /// receiver() with explicit buffer sizes and counts.
  [[nodiscard]] result<stream_receiver> receiver(const receive_options& options) const;
  /// shutdown(2): SHUT_RD, SHUT_WR (half-close: the peer reads end of stream) or SHUT_RDWR.
  result<void> shutdown(int how = SHUT_WR) const;
};

/// What recv_from and recv yield.
struct datagram {
  std::size_t size = 0;      ///< bytes stored in the buffer
  socket_address from;       ///< the sender (empty for an unnamed Unix socket; recv leaves it empty)
  bool truncated = false;    ///< the datagram was longer than the buffer (MSG_TRUNC)
};

/// Message I/O shared by udp_socket and unix_datagram.
class datagram_socket : public socket {
 public:
  using socket::socket;

  /// bind(2) (synchronous).
  result<void> bind(const socket_address& addr) const;
  /// connect(2) for a datagram socket: sets the default destination and filters sources;
  /// synchronous (it sends nothing).
  result<void> connect(const socket_address& addr) const;
  /// Sends one datagram on a connected socket; yields result<std::size_t> (bytes sent).
  [[nodiscard]] auto send(std::span<const std::byte> buf, std::stop_token token = {}) const {
    return track(detail::send(fd(), buf, 0, std::move(token)));
  }
  /// Receives one datagram on a connected socket; yields result<datagram>: size is the bytes
  /// stored (at most buf.size()) and truncated says, as for recv_from, that the datagram was
  /// longer and its rest was discarded; from is left empty (the peer is remote_address()).
  /// One recv with MSG_TRUNC, which returns the datagram's full length.
  [[nodiscard]] auto recv(std::span<std::byte> buf, std::stop_token token = {}) const {
    return track(detail::make_mapped<datagram>(
        [fd = fd(), buf](io_uring_sqe* sqe) { io_uring_prep_recv(sqe, fd, buf.data(), buf.size(), MSG_TRUNC); },
        [capacity = buf.size()](int length) {
          datagram d;
          d.size = std::min(static_cast<std::size_t>(length), capacity);
          d.truncated = static_cast<std::size_t>(length) > capacity;
          return d;
        },
        std::move(token)));
  }
  /// sendmsg with a destination; yields bytes sent.
  [[nodiscard]] task<result<std::size_t>> send_to(std::span<const std::byte> buf, socket_address to,
                                                  std::stop_token token = {}) const;
  /// recvmsg with the sender's address.
  [[nodiscard]] task<result<datagram>> recv_from(std::span<std::byte> buf, std::stop_token token = {}) const;
};

namespace detail {
/// A socket(2) descriptor with SOCK_CLOEXEC, or the OS error.
result<int> open_socket(int domain, int type, int protocol);
/// bind + listen for listeners; removes nothing.
result<void> bind_listen(int fd, const socket_address& addr, int backlog);
}  // namespace detail

}  // namespace corio::ipc
