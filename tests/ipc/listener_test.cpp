// Tests for ipc/listener.hpp and ipc/client.hpp: authenticated connections over TCP and
// Unix sockets, accept() after a failed handshake, and serve(): connections handled
// concurrently (a silent client blocks no one), the connection limit, the handshake and
// idle timeouts, and a stop that ends every handler and leaks no descriptor; stats() of
// serve's slots in use, its limit waits and the accept queue, and of accepts refused for
// lack of descriptors (in a forked child whose descriptor table is filled).
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"
#include "shm_helpers.hpp"
#include "tcp_helpers.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include <corio/ipc/client.hpp>
#include <corio/ipc/listener.hpp>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::client_options;
using corio::ipc::connection;
using corio::ipc::listener;
using corio::ipc::listener_options;
using corio::ipc::listener_stats;
using corio::ipc::socket_address;
using corio_test::bytes;

namespace {

std::string text(const std::vector<std::byte>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size()); }

listener_options keyed(std::string key) {
  listener_options o;
  o.auth.authkey = std::move(key);
  return o;
}

listener bind_loopback(listener_options o) {
  auto l = listener::bind(socket_address::loopback_v4(0), std::move(o));
  REQUIRE(l);
  return std::move(*l);
}

// serve()'s handler for most tests: echoes every message until the client leaves.
task<void> echo(connection conn, std::stop_token) {
  std::vector<std::byte> m;
  while (co_await conn.recv_bytes(m)) {
    if (!co_await conn.send_bytes(m)) {
      break;
    }
  }
}

// A client that authenticates, sends `msg` and returns the echo (or the error's text).
task<std::string> ask(socket_address addr, std::string key, std::string msg) {
  auto c = co_await corio::ipc::connect(addr, std::move(key));
  if (!c) {
    co_return "connect: " + c.error().message();
  }
  if (auto r = co_await c->send_bytes(bytes(msg)); !r) {
    co_return "send: " + r.error().message();
  }
  auto m = co_await c->recv_bytes();
  co_return m ? text(*m) : "recv: " + m.error().message();
}

}  // namespace

TEST_CASE("listener: accept and connect authenticate and exchange messages over TCP and Unix sockets",
          "[ipc][listener]") {
  std::size_t fds_before = corio_test::open_fd_count();
  {
    corio::runtime rt(corio_test::workers(2));
    corio_test::temp_dir dir;
    for (auto addr : {socket_address::loopback_v4(0), socket_address::unix_path(dir.file("l.sock")).value()}) {
      auto l = listener::bind(addr, keyed("password"));
      REQUIRE(l);
      auto body = [&]() -> task<std::string> {
        auto server = corio::spawn([](listener& l) -> task<std::string> {
          auto c = co_await l.accept();
          if (!c) {
            co_return c.error().message();
          }
          auto m = co_await c->recv_bytes();
          if (!m) {
            co_return m.error().message();
          }
          (void)co_await c->send_bytes(*m);
          co_return "";
        }(*l));
        auto back = co_await ask(l->address().value(), "password", "foo1");
        auto s = co_await server;
        co_return s.empty() ? back : "server: " + s;
      };
      CHECK(rt.block_on(body()) == "foo1");
      CHECK(l->stats().accepted == 1);
      CHECK(l->stats().authenticated == 1);
    }
  }
  CHECK(corio_test::open_fd_count() == fds_before);
}

TEST_CASE("listener: an accepted TCP connection has keepalive probes on (60 s idle, 6 probes 10 s apart)",
          "[ipc][listener][fault]") {
  corio::runtime rt(corio_test::workers(1));
  auto l = bind_loopback(keyed("password"));
  auto body = [&]() -> task<std::vector<int>> {
    auto server = corio::spawn([](listener& l) -> task<std::vector<int>> {
      auto c = co_await l.accept();
      std::vector<int> got;
      if (!c) {
        co_return got;
      }
      const std::pair<int, int> options[] = {
          {SOL_SOCKET, SO_KEEPALIVE}, {IPPROTO_TCP, TCP_KEEPIDLE}, {IPPROTO_TCP, TCP_KEEPINTVL}, {IPPROTO_TCP, TCP_KEEPCNT}};
      for (auto [level, name] : options) {
        int v = -1;
        socklen_t len = sizeof v;
        got.push_back(::getsockopt(c->stream().fd(), level, name, &v, &len) == 0 ? v : -1);
      }
      if (auto m = co_await c->recv_bytes()) {
        (void)co_await c->send_bytes(*m);
      }
      co_return got;
    }(l));
    (void)co_await ask(l.address().value(), "password", "x");
    co_return co_await server;
  };
  CHECK(rt.block_on(body()) == std::vector<int>{1, 60, 10, 6});
}

TEST_CASE("listener: accept reports a failed handshake and the next accept serves the next client",
          "[ipc][listener][fault]") {
  corio::runtime rt(corio_test::workers(2));
  auto l = bind_loopback(keyed("password"));
  auto addr = l.address().value();
  auto body = [&]() -> task<std::string> {
    auto bad = corio::spawn(ask(addr, "wrong", "x"));
    auto first = co_await l.accept();
    auto bad_said = co_await bad;
    if (first || first.error() != corio::errc::authentication_failed) {
      co_return "first accept: not authentication_failed";
    }
    if (bad_said != "connect: " + make_error_code(corio::errc::authentication_failed).message()) {
      co_return "bad client: " + bad_said;
    }
    auto good = corio::spawn(ask(addr, "password", "foo2"));
    auto second = co_await l.accept();
    if (!second) {
      co_return "second accept: " + second.error().message();
    }
    auto m = co_await second->recv_bytes();
    (void)co_await second->send_bytes(*m);
    co_return co_await good;
  };
  CHECK(rt.block_on(body()) == "foo2");
  CHECK(l.stats().failed == 1);
  CHECK(l.stats().authenticated == 1);
}

TEST_CASE("listener: connect to a port nobody listens on is refused", "[ipc][listener][fault]") {
  corio::runtime rt(corio_test::workers(1));
  socket_address addr = socket_address::loopback_v4(0);
  {
    auto l = bind_loopback(keyed("k"));
    addr = l.address().value();
  }  // closed: nothing listens there now
  auto r = rt.block_on(corio::ipc::connect(addr, "k"));
  REQUIRE_FALSE(r);
  CHECK(r.error() == std::errc::connection_refused);
}

TEST_CASE("listener: serve handles clients concurrently; a client that says nothing blocks no one",
          "[ipc][listener]") {
  std::size_t fds_before = corio_test::open_fd_count();
  {
    corio::runtime rt(corio_test::workers(2));
    auto l = bind_loopback(keyed("password"));
    auto addr = l.address().value();
    std::stop_source stop;
    auto body = [&]() -> task<std::vector<std::string>> {
      auto server = corio::spawn(l.serve(echo, stop.get_token()));
      // A silent client: connected, never answers the challenge (the default handshake
      // timeout is 10 s; the clients below finish long before it, in any order).
      auto silent = co_await corio::ipc::tcp_stream::connect(addr);
      std::vector<corio::join_handle<std::string>> clients;
      for (int i = 0; i < 20; ++i) {
        clients.push_back(corio::spawn(ask(addr, "password", "m" + std::to_string(i))));
      }
      std::vector<std::string> got;
      for (auto& c : clients) {
        got.push_back(co_await std::move(c));
      }
      stop.request_stop();
      auto r = co_await server;
      got.push_back(r ? "stopped" : r.error().message());
      (void)silent;
      co_return got;
    };
    auto got = rt.block_on(body());
    REQUIRE(got.size() == 21);
    for (int i = 0; i < 20; ++i) {
      std::string expected = "m";  // by append: g++ 12 -O3 misreads "literal" + string (-Wrestrict)
      expected += std::to_string(i);
      CHECK(got[i] == expected);
    }
    CHECK(got[20] == "stopped");
    CHECK(l.stats().authenticated == 20);
  }
  CHECK(corio_test::open_fd_count() == fds_before);
}

TEST_CASE("listener: serve's handshake timeout drops a silent client", "[ipc][listener][fault]") {
  corio::runtime rt(corio_test::workers(2));
  auto o = keyed("password");
  o.auth.timeout = 50ms;
  auto l = bind_loopback(o);
  auto addr = l.address().value();
  std::stop_source stop;
  auto body = [&]() -> task<std::string> {
    auto server = corio::spawn(l.serve(echo, stop.get_token()));
    auto silent = co_await corio::ipc::tcp_stream::connect(addr);
    if (!silent) {
      co_return silent.error().message();
    }
    // Read (and ignore) the challenge; the server then drops us: end of stream.
    std::byte buf[256];
    std::size_t total = 0;
    for (;;) {
      auto n = co_await silent->read_some(buf);
      if (!n || *n == 0) {
        break;
      }
      total += *n;
    }
    stop.request_stop();
    (void)co_await server;
    co_return total > 0 ? "" : "no challenge";
  };
  CHECK(rt.block_on(body()).empty());
  CHECK(l.stats().failed == 1);
}

TEST_CASE("listener: serve holds at most max_connections; the next client is served when a slot frees",
          "[ipc][listener]") {
  corio::runtime rt(corio_test::workers(2));
  auto o = keyed("password");
  o.max_connections = 2;
  auto l = bind_loopback(o);
  auto addr = l.address().value();
  std::stop_source stop;
  auto body = [&]() -> task<std::string> {
    auto server = corio::spawn(l.serve(echo, stop.get_token()));
    auto a = co_await corio::ipc::connect(addr, "password");
    auto b = co_await corio::ipc::connect(addr, "password");
    if (!a || !b) {
      co_return "first two not served";
    }
    // Both slots are taken: a third client's handshake cannot even start.
    auto third = corio::spawn(ask(addr, "password", "third"));
    (void)co_await corio::sleep_for(50ms);
    if (l.stats().accepted != 2) {
      co_return "accepted past the limit: " + std::to_string(l.stats().accepted);
    }
    a->close();  // frees a slot
    auto said = co_await third;
    stop.request_stop();
    (void)co_await server;
    co_return said;
  };
  CHECK(rt.block_on(body()) == "third");
  CHECK(l.stats().accepted == 3);
}

TEST_CASE("listener: stopping serve ends handlers waiting on their connections and closes them",
          "[ipc][listener][cancel]") {
  std::size_t fds_before = corio_test::open_fd_count();
  {
    corio::runtime rt(corio_test::workers(2));
    auto l = bind_loopback(keyed("password"));
    auto addr = l.address().value();
    std::stop_source stop;
    std::atomic<int> ended{0};
    auto handler = [&ended](connection conn, std::stop_token) -> task<void> {
      auto m = co_await conn.recv_bytes();  // no client sends anything
      if (!m && m.error() == std::errc::operation_canceled) {
        ended.fetch_add(1);
      }
    };
    auto body = [&]() -> task<std::string> {
      auto server = corio::spawn(l.serve(handler, stop.get_token()));
      std::vector<connection> clients;
      for (int i = 0; i < 5; ++i) {
        auto c = co_await corio::ipc::connect(addr, "password");
        if (!c) {
          co_return c.error().message();
        }
        clients.push_back(std::move(*c));
      }
      while (l.stats().authenticated < 5) {
        (void)co_await corio::sleep_for(1ms);
      }
      // The handlers wait on their connections; waiting for serve's stop beside them arms
      // no timer (it armed one per connection before).
      std::uint64_t timers = 0;
      for (const auto& w : rt.metrics().workers) {
        timers += w.timers_pending;
      }
      stop.request_stop();
      auto r = co_await server;
      // Every client sees its connection end.
      int ended_seen = 0;
      for (auto& c : clients) {
        auto m = co_await c.recv_bytes();
        ended_seen += !m && m.error() == corio::errc::closed;
      }
      co_return (r ? "" : r.error().message()) + std::to_string(ended_seen) + " timers " + std::to_string(timers);
    };
    CHECK(rt.block_on(body()) == "5 timers 0");
    CHECK(ended.load() == 5);
  }
  CHECK(corio_test::open_fd_count() == fds_before);
}

TEST_CASE("listener: an idle timeout drops an authenticated client that stops talking", "[ipc][listener][fault]") {
  corio::runtime rt(corio_test::workers(2));
  auto o = keyed("password");
  o.connection.idle_timeout = 30ms;
  auto l = bind_loopback(o);
  auto addr = l.address().value();
  std::stop_source stop;
  std::atomic<bool> timed_out{false};
  auto handler = [&timed_out](connection conn, std::stop_token) -> task<void> {
    std::vector<std::byte> m;
    for (;;) {
      auto r = co_await conn.recv_bytes(m);
      if (!r) {
        timed_out = r.error() == std::errc::timed_out;
        co_return;  // dropping the connection closes it
      }
      (void)co_await conn.send_bytes(m);
    }
  };
  auto body = [&]() -> task<std::string> {
    auto server = corio::spawn(l.serve(handler, stop.get_token()));
    auto c = co_await corio::ipc::connect(addr, "password");
    if (!c) {
      co_return c.error().message();
    }
    (void)co_await c->send_bytes(bytes("one"));
    auto m = co_await c->recv_bytes();
    auto end = co_await c->recv_bytes();  // we say nothing more: the server drops us
    stop.request_stop();
    (void)co_await server;
    co_return (m ? text(*m) : "?") + " " + (end ? "more" : end.error().message());
  };
  CHECK(rt.block_on(body()) == "one " + make_error_code(corio::errc::closed).message());
  CHECK(timed_out.load());
}

namespace {

// What the connection-limit test saw: stats while the second client waited, once it was
// served, and after serve() returned.
struct limit_seen {
  bool alone = false;   // the first client served, nobody else: the limit reached once
  bool waited = false;  // the second client was seen queued behind the limit
  listener_stats first, waiting, served, after;
  std::string second;   // the second client's echo
};

task<limit_seen> hold_the_only_slot(listener& l, std::stop_source& stop) {
  limit_seen seen;
  auto addr = l.address().value();
  auto server = corio::spawn(l.serve(echo, stop.get_token()));
  auto first = co_await corio::ipc::connect(addr, "password");
  if (first) {
    // Taking the only slot is reaching the limit, counted though nobody waits yet.
    seen.alone = co_await corio_test::eventually([&l] {
      const listener_stats s = l.stats();
      return s.in_use == 1 && s.limit_waits == 1;
    });
    seen.first = l.stats();
    // The second client's connection waits in the accept queue behind the first.
    auto second = corio::spawn(ask(addr, "password", "second"));
    seen.waited = co_await corio_test::eventually([&l] {
      const listener_stats s = l.stats();
      return s.queued == 1 && s.limit_waits >= 1;
    });
    seen.waiting = l.stats();
    first->close();  // frees the slot: the second is served
    seen.second = co_await second;
    seen.served = l.stats();
  }
  stop.request_stop();
  (void)co_await server;
  seen.after = l.stats();
  co_return seen;
}

}  // namespace

TEST_CASE("listener: stats show the slots in use, the limit, limit waits and the accept queue",
          "[ipc][listener]") {
  corio::runtime rt(corio_test::workers(2));
  auto o = keyed("password");
  o.max_connections = 1;
  auto l = bind_loopback(o);
  CHECK(l.stats().limit == 0);  // not serving
  std::stop_source stop;
  const limit_seen seen = rt.block_on(hold_the_only_slot(l, stop));
  REQUIRE(seen.alone);
  CHECK(seen.first.queued == 0);
  CHECK(seen.first.limit_waits == 1);
  REQUIRE(seen.waited);
  CHECK(seen.waiting.in_use == 1);
  CHECK(seen.waiting.limit == 1);
  CHECK(seen.waiting.limit_waits == 1);  // still the one wait, now with a client queued
  CHECK(seen.waiting.queued == 1);
  CHECK(seen.waiting.accepted == 1);
  CHECK(seen.second == "second");
  CHECK(seen.served.queued == 0);
  CHECK(seen.served.accepted == 2);
  CHECK(seen.served.limit == 1);
  CHECK(seen.served.in_use <= 1);
  CHECK(seen.after.in_use == 0);
  CHECK(seen.after.limit == 0);
  CHECK(seen.after.shortages == 0);
}

namespace {

// The shortage test's results, in memory shared with its child: counter(0) shortages and
// counter(1) queued while the table was full, counter(2) 1 once the client was served.
enum : int { kShortages, kQueuedWhileFull, kServed };

// serve()s a client whose connection arrives while the descriptor table is full, then
// frees the table (see the test). Runs in the forked child: no Catch2 assertion.
task<int> serve_through_shortage(listener& l, corio_test::shared_page& page) {
  auto client = co_await corio::ipc::tcp_stream::connect(l.address().value());  // before the table fills
  if (!client) {
    co_return 3;
  }
  std::stop_source stop;
  auto greet = [](connection conn, std::stop_token) -> task<void> { (void)co_await conn.send_bytes(bytes("served")); };
  corio_test::descriptor_table_filler table;
  if (!table.lower_limit(256)) {
    co_return 4;
  }
  table.fill();
  auto server = corio::spawn(l.serve(greet, stop.get_token()));
  const bool refused = co_await corio_test::eventually([&l] { return l.stats().shortages >= 2; });
  const listener_stats full = l.stats();
  page.counter(kShortages).store(static_cast<std::int64_t>(full.shortages));
  page.counter(kQueuedWhileFull).store(static_cast<std::int64_t>(full.queued));
  table.release();  // serve()'s next try (10 ms on) accepts
  std::string got(4 + 6, '\0');  // Python's framing: a 4-byte length, then "served"
  auto r = co_await client->read_exact(corio_test::wbytes(got));
  page.counter(kServed).store(r && got.substr(4) == "served" ? 1 : 0);
  stop.request_stop();
  (void)co_await server;
  co_return refused ? 0 : 5;
}

}  // namespace

TEST_CASE("listener: stats count accepts refused for lack of descriptors; serve recovers",
          "[ipc][listener][fault]") {
  corio_test::shared_page page;
  // A child of its own: the lowered RLIMIT_NOFILE and the full table stay there.
  corio_test::child c([&page]() -> int {
    corio::runtime rt(corio_test::workers(2));
    auto l = listener::bind(socket_address::loopback_v4(0), listener_options{});  // no authkey: no handshake
    return l ? rt.block_on(serve_through_shortage(*l, page)) : 2;
  });
  REQUIRE(c.started());
  CHECK(c.wait_status() == 0);
  CHECK(page.counter(kShortages).load() >= 2);  // the first try and at least one retry
  CHECK(page.counter(kQueuedWhileFull).load() == 1);
  CHECK(page.counter(kServed).load() == 1);
}
