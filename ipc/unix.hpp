// corio::ipc::unix_listener, unix_stream, unix_datagram, socketpair(), fd passing:
// Unix-domain sockets as awaitables.
//
// Concept: AF_UNIX sockets named by a filesystem path or a Linux abstract name
// (socket_address::unix_path / unix_abstract, or "@name" in parse()). unix_stream has the
// byte-stream I/O of stream_socket plus descriptor passing: send_fds / recv_fds carry
// SCM_RIGHTS control messages through IORING_OP_SENDMSG / IORING_OP_RECVMSG. Received
// descriptors are CLOEXEC (MSG_CMSG_CLOEXEC) and owned by the caller (owned_fd).
// A unix_listener bound to a path removes that path when it is destroyed (it created it);
// bind fails with EADDRINUSE if the path exists (remove a stale one yourself).
// unix_listener::accept() is one-shot and, like tcp_listener's, takes a queued connection
// with accept4(2) at once and goes through the ring only when none is queued; bind()
// makes the socket non-blocking for that (Linux 5.19+; see ipc/tcp.hpp: the same side
// effect, the same backlog default capped at net.core.somaxconn, the same cost).
// incoming(options) is the opt-in multishot
// unix_acceptor (ipc/acceptor.hpp, same protocol as tcp_listener's), closed when the
// listener is destroyed.
// Thread-safety: one owner per object; one read and one write may be in flight together.
// Cost: one SQE per operation (plus a task frame for connect / send_fds / recv_fds);
// accept: see ipc/tcp.hpp.
// Cancellation: every wait takes a std::stop_token and honours the inherited one
// (std::errc::operation_canceled). A cancelled recv_fds receives nothing; descriptors
// sent by a cancelled send_fds were either all sent or none.
// Errors: if more descriptors arrive than `fds` can hold, the kernel closes the extra
// ones and recv_fds reports truncated_fds = true.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <sys/socket.h>

#include <cstddef>
#include <limits>
#include <span>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include <corio/ipc/acceptor.hpp>
#include <corio/ipc/address.hpp>
#include <corio/ipc/detail/ops.hpp>
#include <corio/ipc/owned_fd.hpp>
#include <corio/ipc/socket.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// What recv_fds yields.
struct received_fds {
  std::size_t bytes = 0;           ///< data bytes (0 with no descriptors: end of stream)
  std::vector<owned_fd> fds;       ///< the descriptors received, in order
  bool truncated_fds = false;      ///< more descriptors were sent than max_fds (MSG_CTRUNC)
};

/// A connected Unix-domain stream socket: stream I/O plus descriptor passing and peer
/// credentials.
class unix_stream : public stream_socket {
 public:
  using stream_socket::stream_socket;

  /// Connects to a Unix path or abstract name. The address is copied into the task.
  [[nodiscard]] static task<result<unix_stream>> connect(socket_address addr, std::stop_token token = {});

  /// Sends `data` (at least one byte) with `fds` attached (at most 253). Yields the data
  /// bytes sent; the descriptors travel with the first byte.
  [[nodiscard]] task<result<std::size_t>> send_fds(std::span<const std::byte> data, std::span<const int> fds,
                                                   std::stop_token token = {}) const;
  /// Receives data into `buf` and up to `max_fds` descriptors.
  [[nodiscard]] task<result<received_fds>> recv_fds(std::span<std::byte> buf, std::size_t max_fds = 16,
                                                    std::stop_token token = {}) const;
  /// SO_PEERCRED: the peer's pid, uid and gid at connect time.
  [[nodiscard]] result<ucred> peer_credentials() const;
};

/// Accepted Unix-stream connections from one multishot accept (ipc/acceptor.hpp).
using unix_acceptor = basic_acceptor<unix_stream>;

/// A listening Unix-domain stream socket; a path it created is unlinked on destruction.
class unix_listener : public socket {
 public:
  unix_listener() noexcept = default;
  /// Takes over `other`'s socket, path and acceptors.
  unix_listener(unix_listener&& other) noexcept;
  /// Closes this listener (unlinking its path), then takes over `other`'s.
  unix_listener& operator=(unix_listener&& other) noexcept;
  ~unix_listener();

  /// socket + bind + listen on a path or abstract name. The default backlog asks for the
  /// most; the kernel caps it at net.core.somaxconn.
  [[nodiscard]] static result<unix_listener> bind(const socket_address& addr,
                                                  int backlog = std::numeric_limits<int>::max());

  /// The next connection (a queued one at once, else through the ring); yields
  /// result<unix_stream>.
  [[nodiscard]] auto accept(std::stop_token token = {}) const {
    return make_try_first(
        track(detail::accept<unix_stream>(fd(), [](int fd) -> result<unix_stream> { return unix_stream(fd); }, token)),
        detail::nowait_accept(fd()), fixed_try(m_direct), token);
  }

  /// Opt-in multishot accept: an acceptor whose accept() yields the next connection
  /// (ipc/acceptor.hpp). The listener must outlive it; its destructor closes it.
  [[nodiscard]] unix_acceptor incoming(const accept_options& options = {}) {
    return unix_acceptor::make(fd(), options, m_acceptors);
  }

 private:
  unix_listener(int fd, std::string path, bool direct) noexcept
      : socket(fd), m_path(std::move(path)), m_direct(direct) {}
  void remove_path() noexcept;
  std::string m_path;  // filesystem path to unlink on destruction (empty for abstract names)
  detail::acceptor_link m_acceptors;  // closed before the descriptor (members go first)
  bool m_direct = false;  // bind() made the socket non-blocking: accept() tries accept4 first
};

/// A Unix-domain datagram socket. A datagram longer than the buffer is cut, and recv_from
/// and recv report truncated = true (datagram_socket).
class unix_datagram : public datagram_socket {
 public:
  using datagram_socket::datagram_socket;

  /// A socket bound to a path or abstract name.
  [[nodiscard]] static result<unix_datagram> bind(const socket_address& addr);
  /// An unbound socket (it can send, and receive replies only on a connected pair).
  [[nodiscard]] static result<unix_datagram> open();
};

/// socketpair(AF_UNIX, SOCK_STREAM): two connected streams.
[[nodiscard]] result<std::pair<unix_stream, unix_stream>> socketpair();
/// socketpair(AF_UNIX, SOCK_DGRAM): two connected datagram sockets (message boundaries kept).
[[nodiscard]] result<std::pair<unix_datagram, unix_datagram>> datagram_pair();

}  // namespace corio::ipc
