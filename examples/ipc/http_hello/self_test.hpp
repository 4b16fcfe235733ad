// http_hello --self-test: raw exchanges against a server in the same process (self_test.cpp).
#pragma once

#include "server.hpp"

namespace http_hello {

// Serves on `l` with `srv` and checks each behaviour the server promises (answers,
// refusals, timeouts with the server's own short ones, slow-loris clients, the connection
// limit on a second server), printing one line per check. Yields 0 when all pass, else 1.
corio::task<int> self_test(const corio::ipc::tcp_listener& l, server& srv);

}  // namespace http_hello
