// Tests for listener.accept()'s direct path (nowait_accept in ipc/detail/ops.hpp, issue 16 item
// 15): connections already queued are accepted with accept4(2), not one ring submission
// each; every connection is accepted exactly once, close-on-exec and blocking like the
// ring's; the loop still lets other tasks run; a stop or a closed listener is reported as
// before; and a listener made from a blocking descriptor of the caller's accepts through
// the ring only (never blocking its worker).
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stop_token>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::socket_address;
using corio::ipc::tcp_listener;
using corio::ipc::unix_listener;

using corio_test::raise_fd_limit;

using corio_test::sqes_submitted;

namespace {

/// `n` blocking connects from this (non-worker) thread; each client then writes its
/// index, so the server can tell the connections apart. They wait in the listen queue.
std::vector<int> connect_clients(const socket_address& addr, int n) {
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    int fd = ::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::connect(fd, addr.native(), addr.size()) == 0);
    std::uint32_t id = static_cast<std::uint32_t>(i);
    REQUIRE(::write(fd, &id, sizeof id) == static_cast<ssize_t>(sizeof id));
    fds.push_back(fd);
  }
  return fds;
}

void close_all(const std::vector<int>& fds) {
  for (int fd : fds) {
    ::close(fd);
  }
}

template <class Listener>
task<std::vector<corio::result<int>>> accept_n(const Listener& l, int n) {
  std::vector<corio::result<int>> out;
  for (int i = 0; i < n; ++i) {
    auto s = co_await l.accept();
    out.push_back(s ? corio::result<int>(s->release()) : corio::result<int>(corio::unexpected(s.error())));
  }
  co_return out;
}

/// Every accepted descriptor: close-on-exec, blocking (as the ring's accept makes them),
/// and each client index seen exactly once. Closes them. (Counted, then checked once:
/// one assertion per connection would flood a failure's report.)
void check_each_once(const std::vector<corio::result<int>>& accepted, int n) {
  std::vector<int> seen(static_cast<std::size_t>(n), 0);
  int errors = 0;
  int not_cloexec = 0;
  int nonblocking_fds = 0;
  int unreadable = 0;
  for (const auto& r : accepted) {
    if (!r) {
      ++errors;
      continue;
    }
    int fd = *r;
    not_cloexec += (::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0 ? 1 : 0;
    nonblocking_fds += (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0 ? 1 : 0;
    std::uint32_t id = 0;
    if (::read(fd, &id, sizeof id) == static_cast<ssize_t>(sizeof id) && id < seen.size()) {
      ++seen[id];
    } else {
      ++unreadable;
    }
    ::close(fd);
  }
  CHECK(accepted.size() == static_cast<std::size_t>(n));
  CHECK(errors == 0);
  CHECK(not_cloexec == 0);
  CHECK(nonblocking_fds == 0);
  CHECK(unreadable == 0);
  CHECK(std::count(seen.begin(), seen.end(), 1) == n);
}

/// Accepts `n` queued connections on `l` and checks the submissions and the connections.
template <class Listener>
void accept_queued(const Listener& l, const socket_address& addr, int n) {
  corio::runtime rt(corio_test::workers(1));
  auto clients = connect_clients(addr, n);
  const std::uint64_t before = sqes_submitted(rt);
  auto accepted = rt.block_on(accept_n(l, n));
  const std::uint64_t used = sqes_submitted(rt) - before;
  INFO("ring submissions for " << n << " queued connections: " << used);
  // Through the ring it was one per connection (n + 2 seen before the direct path).
  CHECK(used < static_cast<std::uint64_t>(n / 10));
  check_each_once(accepted, n);
  close_all(clients);
}

bool nonblocking(int fd) { return (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

// Whether the kernel lets `n` connections wait in a listen queue (net.core.somaxconn caps
// every backlog): with a smaller cap the test's blocking connects would retry their SYNs
// for minutes instead of completing before the first accept.
bool queue_holds(int n) {
  std::FILE* f = std::fopen("/proc/sys/net/core/somaxconn", "r");
  int cap = 0;
  if (f != nullptr) {
    if (std::fscanf(f, "%d", &cap) != 1) {
      cap = 0;
    }
    std::fclose(f);
  }
  return cap >= n;
}

}  // namespace

TEST_CASE("accept burst: 1,100 queued TCP connections take far fewer ring submissions than connections",
          "[ipc][accept]") {
  auto l = tcp_listener::bind(socket_address::loopback_v4(0));
  REQUIRE(l);
  // The documented side effect (Linux 5.19+): the listening socket is non-blocking.
  CHECK(nonblocking(l->fd()) == corio::port::features().multishot_accept);
  if (!corio::port::features().multishot_accept) {
    WARN("kernel before 5.19: accept() goes through the ring only; not tested");
    return;
  }
  if (!queue_holds(1100)) {
    WARN("net.core.somaxconn below 1,100: 1,100 connections cannot wait queued; not tested");
    return;
  }
  REQUIRE(raise_fd_limit(2 * 1100 + 200));  // clients and accepted connections at once
  accept_queued(*l, l->local_address().value(), 1100);
}

TEST_CASE("accept burst: queued Unix connections are accepted directly too", "[ipc][accept][unix]") {
  if (!corio::port::features().multishot_accept) {
    WARN("kernel before 5.19: accept() goes through the ring only; not tested");
    return;
  }
  auto addr = socket_address::unix_abstract("corio-accept-burst-" + std::to_string(::getpid()));
  REQUIRE(addr);
  auto l = unix_listener::bind(*addr);
  REQUIRE(l);
  CHECK(nonblocking(l->fd()));
  if (!queue_holds(300)) {
    WARN("net.core.somaxconn below 300: 300 connections cannot wait queued; not tested");
    return;
  }
  accept_queued(*l, *addr, 300);
}

namespace {

task<void> ticker(std::atomic<int>& ticks, const std::atomic<bool>& done) {
  while (!done.load(std::memory_order_relaxed)) {
    ticks.fetch_add(1, std::memory_order_relaxed);
    co_await corio::yield_now{};
  }
}

// Accepts `n` on one worker beside a task that counts its turns; yields the turns taken
// while the accepts ran.
task<int> accept_beside_ticker(const tcp_listener& l, int n, std::vector<corio::result<int>>& out) {
  std::atomic<int> ticks{0};
  std::atomic<bool> done{false};
  auto t = corio::spawn(ticker(ticks, done));
  co_await corio::yield_now{};  // let the ticker start
  const int before = ticks.load(std::memory_order_relaxed);
  out = co_await accept_n(l, n);
  const int during = ticks.load(std::memory_order_relaxed) - before;
  done.store(true, std::memory_order_relaxed);
  co_await t;
  co_return during;
}

}  // namespace

TEST_CASE("accept burst: a loop that always finds a connection queued still lets other tasks run",
          "[ipc][accept]") {
  auto l = tcp_listener::bind(socket_address::loopback_v4(0));
  REQUIRE(l);
  constexpr int kConns = 1100;
  if (!queue_holds(kConns)) {
    WARN("net.core.somaxconn below 1,100: 1,100 connections cannot wait queued; not tested");
    return;
  }
  REQUIRE(raise_fd_limit(2 * kConns + 200));
  auto clients = connect_clients(l->local_address().value(), kConns);
  corio::runtime rt(corio_test::workers(1));
  std::vector<corio::result<int>> accepted;
  int turns = rt.block_on(accept_beside_ticker(*l, kConns, accepted));
  INFO("ticker turns during " << kConns << " accepts: " << turns);
  // The cooperative budget (128 per scheduler tick) makes the loop yield about every 128.
  CHECK(turns >= 4);
  check_each_once(accepted, kConns);
  close_all(clients);
}

TEST_CASE("accept burst: a stopped accept with a connection queued is cancelled and loses nothing",
          "[ipc][accept]") {
  auto l = tcp_listener::bind(socket_address::loopback_v4(0));
  REQUIRE(l);
  auto clients = connect_clients(l->local_address().value(), 1);
  corio::runtime rt(corio_test::workers(1));
  auto run = [](const tcp_listener& l) -> task<bool> {
    std::stop_source stop;
    stop.request_stop();
    auto cancelled = co_await l.accept(stop.get_token());
    auto next = co_await l.accept();
    co_return !cancelled && cancelled.error() == std::errc::operation_canceled && next.has_value();
  };
  CHECK(rt.block_on(run(*l)));
  close_all(clients);
}

TEST_CASE("accept burst: accept on a closed listener reports bad_file_descriptor", "[ipc][accept]") {
  auto l = tcp_listener::bind(socket_address::loopback_v4(0));
  REQUIRE(l);
  auto clients = connect_clients(l->local_address().value(), 1);
  corio::runtime rt(corio_test::workers(1));
  auto run = [](tcp_listener& l) -> task<bool> {
    auto op = l.accept();  // made before the close, awaited after
    l.close();
    auto r = co_await std::move(op);
    co_return !r && r.error() == std::errc::bad_file_descriptor;
  };
  CHECK(rt.block_on(run(*l)));
  close_all(clients);
}

TEST_CASE("accept burst: a listener from a blocking descriptor of the caller's accepts through the ring",
          "[ipc][accept]") {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  auto any = socket_address::loopback_v4(0);
  REQUIRE(::bind(fd, any.native(), any.size()) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  tcp_listener l(fd);
  CHECK_FALSE(nonblocking(l.fd()));
  auto clients = connect_clients(l.local_address().value(), 1);
  corio::runtime rt(corio_test::workers(1));
  auto run = [](const tcp_listener& l) -> task<bool> {
    auto first = co_await l.accept();
    // Nothing queued now: the accept waits in the ring (a blocking accept4 would hang
    // the worker, and the timeout could not fire).
    auto second = co_await corio::timeout(l.accept(), 50ms);
    co_return first.has_value() && !second && second.error() == std::errc::timed_out;
  };
  CHECK(rt.block_on(run(l)));
  close_all(clients);
}
