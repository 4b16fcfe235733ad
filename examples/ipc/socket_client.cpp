// socket_client: the tutorial's multiprocessing.connection Client, speaking Python's wire
// format: Client(('localhost', 6000), authkey=b'password'), then conn.send('foo1'),
// sleep 1 s, conn.send('foo2'), sleep 1 s, conn.send('close server'), conn.close().
// Python's own Listener accepts it unmodified (any Python 3):
//   python3 -c "from multiprocessing.connection import Listener;
//     l = Listener(('localhost', 6000), authkey=b'password'); c = l.accept();
//     print([c.recv() for _ in range(3)])"
// (one line; see README.md)
//   socket_client [--port N] [--authkey KEY] [--delay-ms N] [MESSAGE...]
//       (the messages default to the tutorial's: foo1 foo2 'close server')
//   socket_client --self-test     runs against an in-process listener and checks what arrived
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/client.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/pickle.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::listener;
using corio::ipc::socket_address;
namespace pickle = corio::ipc::pickle;

namespace {

task<int> run_client(socket_address addr, std::string authkey, std::vector<std::string> messages,
                     std::chrono::milliseconds delay) {
  auto conn = co_await corio::ipc::connect(addr, std::move(authkey));
  if (!conn) {
    std::fprintf(stderr, "socket_client: connect %s: %s\n", addr.to_string().c_str(), conn.error().message().c_str());
    co_return 1;
  }
  for (auto& m : messages) {
    if (auto r = co_await conn->send(pickle::value(m)); !r) {
      std::fprintf(stderr, "socket_client: send: %s\n", r.error().message().c_str());
      co_return 1;
    }
    std::printf("sent %s\n", m.c_str());
    std::fflush(stdout);
    (void)co_await corio::sleep_for(delay);
  }
  co_return 0;  // the connection closes as `conn` goes (Python's conn.close())
}

// The tutorial's server loop for one connection, collecting what arrives.
task<std::vector<std::string>> collect(listener& l) {
  std::vector<std::string> got;
  auto conn = co_await l.accept();
  while (conn) {
    auto msg = co_await conn->recv();
    if (!msg) {
      break;
    }
    got.push_back(msg->is_str() ? *msg->if_str() : msg->repr());
  }
  co_return got;
}

task<int> self_test(listener& l, std::vector<std::string> messages) {
  auto server = corio::spawn(collect(l));
  int rc = co_await run_client(l.address().value(), "password", messages, 10ms);
  auto got = co_await server;
  bool ok = rc == 0 && got == messages;
  std::printf("listener received %zu messages: %s\n", got.size(), ok ? "as sent" : "WRONG");
  co_return ok ? 0 : 1;
}

int example_main(int argc, char** argv) {
  std::uint16_t port = 6000;
  int delay_ms = 1000;
  bool test = false;
  std::string authkey = "password";
  std::vector<std::string> messages;
  example::args args("socket_client", "the tutorial's connection Client: foo1, foo2, close server");
  args.port(port);
  args.option("--authkey", authkey, "KEY", "the shared key (default password)");
  args.option("--delay-ms", delay_ms, 0, 3600000, "MS", "pause after each message, 0..3600000 (default 1000)");
  args.flag("--self-test", test, "run against an in-process listener and check what arrived");
  args.rest("MESSAGE", messages, "messages to send (default: foo1 foo2 'close server')");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (messages.empty()) {
    messages = {"foo1", "foo2", "close server"};
  }
  corio::runtime rt;
  if (test) {
    corio::ipc::listener_options o;
    o.auth.authkey = "password";
    auto l = listener::bind(socket_address::loopback_v4(0), o);
    return l ? rt.block_on(self_test(*l, messages)) : 1;
  }
  return rt.block_on(run_client(socket_address::loopback_v4(port), authkey, messages,
                                std::chrono::milliseconds(delay_ms)));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("socket_client", example_main, argc, argv); }
