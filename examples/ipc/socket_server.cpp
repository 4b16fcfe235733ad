// socket_server: the tutorial's multiprocessing.connection Listener, speaking Python's
// wire format: Listener(('localhost', 6000), authkey=b'password'); prints every message;
// 'close connection' ends that connection, 'close server' the server. Python's own
// Client talks to it unmodified (3.11's HMAC-MD5 handshake and 3.12+'s {sha256}):
//   python3 -c "from multiprocessing.connection import Client;
//     c = Client(('localhost', 6000), authkey=b'password'); c.send('foo1'); c.send('close server')"
// (one line; see README.md)
// Unlike the tutorial's loop, which serves one client at a time, every connection runs in
// a task of its own (ipc::listener::serve): a client that connects and says nothing blocks
// no one; it is dropped by the handshake timeout (5 s) or, once authenticated, by the idle
// timeout (--idle-timeout-ms, default 60 s).
// Ctrl-C or SIGTERM (examples/common/shutdown.hpp) stops it as 'close server' does: it
// stops accepting, ends every connection (its pending recv is cancelled) and exits 0.
//   socket_server [--port N] [--authkey KEY] [--idle-timeout-ms N]
//   socket_server --self-test     runs the tutorial's clients in-process (any free port, the
//                                 same --authkey), with a silent client connected first, and
//                                 checks them; exit 1 if a client fails
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "../common/shutdown.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/client.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/pickle.hpp>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::connection;
using corio::ipc::listener;
using corio::ipc::socket_address;
namespace pickle = corio::ipc::pickle;

namespace {

// What print(msg) shows in Python: a str as itself, anything else as its repr.
std::string printed(const pickle::value& v) {
  if (const std::string* s = v.if_str()) {
    return *s;
  }
  return v.repr();
}

// Python prints listener.last_accepted as a tuple: ('127.0.0.1', 54321).
std::string python_address(const connection& c) {
  auto a = c.stream().peer_address();
  if (!a) {
    return "(unknown)";
  }
  std::string s = a->to_string();
  auto colon = s.rfind(':');
  if (colon == std::string::npos) {
    return s;
  }
  std::string host = s.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') {
    host = host.substr(1, host.size() - 2);
  }
  return "('" + host + "', " + s.substr(colon + 1) + ")";
}

struct server_state {
  std::stop_source stop;            // 'close server'
  std::mutex lock;                  // guards `received` (handlers run on any worker)
  std::vector<std::string> received;
};

// One connection, as the body of the tutorial's inner loop.
task<void> handle(server_state& state, connection conn, std::stop_token) {
  std::printf("connection accepted from %s\n", python_address(conn).c_str());
  std::fflush(stdout);
  for (;;) {
    auto msg = co_await conn.recv();
    if (!msg) {
      if (msg.error().category() == pickle::category()) {
        // A message that is not a safe pickle (a class not on the allow-list, ...): say so
        // and read on (the connection is still in step).
        std::printf("unreadable message: %s\n", std::string(conn.unpickle_error()).c_str());
        continue;
      }
      if (msg.error() == std::errc::timed_out) {
        std::printf("connection idle too long: closed\n");
      } else if (msg.error() != corio::errc::closed && msg.error() != std::errc::operation_canceled) {
        std::printf("connection lost: %s\n", msg.error().message().c_str());
      }
      co_return;
    }
    std::string text = printed(*msg);
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
    {
      std::lock_guard g(state.lock);
      state.received.push_back(text);
    }
    if (msg->is_str() && text == "close connection") {
      co_return;  // the connection closes when `conn` goes
    }
    if (msg->is_str() && text == "close server") {
      state.stop.request_stop();
      co_return;
    }
  }
}

// Serves until 'close server' or `signalled` (Ctrl-C, SIGTERM).
task<int> serve(listener& l, server_state& state, std::stop_token signalled = {}) {
  // Runs on the thread that requests the stop; request_stop is thread-safe.
  std::stop_callback on_signal(signalled, [&state] { state.stop.request_stop(); });
  auto r = co_await l.serve(
      [&state](connection conn, std::stop_token stop) { return handle(state, std::move(conn), std::move(stop)); },
      state.stop.get_token());
  if (!r) {
    std::fprintf(stderr, "socket_server: %s\n", r.error().message().c_str());
    co_return 1;
  }
  co_return 0;
}

// The tutorial's client.py, in corio (ipc::connect + pickled str messages).
task<bool> tutorial_client(socket_address addr, std::string authkey, std::vector<std::string> messages) {
  auto c = co_await corio::ipc::connect(addr, authkey);
  if (!c) {
    std::fprintf(stderr, "client: %s\n", c.error().message().c_str());
    co_return false;
  }
  for (auto& m : messages) {
    if (!co_await c->send(pickle::value(m))) {
      co_return false;
    }
  }
  co_return true;
}

// Ends the server (as 'close server' would) after a client failed, and reports it.
task<int> self_test_failed(corio::join_handle<int>& server, server_state& state, const char* why) {
  std::fprintf(stderr, "socket_server: self-test: %s\n", why);
  state.stop.request_stop();
  (void)co_await server;
  std::printf("self-test: FAILED\n");
  co_return 1;
}

task<int> self_test(listener& l, server_state& state, std::string authkey) {
  auto server = corio::spawn(serve(l, state));
  auto addr = l.address().value();
  // A client that connects and says nothing: it must not hold up anyone.
  auto silent = co_await corio::ipc::tcp_stream::connect(addr);
  // (Named vectors: g++ 12 rejects a braced list of string literals as a coroutine argument.)
  std::vector<std::string> first{"foo1", "foo2", "close connection"};
  std::vector<std::string> second{"foo3", "close server"};
  if (!co_await tutorial_client(addr, authkey, first)) {
    co_return co_await self_test_failed(server, state, "the first client failed");
  }
  // Wait until the first connection has been read to its end, so the order is fixed
  // (bounded: a server that lost its messages must not hang the test).
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (true) {
    {
      std::lock_guard g(state.lock);
      if (state.received.size() >= first.size()) {
        break;
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      co_return co_await self_test_failed(server, state, "the first client's messages not all received in 10 s");
    }
    (void)co_await corio::sleep_for(1ms);
  }
  if (!co_await tutorial_client(addr, authkey, second)) {
    co_return co_await self_test_failed(server, state, "the second client failed");
  }
  bool ok = true;
  int rc = co_await server;
  (void)silent;
  std::vector<std::string> expected{"foo1", "foo2", "close connection", "foo3", "close server"};
  ok = ok && rc == 0 && state.received == expected;
  std::printf("self-test: %s\n", ok ? "both tutorial clients served, in order, past a silent one" : "FAILED");
  co_return ok ? 0 : 1;
}

int example_main(int argc, char** argv) {
  bool test = false;
  std::uint16_t port = 6000;
  std::string authkey = "password";
  int idle_ms = 60000;
  example::args args("socket_server", "the tutorial's connection Listener on localhost, authkey b'password'");
  args.port(port);
  args.option("--authkey", authkey, "KEY", "the shared key (default password)");
  args.option("--idle-timeout-ms", idle_ms, 1, 86400000, "MS",
              "drop a connection silent this long, 1..86400000 (default 60000)");
  args.flag("--self-test", test, "also run the tutorial's clients in-process (any free port)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  // Before the runtime (and before the "listening" line a test waits for): every thread
  // inherits the blocked SIGINT and SIGTERM.
  std::optional<corio::signal_stream> signals;
  if (!test) {
    signals.emplace(example::shutdown_signals("socket_server"));
  }
  corio::ipc::listener_options o;
  o.auth.authkey = authkey;
  o.auth.timeout = 5s;
  o.connection.idle_timeout = std::chrono::milliseconds(idle_ms);
  auto l = listener::bind(socket_address::loopback_v4(test ? 0 : port), o);
  if (!l) {
    std::fprintf(stderr, "socket_server: bind: %s\n", l.error().message().c_str());
    return 1;
  }
  corio::runtime rt;
  // Only now: a runtime that cannot start (main_guard's error) announces no listener.
  std::printf("listening on %s\n", l->address().value().to_string().c_str());
  std::fflush(stdout);
  server_state state;
  if (test) {
    return rt.block_on(self_test(*l, state, authkey));
  }
  return rt.block_on(example::serve_until_signal(
      "socket_server", *signals, [&l, &state](std::stop_token stop) { return serve(*l, state, std::move(stop)); }));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("socket_server", example_main, argc, argv); }
