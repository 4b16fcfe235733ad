// manager_client's create, stopped while it waits for its reply, when there is no memory for
// the task that would finish it (receive the rest of the reply, drop the object). This
// program replaces the global operator new (replaced_new.hpp; its own executable:
// tests/meson.build, separate_tests): while a thread has armed it, every allocation of
// more than 1 KiB fails there. The frame of that task is larger (smaller frames come from
// corio's frame allocator, which the test does not fail; under ASan and TSan that
// allocator bypasses its slab and every frame comes from operator new, the small ones
// still allowed here); the test checks that an allocation did fail. The server is a plain
// thread with blocking sockets (no allocation on the armed worker), speaking just enough
// of the managers protocol; each of its waits is bounded (10 s), and the test ends it
// (shuts its listening socket down and joins it) however the test's own part ends.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/frame.hpp>
#include <corio/ipc/manager_client.hpp>
#include <corio/ipc/pickle.hpp>

#include "helpers.hpp"
#include "manager_helpers.hpp"
#include "replaced_new.hpp"

#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::manager_client;
using corio::ipc::socket_address;
namespace pickle = corio::ipc::pickle;

namespace {

thread_local bool t_armed = false;
std::atomic<int> g_failed{0};  // allocations failed (relaxed: a count read after the fact)

void* checked_malloc(std::size_t n) noexcept {
  if (t_armed && n > 1024) {
    g_failed.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  return std::malloc(n == 0 ? 1 : n);
}

}  // namespace

// Not inlined: g++ 12 at -O3 would see malloc() under operator new in this file's own
// vectors and warn (-Wmismatched-new-delete), though operator delete frees with free().
[[gnu::noinline]] void* corio_test_allocate(std::size_t n) noexcept { return checked_malloc(n); }  // replaced_new.hpp

namespace {

bool read_exact(int fd, void* to, std::size_t n) {
  auto* p = static_cast<char*>(to);
  while (n > 0) {
    const ssize_t got = ::read(fd, p, n);
    if (got <= 0) {
      return false;
    }
    p += got;
    n -= static_cast<std::size_t>(got);
  }
  return true;
}

// Accepts a connection within 10 s (-1: none came, or the socket was shut down); its reads
// and writes then give up after 10 s of silence.
int accept_within_10s(int listening) {
  pollfd ready{listening, POLLIN, 0};
  if (::poll(&ready, 1, 10000) != 1 || (ready.revents & POLLIN) == 0) {
    return -1;
  }
  const int fd = ::accept4(listening, nullptr, nullptr, SOCK_CLOEXEC);
  const timeval limit{10, 0};
  if (fd >= 0 && (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) != 0 ||
                  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) != 0)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool write_all(int fd, const void* from, std::size_t n) {
  const auto* p = static_cast<const char*>(from);
  while (n > 0) {
    const ssize_t put = ::write(fd, p, n);
    if (put <= 0) {
      return false;
    }
    p += put;
    n -= static_cast<std::size_t>(put);
  }
  return true;
}

// Reads one message (a 4-byte big-endian length, then that many bytes); false on EOF.
bool skip_message(int fd) {
  unsigned char head[4];
  if (!read_exact(fd, head, 4)) {
    return false;
  }
  std::vector<char> body((std::size_t{head[0]} << 24) | (std::size_t{head[1]} << 16) | (std::size_t{head[2]} << 8) |
                         head[3]);
  return read_exact(fd, body.data(), body.size());
}

// A reply's bytes on the wire: prefix and pickle.
std::vector<std::byte> framed(const pickle::value& reply) {
  std::vector<std::byte> body;
  REQUIRE(pickle::dump(reply, body));
  const auto head = corio::ipc::frame::encode_header(body.size());
  std::vector<std::byte> out(head.view().begin(), head.view().end());
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

// The server's side, on its own thread: answers connect()'s 'dummy' request, reads the
// create request on the next connection and then sends nothing (or, with `half`, the
// first half of a create reply, and waits until the client has read it); then reports
// whether the client closed that connection within 10 s.
struct fake_server {
  int listening = -1;
  socket_address address;
  bool half = false;
  std::vector<std::byte> dummy_reply = framed(pickle::value::tuple_of("#RETURN", pickle::value()));
  std::vector<std::byte> create_reply =
      framed(pickle::value::tuple_of("#RETURN", pickle::value::tuple_of("7f00", pickle::value::list_of("get"))));
  // Set by the server's thread, read by the test's task (relaxed: each is set once and
  // orders nothing else; the thread is joined before the rest is read).
  std::atomic<bool> waiting{false};  // the create request was read (and half a reply sent)
  bool closed_by_client = false;
  bool failed = false;

  explicit fake_server(bool half_reply) : half(half_reply) {
    static std::atomic<int> count{0};  // a name per server (relaxed: only unique)
    const std::string name =
        "corio-manager-alloc-" + std::to_string(::getpid()) + "-" + std::to_string(count.fetch_add(1));
    address = socket_address::unix_abstract(name).value();
    listening = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listening >= 0);
    REQUIRE(::bind(listening, address.native(), address.size()) == 0);
    REQUIRE(::listen(listening, 4) == 0);
  }
  ~fake_server() { ::close(listening); }
  fake_server(const fake_server&) = delete;
  fake_server& operator=(const fake_server&) = delete;

  void run() {
    const int first = accept_within_10s(listening);
    failed = first < 0 || !skip_message(first) || !write_all(first, dummy_reply.data(), dummy_reply.size());
    if (first >= 0) {
      ::close(first);
    }
    const int c = failed ? -1 : accept_within_10s(listening);
    if (c < 0 || !skip_message(c)) {
      failed = true;
    } else {
      if (half) {
        const std::size_t n = create_reply.size() / 2;
        failed = !write_all(c, create_reply.data(), n);
        // The client has read it all (a Unix socket counts what its peer has not read).
        int unread = -1;
        for (int i = 0; i < 10000 && !failed && (::ioctl(c, SIOCOUTQ, &unread) != 0 || unread != 0); ++i) {
          std::this_thread::sleep_for(1ms);
        }
        failed = failed || unread != 0;
      }
      waiting.store(true, std::memory_order_relaxed);
      pollfd end{c, POLLIN, 0};
      char byte = 0;
      closed_by_client = ::poll(&end, 1, 10000) == 1 && ::read(c, &byte, 1) == 0;
    }
    if (c >= 0) {
      ::close(c);
    }
    waiting.store(true, std::memory_order_relaxed);
  }
};

// Creates on `server`, stops the create once the server has its request (and half the
// reply was read), with allocations above 1 KiB failing on this worker meanwhile.
task<bool> stop_create_without_memory(fake_server& server) {
  corio::ipc::client_options o;  // no authkey: no handshake
  auto c = co_await manager_client::connect(server.address, o);
  REQUIRE(c);
  std::stop_source stop;
  auto made = corio::spawn(c->create("Thing", {}, {}, nullptr, stop.get_token()));
  const bool waiting = co_await corio_test::within(10s, [&server] { return server.waiting.load(); });
  t_armed = true;  // the create runs on this worker too (one worker)
  stop.request_stop();
  auto r = co_await made;
  t_armed = false;
  co_return waiting && !r && r.error() == std::errc::operation_canceled;
}

}  // namespace

// Before, the receive of the reply ran on with nobody to wait for it: before the reply's
// first byte until the connection's idle_timeout (by default never), in its middle until
// stall_timeout (30 s), holding the connection open.
TEST_CASE("manager_client: a create stopped when its cleanup task cannot be made leaves nothing running",
          "[manager]") {
  const bool half = GENERATE(false, true);
  INFO((half ? "stopped in the middle of the reply" : "stopped before the reply"));
  fake_server server(half);
  std::thread serving([&server] { server.run(); });
  // However the rest ends (a failed REQUIRE throws): the server's thread is ended and
  // joined (a joinable std::thread destroyed would terminate the program).
  struct end_serving {
    fake_server& server;
    std::thread& thread;
    ~end_serving() {
      ::shutdown(server.listening, SHUT_RDWR);  // wakes its wait for a connection
      if (thread.joinable()) {
        thread.join();
      }
    }
  } ending{server, serving};
  const int failed_before = g_failed.load(std::memory_order_relaxed);
  bool stopped = false;
  {
    corio::runtime rt(corio_test::workers(1));
    stopped = rt.block_on(stop_create_without_memory(server));
    serving.join();  // here, not on a worker: it waits up to 10 s for the client to close
  }
  CHECK(stopped);
  CHECK_FALSE(server.failed);
  CHECK(g_failed.load(std::memory_order_relaxed) > failed_before);  // the cleanup task could not be made
  CHECK(server.closed_by_client);
}
