// echo_server: a TCP echo server, one task per connection.
//   echo_server [--port N] [--workers N]   serve until killed (port 0: pick one, printed; --help)
//   echo_server --self-test                serve, run 20 clients against itself, exit
//   --provided-buffers [--rx-buffer BYTES] [--rx-count N]
//       read through stream_receiver (multishot recv into a provided-buffer ring,
//       ipc/receiver.hpp; default 4 buffers of 16 KiB per connection: the memory of the
//       read_some server's 64 KiB buffer) instead of read_some into a buffer of its own
#include "../common/args.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/receiver.hpp>
#include <corio/ipc/tcp.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::socket_address;
using corio::ipc::tcp_listener;
using corio::ipc::tcp_stream;

namespace {

task<void> serve_connection(tcp_stream s) {
  (void)s.set_nodelay(true);
  std::vector<std::byte> buf(64 * 1024);
  for (;;) {
    auto n = co_await s.read_some(buf);
    if (!n || *n == 0) {
      co_return;  // error or end of stream: the destructor closes the socket
    }
    if (!co_await s.write_all(std::span(buf).first(*n))) {
      co_return;
    }
  }
}

bool g_provided = false;
corio::ipc::receive_options g_rx{.buffer_size = 16 * 1024, .buffer_count = 4};

task<void> serve_connection_rx(tcp_stream s) {
  (void)s.set_nodelay(true);
  auto rx = s.receiver(g_rx);
  if (!rx) {
    co_return;
  }
  for (;;) {
    auto b = co_await rx->receive();
    if (!b || b->empty()) {
      co_return;  // error or end of stream; rx goes before s (declared after it)
    }
    if (!co_await s.write_all(b->data())) {
      co_return;
    }
    // b goes back to the receiver's ring here.
  }
}

task<void> accept_loop(const tcp_listener& l) {
  for (;;) {
    auto s = co_await l.accept();
    if (!s) {
      if (s.error() == std::errc::operation_canceled) {
        co_return;
      }
      // EMFILE and friends: back off instead of spinning; existing connections go on.
      (void)co_await corio::sleep_for(10ms);
      continue;
    }
    if (g_provided) {
      (void)corio::spawn(serve_connection_rx(std::move(*s)));  // detached
    } else {
      (void)corio::spawn(serve_connection(std::move(*s)));  // detached
    }
  }
}

task<bool> one_client(socket_address addr, int id) {
  auto c = co_await tcp_stream::connect(addr, 2s);
  if (!c) {
    co_return false;
  }
  std::string msg = "hello from client " + std::to_string(id);
  std::string back(msg.size(), '\0');
  bool ok = co_await c->write_all(std::as_bytes(std::span(msg))) &&
            co_await c->read_exact(std::as_writable_bytes(std::span(back)));
  co_return ok && back == msg;
}

task<int> self_test(const tcp_listener& l) {
  auto addr = l.local_address().value();
  auto server = corio::spawn(accept_loop(l));  // destroyed by the runtime's shutdown
  std::vector<corio::join_handle<bool>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(corio::spawn(one_client(addr, i)));
  }
  int ok = 0;
  for (auto& c : clients) {
    ok += co_await c ? 1 : 0;
  }
  std::printf("self-test: %d/20 clients echoed correctly\n", ok);
  co_return ok == 20 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint16_t port = 7000;
  unsigned workers = 0;
  bool test = false;
  example::args args("echo_server", "a TCP echo server, one task per connection");
  args.port(port).workers(workers);
  args.flag("--self-test", test, "serve on any free port, run 20 clients against it, exit");
  args.flag("--provided-buffers", g_provided, "read through stream_receiver (provided-buffer ring)");
  args.option<std::size_t>("--rx-buffer", g_rx.buffer_size, 1, 1 << 20, "BYTES",
                           "receiver buffer size, 1..1048576 (default 16384)");
  args.option<std::size_t>("--rx-count", g_rx.buffer_count, 1, 32768, "N", "receiver buffers, 1..32768 (default 4)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (test) {
    port = 0;
  }
  corio::runtime rt(example::with_workers(workers));
  auto l = tcp_listener::bind(socket_address::loopback_v4(port));
  if (!l) {
    std::fprintf(stderr, "echo_server: bind: %s\n", l.error().message().c_str());
    return 1;
  }
  std::printf("echo_server listening on %s\n", l->local_address().value().to_string().c_str());
  std::fflush(stdout);
  if (test) {
    // The accept loop is bounded by a timeout; shutdown destroys it and the connections.
    return rt.block_on(self_test(*l));
  }
  rt.block_on(accept_loop(*l));
  return 0;
}
