// corio::ipc::tcp_listener and tcp_stream: TCP over IPv4 and IPv6 as awaitables.
//
// Concept: tcp_listener binds and listens (synchronously: neither call blocks) and
// accepts connections with IORING_OP_ACCEPT; tcp_stream connects with IORING_OP_CONNECT
// and inherits byte-stream I/O from stream_socket (ipc/socket.hpp).
// Two ways to accept. listener.accept() is one-shot: it takes a connection already
// queued with accept4(2) at once, without the ring or a suspension, and only when none is
// queued submits one IORING_OP_ACCEPT on the awaiting task's worker and waits (so a loop
// of accept() keeps up with a burst of connects; see nowait_accept in ipc/detail/ops.hpp).
// Visible side effect: bind() makes the listening socket non-blocking (O_NONBLOCK, on
// Linux 5.19+, whose io_uring accept waits on such a socket by polling internally; older
// kernels keep it blocking and accept only through the ring). fcntl(F_GETFL) shows it; a
// blocking accept(2) of your own on fd() would fail with EAGAIN. A tcp_listener made from
// a descriptor of yours (the int constructor) accepts only through the ring.
// listener.incoming(options) is opt-in multishot: a tcp_acceptor
// (ipc/acceptor.hpp) whose accept() yields the next connection from one
// IORING_ACCEPT_MULTISHOT SQE armed on one worker's ring; the accepted descriptors go
// through a bounded queue to the accepting tasks on any worker, the SQE is re-armed after
// the kernel ends it (errors reach the caller first), and where the kernel lacks
// multishot the acceptor falls back to one-shot accepts by itself.
// Out of descriptors (both ways): accept returns EMFILE/ENFILE at once (the connection
// stays in the kernel's backlog). accept never retries by itself, so it cannot spin: the
// caller backs off (e.g. sleep_for(10ms)) and accepts again; the server keeps serving its
// existing connections meanwhile and accepts the waiting ones once descriptors are freed.
// Thread-safety: one owner per object; several tasks may await accept on one listener
// (or on one acceptor). Destroying (or assigning) the listener closes its acceptors.
// Backlog: tcp_listen_options::backlog defaults to INT_MAX, which the kernel caps at
// net.core.somaxconn (4096 by default since Linux 5.4): the largest queue the system
// allows, so a burst of connects waits in the queue instead of having its SYNs dropped
// and retried a second later. Raise the sysctl for a longer queue.
// Cost: connect is one SQE; accept is one accept4(2) per queued connection (no SQE, no
// suspension; every 128 in one scheduler tick it yields once, the runtime's cooperative
// budget), and one failed accept4 plus one SQE when it has to wait; the options are one
// setsockopt each; an acceptor's accept() is no SQE per connection (see ipc/acceptor.hpp).
// Cancellation: accept and connect take a std::stop_token and honour the inherited one;
// they return std::errc::operation_canceled (a cancelled connect closes its socket).
// connect(addr, timeout) returns errc::timed_out when the deadline passes first.
// Errors: std::errc::connection_refused, connection_reset, broken_pipe, ... as
// std::system_category codes; see also ipc/socket.hpp.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <chrono>
#include <limits>
#include <stop_token>

#include <corio/ipc/acceptor.hpp>
#include <corio/ipc/address.hpp>
#include <corio/ipc/detail/ops.hpp>
#include <corio/ipc/socket.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc {

/// A connected TCP socket: stream I/O (stream_socket) plus connect() and TCP options.
class tcp_stream : public stream_socket {
 public:
  using stream_socket::stream_socket;

  /// Connects to `addr` (IPv4 or IPv6). The address is copied into the task.
  [[nodiscard]] static task<result<tcp_stream>> connect(socket_address addr, std::stop_token token = {});
  /// Same, giving up with errc::timed_out after `timeout` (any duration; a huge one
  /// saturates to "no limit", see runtime/time.hpp).
  [[nodiscard]] static task<result<tcp_stream>> connect(socket_address addr, saturating_duration timeout,
                                                        std::stop_token token = {});

  /// TCP_NODELAY: send small segments at once (no Nagle delay).
  result<void> set_nodelay(bool on) { return set_option(IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0); }
  /// Whether TCP_NODELAY is set.
  [[nodiscard]] result<bool> nodelay() const {
    return option(IPPROTO_TCP, TCP_NODELAY).map([](int v) { return v != 0; });
  }
  /// Whether SO_KEEPALIVE is set.
  [[nodiscard]] result<bool> keepalive() const {
    return option(SOL_SOCKET, SO_KEEPALIVE).map([](int v) { return v != 0; });
  }
};

/// TCP keepalive of the connections a tcp_listener accepts (tcp_listen_options::keepalive).
struct tcp_keepalive {
  bool enabled = false;  ///< SO_KEEPALIVE: probe a connection that stays silent
  /// Seconds of silence before the first probe (TCP_KEEPIDLE), seconds between probes
  /// (TCP_KEEPINTVL) and unanswered probes after which the peer is gone (TCP_KEEPCNT);
  /// 0: the system's default (net.ipv4.tcp_keepalive_*). Only with `enabled`. Best
  /// effort: a negative value, or one the stack refuses, is dropped and the system's
  /// default stays.
  int idle_s = 0;
  int interval_s = 0;  ///< see idle_s
  int probes = 0;      ///< see idle_s
};

/// How tcp_listener::bind() sets up the listening socket.
struct tcp_listen_options {
  /// listen(2)'s backlog: connections the kernel queues before accept(). The default asks
  /// for the most; the kernel caps it at net.core.somaxconn (see the header comment).
  int backlog = std::numeric_limits<int>::max();
  bool reuse_address = true;  ///< SO_REUSEADDR: rebind while old connections are in TIME_WAIT
  bool reuse_port = false;    ///< SO_REUSEPORT: several listeners share the port
  bool v6_only = false;       ///< IPV6_V6ONLY for an IPv6 listener
  /// Keepalive of every accepted connection: set on the listening socket before listen(2),
  /// since the kernel copies the listener's options into a connection when its handshake
  /// completes (not at accept): a client that connects the moment the port listens gets
  /// them too. bind() fails if SO_KEEPALIVE cannot be set (nothing listened; the socket is
  /// closed); the timings are best effort (a value the stack refuses keeps its default).
  tcp_keepalive keepalive{};
};

/// Accepted TCP connections from one multishot accept (ipc/acceptor.hpp).
using tcp_acceptor = basic_acceptor<tcp_stream>;

/// A listening TCP socket: one-shot accept(), or multishot incoming().
class tcp_listener : public socket {
 public:
  using socket::socket;
  tcp_listener() noexcept = default;
  /// Takes over `other`'s socket and acceptors; `other` is left empty (as by the move
  /// assignment: not marked non-blocking either).
  tcp_listener(tcp_listener&& other) noexcept
      : socket(std::move(other)),
        m_acceptors(std::move(other.m_acceptors)),
        m_direct(std::exchange(other.m_direct, false)) {}
  /// Closes this listener's acceptors before its descriptor.
  tcp_listener& operator=(tcp_listener&& other) noexcept {
    m_acceptors = std::move(other.m_acceptors);
    socket::operator=(std::move(other));
    m_direct = std::exchange(other.m_direct, false);
    return *this;
  }
  /// Members go before the base: the acceptors are closed before the descriptor.
  ~tcp_listener() = default;

  /// socket + options + bind + listen. Port 0 picks a free port (see local_address()).
  [[nodiscard]] static result<tcp_listener> bind(const socket_address& addr, const tcp_listen_options& options = {});

  /// Accepts one connection (a queued one at once, else through the ring); yields
  /// result<tcp_stream>. See the header comment (EMFILE, O_NONBLOCK).
  [[nodiscard]] auto accept(std::stop_token token = {}) const {
    return make_try_first(
        track(detail::accept<tcp_stream>(fd(), [](int fd) -> result<tcp_stream> { return tcp_stream(fd); }, token)),
        detail::nowait_accept(fd()), fixed_try(m_direct), token);
  }

  /// Opt-in multishot accept: an acceptor whose accept() yields the next connection
  /// (ipc/acceptor.hpp). The listener must outlive it; its destructor closes it.
  [[nodiscard]] tcp_acceptor incoming(const accept_options& options = {}) {
    return tcp_acceptor::make(fd(), options, m_acceptors);
  }

 private:
  detail::acceptor_link m_acceptors;
  bool m_direct = false;  // bind() made the socket non-blocking: accept() tries accept4 first
};

}  // namespace corio::ipc
