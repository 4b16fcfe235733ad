// Stress test for ipc/tcp.hpp: 10,000 concurrent TCP connections on loopback, each doing
// three request/response round trips with every byte checked.
//
// Descriptors: 10,000 connections need 20,000 socket descriptors, and this machine's hard
// RLIMIT_NOFILE is 20,000. So the clients run in a forked child process (forked before
// any runtime exists, so the child is single-threaded at fork) and each process raises its
// soft RLIMIT_NOFILE to 10,100 or more, raising the hard limit too when it is lower (needs
// CAP_SYS_RESOURCE; CI runs as root). If it cannot, the test exits 77, which meson
// reports as SKIP (never a silent pass).
// Concurrency: the server accepts all 10,000 connections before it answers any request,
// and each client keeps its connection open until it has its responses, so all 10,000 are
// open at once.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <vector>

using corio::task;
using corio::ipc::socket_address;
using corio::ipc::tcp_listener;
using corio::ipc::tcp_stream;

namespace {

constexpr int kConnections = 10'000;
constexpr int kRounds = 3;
constexpr std::size_t kMessage = 64;

bool raise_fd_limit(rlim_t need) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_max != RLIM_INFINITY && r.rlim_max < need) {
    r.rlim_max = need;  // needs CAP_SYS_RESOURCE (tests run as root in CI)
  }
  r.rlim_cur = r.rlim_max == RLIM_INFINITY ? need : r.rlim_max;
  return ::setrlimit(RLIMIT_NOFILE, &r) == 0;
}

std::byte request_byte(int client, int round, std::size_t i) {
  return static_cast<std::byte>((client * 131 + round * 17 + static_cast<int>(i) * 7) & 0xff);
}
std::byte response_byte(std::byte b) { return static_cast<std::byte>(~static_cast<unsigned>(b) & 0xff); }

task<void> client(socket_address addr, int id, std::atomic<int>& ok, std::atomic<int>& failed) {
  auto s = co_await tcp_stream::connect(addr);
  if (!s) {
    failed.fetch_add(1, std::memory_order_relaxed);
    co_return;
  }
  std::array<std::byte, kMessage> req{};
  std::array<std::byte, kMessage> resp{};
  for (int round = 0; round < kRounds; ++round) {
    for (std::size_t i = 0; i < kMessage; ++i) {
      req[i] = request_byte(id, round, i);
    }
    if (!co_await s->write_all(req) || !co_await s->read_exact(resp)) {
      failed.fetch_add(1, std::memory_order_relaxed);
      co_return;
    }
    for (std::size_t i = 0; i < kMessage; ++i) {
      if (resp[i] != response_byte(req[i])) {
        failed.fetch_add(1, std::memory_order_relaxed);
        co_return;
      }
    }
  }
  ok.fetch_add(1, std::memory_order_relaxed);
}

task<int> run_clients(socket_address addr) {
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::vector<corio::join_handle<void>> hs;
  hs.reserve(kConnections);
  for (int i = 0; i < kConnections; ++i) {
    hs.push_back(corio::spawn(client(addr, i, ok, failed)));
  }
  for (auto& h : hs) {
    co_await h;
  }
  co_return ok.load() == kConnections && failed.load() == 0 ? 0 : 1;
}

// Echoes each 64-byte request with every byte inverted, until end of stream.
task<void> handle(tcp_stream s, std::atomic<int>& served, std::atomic<int>& bad) {
  std::array<std::byte, kMessage> buf{};
  for (int round = 0; round < kRounds; ++round) {
    if (!co_await s.read_exact(buf)) {
      bad.fetch_add(1, std::memory_order_relaxed);
      co_return;
    }
    for (auto& b : buf) {
      b = response_byte(b);
    }
    if (!co_await s.write_all(buf)) {
      bad.fetch_add(1, std::memory_order_relaxed);
      co_return;
    }
  }
  std::array<std::byte, 1> eof{};
  auto n = co_await s.read_some(eof);
  if (!n || *n != 0) {
    bad.fetch_add(1, std::memory_order_relaxed);
    co_return;
  }
  served.fetch_add(1, std::memory_order_relaxed);
}

struct server_outcome {
  int accepted = 0;
  int served = 0;
  int bad = 0;
};

task<server_outcome> run_server(const tcp_listener& l) {
  server_outcome out;
  std::vector<tcp_stream> conns;
  conns.reserve(kConnections);
  while (static_cast<int>(conns.size()) < kConnections) {
    auto s = co_await l.accept();
    if (!s) {
      ++out.bad;
      if (out.bad > 100) {
        co_return out;
      }
      continue;
    }
    conns.push_back(std::move(*s));
  }
  out.accepted = static_cast<int>(conns.size());
  std::atomic<int> served{0};
  std::atomic<int> bad{0};
  std::vector<corio::join_handle<void>> hs;
  hs.reserve(conns.size());
  for (auto& c : conns) {
    hs.push_back(corio::spawn(handle(std::move(c), served, bad)));
  }
  for (auto& h : hs) {
    co_await h;
  }
  out.served = served.load();
  out.bad += bad.load();
  co_return out;
}

}  // namespace

TEST_CASE("tcp stress: 10,000 concurrent connections each get correct responses", "[ipc][tcp][stress]") {
  if (!raise_fd_limit(kConnections + 100)) {
    // Not silently passed: meson reports exit status 77 as SKIP.
    std::fprintf(stderr, "SKIP: RLIMIT_NOFILE cannot be raised to %d (hard limit, not root)\n", kConnections + 100);
    std::exit(77);
  }
  corio::ipc::tcp_listen_options o;
  o.backlog = 65535;  // clamped by net.core.somaxconn
  auto l = tcp_listener::bind(socket_address::loopback_v4(0), o);
  REQUIRE(l);
  auto addr = l->local_address().value();
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    l->close();
    int rc = 1;
    {
      corio::runtime rt(corio_test::workers(2));
      rc = rt.block_on(run_clients(addr));
    }
    ::_exit(rc);
  }
  server_outcome out;
  {
    corio::runtime rt(corio_test::workers(2));
    out = rt.block_on(run_server(*l));
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(out.accepted == kConnections);
  CHECK(out.served == kConnections);
  CHECK(out.bad == 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
