// Keepalive of the connections a TCP listener accepts, at the moment it starts to listen.
// This program replaces listen(2) and setsockopt(2) (its own executable: tests/meson.build,
// separate_tests): both pass through to the system call, but while armed, listen() also
// connects a client to the socket it made listen and waits until that connection is
// queued, before returning to bind(); and setsockopt() refuses SO_KEEPALIVE. So the tests
// see what a client that connects the moment the port listens gets, and what bind() did
// when SO_KEEPALIVE could not be set, every time (no race to win).
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/tcp.hpp>

#include "helpers.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>
#include <vector>

using corio::task;
using corio::ipc::listener;
using corio::ipc::listener_options;
using corio::ipc::socket_address;

namespace {

// Set and read on the test's thread, which also calls bind() (and so listen and
// setsockopt); runtime workers make no such calls. Atomics only to say so; relaxed.
std::atomic<bool> g_connect_at_listen{false};
std::atomic<bool> g_refuse_keepalive{false};
std::atomic<int> g_listens{0};
std::atomic<int> g_client{-1};  // the client connected by listen()

// Connects a client to the listening socket `fd` and waits until its connection is in the
// accept queue (the handshake done: the kernel made the connection's socket).
void connect_client(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return;
  }
  const int c = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0) {
    return;
  }
  if (::connect(c, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    ::close(c);
    return;
  }
  pollfd queued{fd, POLLIN, 0};  // a listening socket is readable when a connection waits
  (void)::poll(&queued, 1, 10000);
  g_client.store(c, std::memory_order_relaxed);
}

// The options of `fd` that keepalive sets: SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL,
// TCP_KEEPCNT (-1 for one that cannot be read).
std::vector<int> keepalive_of(int fd) {
  const std::pair<int, int> options[] = {
      {SOL_SOCKET, SO_KEEPALIVE}, {IPPROTO_TCP, TCP_KEEPIDLE}, {IPPROTO_TCP, TCP_KEEPINTVL}, {IPPROTO_TCP, TCP_KEEPCNT}};
  std::vector<int> got;
  for (auto [level, name] : options) {
    int v = -1;
    socklen_t len = sizeof v;
    got.push_back(::getsockopt(fd, level, name, &v, &len) == 0 ? v : -1);
  }
  return got;
}

// Arms listen() for one bind: the client it connected is closed at the end.
struct connect_at_listen {
  connect_at_listen() { g_connect_at_listen.store(true, std::memory_order_relaxed); }
  ~connect_at_listen() {
    g_connect_at_listen.store(false, std::memory_order_relaxed);
    if (const int c = g_client.exchange(-1, std::memory_order_relaxed); c >= 0) {
      ::close(c);
    }
  }
  connect_at_listen(const connect_at_listen&) = delete;
  connect_at_listen& operator=(const connect_at_listen&) = delete;
};

}  // namespace

extern "C" int listen(int fd, int backlog) noexcept {
  g_listens.fetch_add(1, std::memory_order_relaxed);
  const auto r = static_cast<int>(::syscall(SYS_listen, fd, backlog));
  if (r == 0 && g_connect_at_listen.load(std::memory_order_relaxed)) {
    const int saved = errno;
    connect_client(fd);
    errno = saved;
  }
  return r;
}

extern "C" int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept {
  if (level == SOL_SOCKET && name == SO_KEEPALIVE && g_refuse_keepalive.load(std::memory_order_relaxed)) {
    errno = ENOPROTOOPT;
    return -1;
  }
  return static_cast<int>(::syscall(SYS_setsockopt, fd, level, name, value, len));
}

// listener::bind used to set keepalive after listen(2): a client whose handshake completed
// in between was accepted without it ({0, 7200, 75, 9}: the system's defaults).
TEST_CASE("listener: a client that connects the moment the port listens has keepalive on", "[ipc][listener]") {
  corio::runtime rt(corio_test::workers(1));
  connect_at_listen armed;
  auto l = listener::bind(socket_address::loopback_v4(0), listener_options{});
  REQUIRE(l);
  REQUIRE(g_client.load(std::memory_order_relaxed) >= 0);  // connected at listen
  auto got = rt.block_on([](listener& l) -> task<std::vector<int>> {
    auto c = co_await l.accept_unauthenticated();
    co_return c ? keepalive_of(c->stream().fd()) : std::vector<int>{};
  }(*l));
  CHECK(got == std::vector<int>{1, 60, 10, 6});
}

TEST_CASE("tcp_listener: keepalive options reach a client that connects the moment the port listens",
          "[ipc][tcp]") {
  corio::runtime rt(corio_test::workers(1));
  connect_at_listen armed;
  corio::ipc::tcp_listen_options o;
  o.keepalive = {.enabled = true, .idle_s = 30, .interval_s = 5, .probes = 3};
  auto l = corio::ipc::tcp_listener::bind(socket_address::loopback_v4(0), o);
  REQUIRE(l);
  REQUIRE(g_client.load(std::memory_order_relaxed) >= 0);
  auto got = rt.block_on([](corio::ipc::tcp_listener& l) -> task<std::vector<int>> {
    auto s = co_await l.accept();
    co_return s ? keepalive_of(s->fd()) : std::vector<int>{};
  }(*l));
  CHECK(got == std::vector<int>{1, 30, 5, 3});
}

// SO_KEEPALIVE refused: bind fails with that error before the socket ever listened (no
// client is taken into a queue only to be reset), and leaves no descriptor open.
TEST_CASE("listener: bind fails cleanly, without listening, when SO_KEEPALIVE cannot be set", "[ipc][listener]") {
  const std::size_t fds_before = corio_test::open_fd_count();
  const int listens_before = g_listens.load(std::memory_order_relaxed);
  g_refuse_keepalive.store(true, std::memory_order_relaxed);
  auto l = listener::bind(socket_address::loopback_v4(0), listener_options{});
  g_refuse_keepalive.store(false, std::memory_order_relaxed);
  REQUIRE_FALSE(l);
  CHECK(l.error() == std::errc::no_protocol_option);
  CHECK(g_listens.load(std::memory_order_relaxed) == listens_before);
  CHECK(corio_test::open_fd_count() == fds_before);
}
