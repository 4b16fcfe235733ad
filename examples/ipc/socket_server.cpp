// socket_server: the tutorial's multiprocessing.connection Listener on localhost:6000.
// Prints every message; 'close connection' ends the connection, 'close server' the server.
//   socket_server [--port N]      run until a client sends 'close server'
//   socket_server --self-test     also runs the tutorial's client in-process (port 0)
// (The tutorial's authkey handshake is a separate concept, not shown here.)
#include "../common/args.hpp"
#include "framed.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>

using corio::task;
using corio::ipc::socket_address;
using corio::ipc::tcp_listener;
using corio::ipc::tcp_stream;

namespace {

task<int> serve(const tcp_listener& listener) {
  bool running = true;
  while (running) {
    auto conn = co_await listener.accept();
    if (!conn) {
      const std::error_code& ec = conn.error();
      if (ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system ||
          ec == std::errc::no_buffer_space || ec == std::errc::not_enough_memory) {
        // Out of fds or memory: the pending connection stays queued; back off and retry
        // (a client closing frees an fd), rather than spinning or giving up.
        std::fprintf(stderr, "accept: %s (backing off)\n", ec.message().c_str());
        (void)co_await corio::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      if (ec == std::errc::bad_file_descriptor || ec == std::errc::invalid_argument ||
          ec == std::errc::not_a_socket || ec == std::errc::operation_canceled || ec == corio::errc::closed ||
          ec == corio::errc::shut_down) {
        std::fprintf(stderr, "accept: %s (listener closed)\n", ec.message().c_str());
        co_return 1;
      }
      // ECONNABORTED, EPROTO, EPERM (firewall), ...: that one connection failed.
      std::fprintf(stderr, "accept: %s (continuing)\n", ec.message().c_str());
      continue;
    }
    std::printf("connection accepted from %s\n", conn->peer_address().value().to_string().c_str());
    for (;;) {
      auto msg = co_await framed::recv(*conn);
      if (!msg) {
        std::printf("connection lost: %s\n", msg.error().message().c_str());
        break;
      }
      std::printf("%s\n", msg->c_str());
      if (*msg == "close connection") {
        break;
      }
      if (*msg == "close server") {
        running = false;
        break;
      }
    }
  }
  co_return 0;
}

task<void> tutorial_client(socket_address addr, std::vector<std::string> messages) {
  auto conn = co_await tcp_stream::connect(addr);
  for (auto& m : messages) {
    if (conn) {
      (void)co_await framed::send(*conn, m);
    }
  }
}

task<int> self_test(const tcp_listener& l) {
  auto server = corio::spawn(serve(l));
  auto addr = l.local_address().value();
  // (Named vectors: g++ 12 rejects a braced list of string literals as a coroutine argument.)
  std::vector<std::string> first{"foo1", "foo2", "close connection"};
  std::vector<std::string> second{"foo3", "close server"};
  co_await tutorial_client(addr, first);
  co_await tutorial_client(addr, second);
  co_return co_await server;
}

}  // namespace

int main(int argc, char** argv) {
  bool test = false;
  std::uint16_t port = 6000;
  example::args args("socket_server", "the tutorial's connection Listener on localhost");
  args.port(port);
  args.flag("--self-test", test, "also run the tutorial's client in-process (any free port)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  auto l = tcp_listener::bind(socket_address::loopback_v4(test ? 0 : port));
  if (!l) {
    std::fprintf(stderr, "socket_server: bind: %s\n", l.error().message().c_str());
    return 1;
  }
  corio::runtime rt;
  return rt.block_on(test ? self_test(*l) : serve(*l));
}
