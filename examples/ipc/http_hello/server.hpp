// http_hello's server: its limits (server_config), its count of connections (server) and
// the accept loop that serves them, each connection in a task with a watchdog task that
// enforces the header and idle timeouts (server.cpp).
// Thread-safety: one accept loop per server; its connections run on any worker and share
// only the server's atomic count. Cost per connection: two task frames (the connection's
// and its watchdog's), its unparsed bytes, and per request an atomic store.
#pragma once

#include <corio/corio.hpp>
#include <corio/ipc/tcp.hpp>

#include <atomic>
#include <chrono>
#include <stop_token>

namespace http_hello {

// A server's limits, fixed before it starts (main() fits max_connections to the limit on
// open descriptors).
struct server_config {
  std::chrono::milliseconds header_timeout{60000};
  std::chrono::milliseconds idle_timeout{75000};
  unsigned max_connections = 10000;
};

// One listening server: its limits and the connections it serves.
struct server {
  server_config config;
  // relaxed: a counter compared with a limit; nothing else is published through it.
  std::atomic<unsigned> connections{0};
};

// Connections (and the 503s past the limit) live in one task group, in its structured
// scope (with_task_group): a finished one is dropped at the next spawn (keep_results =
// false; a connection throws nothing of its own, out of memory aside: one that did would
// be reported on stderr when dropped, and the first rethrown here once the loop has
// ended, which serve_until_signal reports as "serving failed", exit status 1), so the
// group holds about the open connections. When the loop ends (Ctrl-C, the caller's stop) it
// aborts those still open and returns only once every one has ended: each joins its
// watchdog shielded, closes its stream and gives its place back on the way out.
corio::task<void> accept_loop(const corio::ipc::tcp_listener& l, server& srv, std::stop_token stop = {});

// How many watchdogs were still running when their connection's frame ended: must stay 0
// (the self-test checks it once every connection has ended).
int watchdogs_outlived();

}  // namespace http_hello
