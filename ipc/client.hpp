// corio::ipc::connect: connects to a listener and authenticates, as Python's
// multiprocessing.connection.Client(address, authkey=...) does.
//
// Concept: opens a TCP (IP address) or Unix (Unix address) connection, answers the
// server's challenge and delivers one of its own (ipc/authentication.hpp), and yields an
// ipc::connection (ipc/connection.hpp) ready for messages. It talks to Python's Listener
// of any version (3.11's HMAC-MD5 or 3.12+'s {sha256}) and to ipc::listener.
// Errors: the connect error (std::errc::connection_refused, ...), errc::timed_out
// (connect_timeout or the handshake's timeout), errc::authentication_failed (the server
// rejected our key, or its own answer was wrong), errc::message_size /
// errc::protocol_error / errc::closed from a server that does not speak the protocol.
// Thread-safety: a free function; the connection it yields has one owner.
// Cost: one connect SQE (plus TCP_NODELAY), then the handshake (two round trips).
// Cancellation: the token and the inherited one (std::errc::operation_canceled).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <chrono>
#include <stop_token>
#include <string>

#include <corio/ipc/address.hpp>
#include <corio/ipc/authentication.hpp>
#include <corio/ipc/connection.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// How connect() connects and authenticates.
struct client_options {
  auth_options auth;              ///< authkey (none: no handshake), digest, handshake timeout
  connection_options connection;  ///< limits of the connection
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(10);  ///< for the TCP/Unix connect
};

/// Connects to `addr` and authenticates with options.auth.
[[nodiscard]] task<result<connection>> connect(socket_address addr, client_options options = {},
                                               std::stop_token token = {});
/// Connects to `addr` and authenticates with `authkey` (the other options: defaults).
[[nodiscard]] task<result<connection>> connect(socket_address addr, std::string authkey, std::stop_token token = {});

}  // namespace corio::ipc
