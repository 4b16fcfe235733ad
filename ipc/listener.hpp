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
// read from any thread (not while close() or a move runs: its `queued` reads the socket).
// Observing: stats() says how many connections serve() handles now against its limit,
// how often it found every slot taken, how often accepting ran out of descriptors, and
// how many connections wait in the kernel's accept queue: a server at its limit or out of
// descriptors leaves its clients there, unanswered, and says nothing else.
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

/// What a listener has done since bind, and what serve() is doing now: a snapshot, each
/// field read on its own (relaxed loads), so two fields may come from slightly different
/// moments (in_use can briefly lag an accepted connection, for one). Relaxed is enough:
/// each field is a count or a level read for its own sake, nothing else is published or
/// read through it, and every one is updated by a single atomic operation, so a
/// snapshot never shows a torn or invented value. Fields after `failed` came later; an
/// aggregate, so `listener_stats{a, b, c}` still builds one.
struct listener_stats {
  std::uint64_t accepted = 0;       ///< connections accepted (only grows)
  std::uint64_t authenticated = 0;  ///< handshakes passed, or skipped: no authkey (only grows)
  std::uint64_t failed = 0;         ///< handshakes failed: wrong key, garbage, timeout, ... (only grows)
  /// Connections serve() handles now: counted from their accept until their task ends
  /// (handshake, then handler); the slots of max_connections they hold. accept()'s
  /// connections are not counted (they are the caller's).
  std::uint64_t in_use = 0;
  /// serve()'s max_connections (1 for 0) from its start until it returns; 0 when no
  /// serve() runs.
  std::uint64_t limit = 0;
  /// Times serve() reached its limit: it found all `limit` slots in use when it looked for
  /// the next one (right after the accept that took the last), and waited for one to free
  /// before accepting again (only grows). It counts whether or not a client was waiting
  /// then; `queued` says whether clients wait in the accept queue now.
  std::uint64_t limit_waits = 0;
  /// Accepts refused for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM),
  /// by accept() or serve() (only grows). Each try counts: while the shortage lasts,
  /// serve() tries again every 10 ms, and Linux refuses an accept for lack of a
  /// descriptor whether or not a client waits (one that does stays queued).
  std::uint64_t shortages = 0;
  /// Connections waiting now in the kernel's accept queue (completed, not yet accepted),
  /// read when stats() is called: TCP_INFO's tcpi_unacked of the listening socket. TCP
  /// only: 0 for a Unix socket (Linux gives no such count for one) or a closed listener.
  std::uint64_t queued = 0;
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
  /// Counts so far and serve()'s connections now (any thread; see listener_stats).
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
    std::atomic<std::uint64_t> in_use{0};
    std::atomic<std::uint64_t> limit{0};
    std::atomic<std::uint64_t> limit_waits{0};
    std::atomic<std::uint64_t> shortages{0};
  };

  tcp_listener m_tcp;
  unix_listener m_unix;
  listener_options m_options;
  // Heap-held so that a listener stays movable, and shared with serve()'s connection
  // tasks (their end gives back in_use, even when a runtime's shutdown destroys them after
  // the listener); updated with relaxed operations (counts only, they order nothing).
  std::shared_ptr<counters> m_counters = std::make_shared<counters>();
};

}  // namespace corio::ipc
