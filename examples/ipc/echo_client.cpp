// echo_client: sends each argument to an echo server and prints what comes back.
//   echo_client HOST:PORT msg...     e.g. echo_client 127.0.0.1:7000 hello world
//   echo_client --self-test          starts an echo task in-process and talks to it
//   echo_client --help
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>
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

task<void> echo_once(const tcp_listener& l) {
  auto s = co_await l.accept();
  if (!s) {
    co_return;
  }
  std::vector<std::byte> buf(4096);
  for (;;) {
    auto n = co_await s->read_some(buf);
    if (!n || *n == 0 || !co_await s->write_all(std::span(buf).first(*n))) {
      co_return;
    }
  }
}

task<int> client(socket_address addr, std::vector<std::string> messages) {
  auto c = co_await tcp_stream::connect(addr, 2s);
  if (!c) {
    std::fprintf(stderr, "echo_client: connect %s: %s\n", addr.to_string().c_str(), c.error().message().c_str());
    co_return 1;
  }
  for (const auto& m : messages) {
    std::string back(m.size(), '\0');
    if (!co_await c->write_all(std::as_bytes(std::span(m))) ||
        !co_await c->read_exact(std::as_writable_bytes(std::span(back)))) {
      std::fprintf(stderr, "echo_client: connection lost\n");
      co_return 1;
    }
    std::printf("sent %-12s got %s\n", m.c_str(), back.c_str());
    if (back != m) {
      co_return 1;
    }
  }
  co_return 0;
}

task<int> self_test(const tcp_listener& l, std::vector<std::string> messages) {
  auto server = corio::spawn(echo_once(l));
  int rc = co_await client(l.local_address().value(), std::move(messages));
  co_await server;  // ends when the client closes
  co_return rc;
}

int example_main(int argc, char** argv) {
  bool test = false;
  std::string address;
  std::vector<std::string> messages;
  example::args args("echo_client", "send each message to an echo server and print what comes back");
  args.flag("--self-test", test, "start an echo task in-process and talk to it");
  args.positional("HOST:PORT", address, "the server, e.g. 127.0.0.1:7000");
  args.rest("message", messages, "the messages to send, one round trip each");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (test) {
    if (!address.empty()) {
      return args.fail("--self-test takes no server address");
    }
    corio::runtime rt;
    auto l = tcp_listener::bind(socket_address::loopback_v4(0));
    if (!l) {
      return 1;
    }
    std::vector<std::string> defaults{"hello", "corio", "echo"};
    return rt.block_on(self_test(*l, defaults));
  }
  if (address.empty() || messages.empty()) {
    return args.fail(address.empty() ? "missing HOST:PORT" : "missing the messages to send");
  }
  auto addr = socket_address::parse(address);
  if (!addr) {
    return args.fail(address + ": " + addr.error().message());
  }
  corio::runtime rt;
  return rt.block_on(client(*addr, std::move(messages)));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("echo_client", example_main, argc, argv); }
