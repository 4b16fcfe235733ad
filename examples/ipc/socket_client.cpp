// socket_client: the tutorial's multiprocessing.connection Client: sends 'foo1', 'foo2'
// (one second apart in the tutorial; --delay-ms here) and 'close server' to localhost:6000.
//   socket_client [--port N] [--delay-ms N]
//   socket_client --self-test     runs against an in-process listener and checks what arrived
#include "../common/args.hpp"
#include "framed.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::socket_address;
using corio::ipc::tcp_listener;
using corio::ipc::tcp_stream;

namespace {

task<int> run_client(socket_address addr, std::chrono::milliseconds delay) {
  auto conn = co_await tcp_stream::connect(addr, 2s);
  if (!conn) {
    std::fprintf(stderr, "socket_client: connect %s: %s\n", addr.to_string().c_str(), conn.error().message().c_str());
    co_return 1;
  }
  for (const char* m : {"foo1", "foo2", "close server"}) {
    if (auto r = co_await framed::send(*conn, m); !r) {
      std::fprintf(stderr, "socket_client: send: %s\n", r.error().message().c_str());
      co_return 1;
    }
    std::printf("sent %s\n", m);
    (void)co_await corio::sleep_for(delay);
  }
  co_return 0;
}

task<std::vector<std::string>> collect(const tcp_listener& l) {
  std::vector<std::string> got;
  auto conn = co_await l.accept();
  while (conn) {
    auto m = co_await framed::recv(*conn);
    if (!m) {
      break;
    }
    got.push_back(*m);
  }
  co_return got;
}

task<int> self_test(const tcp_listener& l) {
  auto server = corio::spawn(collect(l));
  int rc = co_await run_client(l.local_address().value(), 10ms);
  auto got = co_await server;
  bool ok = rc == 0 && got == std::vector<std::string>{"foo1", "foo2", "close server"};
  std::printf("listener received %zu messages: %s\n", got.size(), ok ? "as sent" : "WRONG");
  co_return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint16_t port = 6000;
  int delay_ms = 1000;
  bool test = false;
  example::args args("socket_client", "the tutorial's connection Client: foo1, foo2, close server");
  args.port(port);
  args.option("--delay-ms", delay_ms, 0, 3600000, "MS", "pause after each message, 0..3600000 (default 1000)");
  args.flag("--self-test", test, "run against an in-process listener and check what arrived");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  corio::runtime rt;
  if (test) {
    auto l = tcp_listener::bind(socket_address::loopback_v4(0));
    return l ? rt.block_on(self_test(*l)) : 1;
  }
  return rt.block_on(run_client(socket_address::loopback_v4(port),
                                std::chrono::milliseconds(delay_ms)));
}
