// Scaffolding shared by the ipc::connection tests (connection_test, connection_batch_test):
// a connection over one end of a socket pair, with the other end left a raw unix_stream
// through which a test writes whatever bytes it wants or reads what the connection sent.
#pragma once

#include <catch2/catch.hpp>

#include <corio/ipc/connection.hpp>
#include <corio/ipc/unix.hpp>

#include <utility>

namespace corio_test {

/// A connection and the raw stream at the other end of its socket.
struct connection_pair {
  corio::ipc::connection conn;   // the side under test
  corio::ipc::unix_stream peer;  // a raw peer
};

/// A connection with options `o` over a fresh socketpair(); the test fails (REQUIRE) if
/// the pair cannot be made.
inline connection_pair make_connection_pair(const corio::ipc::connection_options& o = {}) {
  auto p = corio::ipc::socketpair();
  REQUIRE(p);
  return {corio::ipc::connection(std::move(p->first), o), std::move(p->second)};
}

}  // namespace corio_test
