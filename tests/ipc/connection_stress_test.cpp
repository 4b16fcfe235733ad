// Stress test for ipc::listener::serve (issue 12, "bad input"): 1,000 clients connect at
// once, half of them hostile in ten different ways (wrong key, no key, garbage, silence,
// vanishing mid-handshake, 4 GiB and negative length prefixes, truncated frames, stalls
// after authenticating). The server stays up, serves every correct client, leaks no
// descriptor and never allocates more than its message limit at once.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"
#include "largest_allocation.hpp"  // this program's operator new: g_watch, g_largest

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stop_token>
#include <string>
#include <vector>

#include <corio/ipc/client.hpp>
#include <corio/ipc/listener.hpp>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::connection;
using corio::ipc::socket_address;
using corio::ipc::tcp_stream;
using corio_test::bytes;

using corio_test::raise_fd_limit;

namespace {

constexpr std::size_t kLimit = 64 * 1024;  // the server's max_message_size
constexpr int kKinds = 10;                 // kinds of hostile client

std::string text(const std::vector<std::byte>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size()); }

std::string be32(std::uint32_t n) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) {
    s[static_cast<std::size_t>(i)] = static_cast<char>(n >> (24 - 8 * i));
  }
  return s;
}

// A correct client: authenticates, sends a message, expects it back.
task<bool> good_client(socket_address addr, int i) {
  auto c = co_await corio::ipc::connect(addr, "password");
  if (!c) {
    co_return false;
  }
  std::string msg = "hello " + std::to_string(i);
  if (!co_await c->send_bytes(bytes(msg))) {
    co_return false;
  }
  auto m = co_await c->recv_bytes();
  co_return m && text(*m) == msg;
}

// Reads until the server closes the connection (what every hostile client ends with).
task<void> drain(const tcp_stream& s) {
  std::byte buf[512];
  for (;;) {
    auto n = co_await s.read_some(buf);
    if (!n || *n == 0) {
      co_return;
    }
  }
}

// Reads the server's challenge frame (raw).
task<bool> read_challenge(const tcp_stream& s) {
  std::byte head[4];
  if (!co_await s.read_exact(head)) {
    co_return false;
  }
  std::size_t n = (std::to_integer<std::size_t>(head[2]) << 8) | std::to_integer<std::size_t>(head[3]);
  std::vector<std::byte> body(n);
  co_return static_cast<bool>(co_await s.read_exact(body));
}

// One hostile client of kind `kind`; yields true when it behaved as planned (the server
// ended its connection or refused it).
task<bool> hostile_client(socket_address addr, int kind) {
  if (kind == 0) {  // wrong key
    auto c = co_await corio::ipc::connect(addr, "wrong");
    co_return !c && c.error() == corio::errc::authentication_failed;
  }
  if (kind == 8 || kind == 9) {  // authenticated, then a 4 GiB prefix / a stalled frame
    auto c = co_await corio::ipc::connect(addr, "password");
    if (!c) {
      co_return false;
    }
    auto fd = c->stream().fd();
    std::string evil = kind == 8 ? std::string("\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x00\x00", 12)
                                 : be32(1000) + "only a part";
    (void)::write(fd, evil.data(), evil.size());
    auto m = co_await c->recv_bytes();  // the server drops us
    co_return !m && m.error() == corio::errc::closed;
  }
  auto s = co_await tcp_stream::connect(addr);
  if (!s) {
    co_return false;
  }
  switch (kind) {
    case 1:  // no key: sends a message where the answer should be
      (void)co_await s->write_all(bytes(be32(4) + "foo1"));
      break;
    case 2:  // says nothing at all (the handshake timeout drops it)
      break;
    case 3:  // vanishes after the challenge
      (void)co_await read_challenge(*s);
      co_return true;
    case 4:  // a 4 GiB length prefix as its answer
      (void)co_await read_challenge(*s);
      (void)co_await s->write_all(bytes(std::string("\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x00\x00", 12)));
      break;
    case 5:  // a negative length prefix
      (void)co_await read_challenge(*s);
      (void)co_await s->write_all(bytes(be32(0xfffffff0)));
      break;
    case 6:  // a truncated frame, then gone
      (void)co_await read_challenge(*s);
      (void)co_await s->write_all(bytes(be32(40) + "{sha"));
      co_return true;
    default:  // 7: garbage instead of an answer
      (void)co_await read_challenge(*s);
      (void)co_await s->write_all(bytes(be32(20) + "GET / HTTP/1.1\r\n\r\n.."));
      break;
  }
  co_await drain(*s);
  co_return true;
}

}  // namespace

TEST_CASE("connection stress: 1,000 clients at once, half hostile; every good one is served, nothing leaks",
          "[ipc][listener][stress]") {
  constexpr int clients = 1000;
  if (!raise_fd_limit(2 * clients + 200)) {
    // Not silently passed: meson reports exit status 77 as SKIP.
    std::fprintf(stderr, "SKIP: RLIMIT_NOFILE cannot be raised to %d\n", 2 * clients + 200);
    std::exit(77);
  }
  std::size_t fds_before = corio_test::open_fd_count();
  {
    corio::runtime rt(corio_test::workers(2));
    corio::ipc::listener_options o;
    o.auth.authkey = "password";
    // Drops the silent ones. Not shorter: 1,000 handshakes under ThreadSanitizer on a busy
    // machine take seconds, and a good client timed out is a false failure.
    o.auth.timeout = 5s;
    o.connection.max_message_size = kLimit;
    o.connection.stall_timeout = 500ms;
    o.backlog = clients;
    auto l = corio::ipc::listener::bind(socket_address::loopback_v4(0), o);
    REQUIRE(l);
    auto addr = l->address().value();
    std::stop_source stop;
    auto echo = [](connection conn, std::stop_token) -> task<void> {
      std::vector<std::byte> m;
      while (co_await conn.recv_bytes(m)) {
        if (!co_await conn.send_bytes(m)) {
          break;
        }
      }
    };
    g_largest = 0;
    g_watch = true;
    auto body = [&]() -> task<std::string> {
      auto server = corio::spawn(l->serve(echo, stop.get_token()));
      std::vector<corio::join_handle<bool>> good, bad;
      for (int i = 0; i < clients; ++i) {
        if (i % 2 == 0) {
          good.push_back(corio::spawn(good_client(addr, i)));
        } else {
          bad.push_back(corio::spawn(hostile_client(addr, (i / 2) % kKinds)));
        }
      }
      int good_ok = 0, bad_ok = 0;
      for (auto& g : good) {
        good_ok += co_await std::move(g);
      }
      for (auto& b : bad) {
        bad_ok += co_await std::move(b);
      }
      // Still serving after the storm.
      bool after = co_await good_client(addr, -1);
      stop.request_stop();
      auto r = co_await server;
      co_return std::to_string(good_ok) + " " + std::to_string(bad_ok) + (after ? " after" : " down") +
          (r ? "" : " " + r.error().message());
    };
    auto got = rt.block_on(body());
    g_watch = false;
    CHECK(got == std::to_string(clients / 2) + " " + std::to_string(clients / 2) + " after");
    auto st = l->stats();
    CHECK(st.accepted == static_cast<std::uint64_t>(clients + 1));
    // Good clients, the final one, and the two kinds that authenticate before misbehaving.
    CHECK(st.authenticated == static_cast<std::uint64_t>(clients / 2 + 1 + 2 * (clients / 2 / kKinds)));
    CHECK(st.failed == static_cast<std::uint64_t>(clients / 2 - 2 * (clients / 2 / kKinds)));
  }
  // Every server-side and client-side descriptor is closed; no 4 GiB (or even 1 MiB) buffer.
  CHECK(corio_test::open_fd_count() == fds_before);
  CHECK(g_largest.load() <= kLimit);
}
