// http_hello: a minimal HTTP/1.1 server answering GET / with "Hello, World!", hardened the
// way a server facing the internet must be.
// Keep-alive and pipelining (every complete request in a read is answered in one write),
// Connection: close, HTTP/1.0, 404 for other paths, 405 for other methods, a Date header,
// HEAD answered with GET's headers and no body.
// Request bodies are skipped as they arrive, never stored: Content-Length (a plain decimal
// number up to 1 GiB, not repeated) or Transfer-Encoding: chunked.
// Refused, then the connection is closed:
//   400  malformed request line or header, control characters in a header field, a header
//        name with spaces or non-token characters, a folded header line, both
//        Content-Length and Transfer-Encoding (request smuggling), Transfer-Encoding in
//        HTTP/1.0, a bad chunk;
//   431  a request head over 16 KiB;
//   501  a Transfer-Encoding other than chunked;
//   503  past --max-connections (answered at once by the accept loop).
// Descriptors: each connection holds one (two in --self-test, whose clients are in the
// same process). At start the soft RLIMIT_NOFILE is raised to what --max-connections
// needs (the descriptors open then, the connections, and 64 spare ones for connections
// being turned away with 503); if the hard limit is lower, the number served is lowered to
// what it allows: silently for the default (10,000), with a message on stderr for a
// --max-connections given (as nginx warns when worker_connections exceed its open-file
// limit); the server refuses to start only if not one connection fits
// (example::fit_descriptor_limit, examples/common/descriptor_limit.hpp, as echo_server).
// The number served is printed on the "listening on" line.
// Timeouts (one sleeping watchdog task per connection; a request costs an atomic store,
// and a wake of the watchdog when a head begun moves its deadline earlier):
//   --header-timeout-ms  a request head must be complete this long after its first byte
//                        (slow-loris clients are cut off; default 60 s, as nginx);
//   --idle-timeout-ms    a kept-alive connection may wait this long for its next request,
//                        and each read of a body or write of a reply may take this long
//                        (default 75 s, as nginx's keepalive_timeout).
// A timed-out connection is closed without a reply (as nginx does).
// Connections live in one task group (corio::with_task_group): when the server stops, the
// open ones are aborted, and the accept loop returns once every one has closed.
//   http_hello [--port N] [--workers N] [...]   serve until Ctrl-C or SIGTERM, then stop
//                                               accepting, close the connections, exit 0
//   http_hello --self-test [...]                serve on port 0 and check raw exchanges
//   http_hello --help                           the flags
// The program is in four parts: main.cpp (the command line), request.hpp/.cpp (the
// request parser), server.hpp/.cpp (connections, watchdogs, the accept loop) and
// self_test.hpp/.cpp.
#include "../../common/args.hpp"
#include "../../common/descriptor_limit.hpp"
#include "../../common/main_guard.hpp"
#include "../../common/shutdown.hpp"
#include "self_test.hpp"
#include "server.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <stop_token>

using corio::ipc::socket_address;
using corio::ipc::tcp_listener;
using http_hello::server;

int example_main(int argc, char** argv) {
  std::uint16_t port = 8080;
  unsigned workers = 0;
  bool test = false;
  int header_ms = 0;
  int idle_ms = 0;
  unsigned max_connections = 0;
  example::args args("http_hello", "a minimal, hardened HTTP/1.1 server answering GET / with Hello, World!");
  args.port(port).workers(workers);
  args.option("--header-timeout-ms", header_ms, 1, 86400000, "MS",
              "a request head must arrive within this time from its first byte (default 60000)");
  args.option("--idle-timeout-ms", idle_ms, 1, 86400000, "MS",
              "wait this long for the next request, a body read or a reply write (default 75000)");
  args.option("--max-connections", max_connections, 1u, 1000000u, "N",
              "connections served at once; more get 503 (default 10000, or as many as the hard limit on open "
              "descriptors allows if fewer). The soft limit on open descriptors is raised to what N needs; if "
              "the hard limit allows fewer, N is lowered to fit, with a message");
  args.flag("--self-test", test, "serve on any free port and check raw exchanges (short timeouts by default)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  // The self-test waits for the timeouts: it shortens them unless told otherwise.
  server srv;
  srv.config.header_timeout = std::chrono::milliseconds(header_ms != 0 ? header_ms : test ? 500 : 60000);
  srv.config.idle_timeout = std::chrono::milliseconds(idle_ms != 0 ? idle_ms : test ? 500 : 75000);
  srv.config.max_connections = max_connections != 0 ? max_connections : test ? 32 : 10000;
  if (test) {
    port = 0;
  }
  // Before the runtime: its threads inherit the blocked SIGINT and SIGTERM.
  std::optional<corio::signal_stream> signals;
  if (!test) {
    signals.emplace(example::shutdown_signals("http_hello"));
  }
  corio::runtime rt(example::with_workers(workers));
  auto l = tcp_listener::bind(socket_address::loopback_v4(port));
  if (!l) {
    std::fprintf(stderr, "http_hello: bind: %s\n", l.error().message().c_str());
    return 1;
  }
  // Counted with the runtime and the listener open: their descriptors are part of the need.
  // Only a number the user gave is worth a message when the descriptor limit lowers it.
  const auto chosen = max_connections != 0 ? example::chosen_by::user : example::chosen_by::default_value;
  srv.config.max_connections =
      example::fit_descriptor_limit("http_hello", srv.config.max_connections, test ? 2 : 1, chosen);
  if (srv.config.max_connections == 0) {
    return 1;
  }
  if (test) {
    return rt.block_on(http_hello::self_test(*l, srv));
  }
  // (The number fitted is part of the line: check_descriptor_limit.sh compares it with
  // the limit it set.)
  std::printf("http_hello listening on %s (at most %u connections at once)\n",
              l->local_address().value().to_string().c_str(), srv.config.max_connections);
  std::fflush(stdout);
  return rt.block_on(example::serve_until_signal(
      "http_hello", *signals, [&l, &srv](std::stop_token stop) { return http_hello::accept_loop(*l, srv, stop); }));
}

int main(int argc, char** argv) { return example::main_guard("http_hello", example_main, argc, argv); }
