// corio::ipc::listener: accepts authenticated connections, as Python's
// multiprocessing.connection.Listener(address, authkey=...) does, and serves each in its
// own task.
//
// Concept: a listening TCP (IPv4/IPv6) or Unix socket whose connections speak Python's
// framing (ipc/connection.hpp) after Python's handshake (ipc/authentication.hpp) with
// the listener's authkey (none: no handshake, like authkey=None). Three ways to use it:
// - accept(): like Python's Listener.accept(): one connection, accepted and
//   authenticated; a failed handshake is returned as an error (accept again). One slow
//   client delays the next accept by up to the handshake timeout: for a server, prefer
// - serve(handler): accepts in a loop and runs each connection in a task of its own:
//   the handshake (bounded by auth.timeout) and then `handler(connection, stop)`. At most
//   max_connections are handshaking or being served at once; further clients wait in the
//   listen backlog until a slot frees. A failed handshake ends only that connection
//   (counted in stats()). Out of descriptors, it backs off and retries. It returns when
//   `token` is stopped (or the listener fails): it stops accepting, stops every
//   handler (the `stop` token they get, and the token their waits inherit) and waits
//   for all of them to finish.
// - accept_unauthenticated() + authenticate(): the two halves of accept(), for code that
//   runs the handshake in a task of its own.
// Silence ends a connection at the handshake timeout, then at connection.idle_timeout (if
// set); a TCP peer that vanished is found by keepalive probes (60 s idle + 6 x 10 s) while
// nothing sent to it is unacknowledged (else TCP's retransmission limit, ~15 min, does).
// Thread-safety: one owner; several tasks may await accept() at once; serve() once at a
// time, and the listener is neither moved nor destroyed while it runs. stats() may be
// read from any thread.
// Cost: accept takes a connection already queued with one accept4(2), without the ring or
// a suspension, and only when none is queued waits through one SQE (ipc/tcp.hpp: the
// socket is non-blocking for that, a visible side effect of bind()); plus TCP_NODELAY, one
// setsockopt (keepalive is set once, on the listening socket, and inherited). So an
// accept() loop and serve() keep up with a burst of connects. The default backlog asks for
// the longest queue (the kernel caps it at net.core.somaxconn). The handshake: see
// ipc/authentication.hpp; serve() adds per connection one task and one timer, nothing per message.
// Cancellation: every wait takes a std::stop_token and honours the inherited one.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <stop_token>

#include <corio/ipc/address.hpp>
#include <corio/ipc/authentication.hpp>
#include <corio/ipc/connection.hpp>
#include <corio/ipc/tcp.hpp>
#include <corio/ipc/unix.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// How a listener listens, authenticates and serves.
struct listener_options {
  auth_options auth;              ///< authkey (none: no handshake), digest, handshake timeout
  connection_options connection;  ///< limits of every accepted connection
  /// listen(2)'s queue of connections not yet accepted: the most by default, capped by the
  /// kernel at net.core.somaxconn.
  int backlog = std::numeric_limits<int>::max();
  std::size_t max_connections = 1024;  ///< serve(): connections handled at once
};

/// Counts since bind (relaxed snapshots; they only grow).
struct listener_stats {
  std::uint64_t accepted = 0;       ///< connections accepted
  std::uint64_t authenticated = 0;  ///< handshakes passed (or skipped: no authkey)
  std::uint64_t failed = 0;         ///< handshakes failed (wrong key, garbage, timeout, ...)
};

/// Python's Listener: accepts authenticated connections; see the header comment.
class listener {
 public:
  /// serve()'s handler: runs with an authenticated connection; should return soon after
  /// `stop` is requested (its waits inherit the stop too).
  using handler = std::function<task<void>(connection conn, std::stop_token stop)>;

  listener() = default;
  /// Takes over `other`'s socket (not while serve() runs on it).
  listener(listener&& other) noexcept;
  /// Closes this listener, then takes over `other`'s socket.
  listener& operator=(listener&& other) noexcept;
  ~listener();

  /// Binds and listens on an IP address (TCP; port 0 picks one) or a Unix address.
  [[nodiscard]] static result<listener> bind(const socket_address& addr, listener_options options = {});

  /// The bound address (with the port chosen for port 0).
  [[nodiscard]] result<socket_address> address() const;
  /// The options given to bind().
  [[nodiscard]] const listener_options& options() const noexcept { return m_options; }
  /// Connections accepted, authenticated and failed so far (any thread).
  [[nodiscard]] listener_stats stats() const noexcept;

  /// Accepts one connection and authenticates it (Python's Listener.accept()).
  [[nodiscard]] task<result<connection>> accept(std::stop_token token = {});
  /// Accepts one connection without the handshake.
  [[nodiscard]] task<result<connection>> accept_unauthenticated(std::stop_token token = {});
  /// The handshake of an accepted connection with this listener's key and timeout.
  [[nodiscard]] task<result<void>> authenticate(connection& conn, std::stop_token token = {});

  /// Serves connections until `token` is stopped; see the header comment. Yields an error
  /// only when accepting fails for good (the listener was closed, ...).
  [[nodiscard]] task<result<void>> serve(handler h, std::stop_token token = {});

  /// Stops listening (closes the socket; a Unix path is removed). Not while an accept()
  /// or serve() is waiting on it: stop those first (their token), then close.
  void close() noexcept;

 private:
  struct counters {
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> authenticated{0};
    std::atomic<std::uint64_t> failed{0};
  };

  tcp_listener m_tcp;
  unix_listener m_unix;
  listener_options m_options;
  // Heap-held so that a listener stays movable; updated with relaxed increments (counts
  // only, they order nothing).
  std::unique_ptr<counters> m_counters = std::make_unique<counters>();
};

}  // namespace corio::ipc
