// ipc::connection's batches against Python (ipc/connection.hpp): every Python 3 on the
// machine (tests/ipc/pythons.hpp) reads a batch sent with send_many / send_many_bytes as
// separate messages with its unmodified multiprocessing.connection.Client, and its
// messages sent in a row are collected by recv_some however they arrive.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"
#include "pythons.hpp"

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <corio/ipc/connection.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/process/command.hpp>

using namespace std::chrono_literals;
using corio::task;
namespace pickle = corio::ipc::pickle;

namespace {

// Python's Client reads a batch as separate messages, and its messages sent in a row are
// collected by recv_some however they arrive.
const char* batch_client_script = R"(
import sys
from multiprocessing.connection import Client
c = Client(('127.0.0.1', int(sys.argv[1])), authkey=b'password')
c.send('go')
print([c.recv() for _ in range(3)])
print([c.recv_bytes() for _ in range(2)])
for i in range(5):
    c.send(i)
print(c.recv())
c.close()
)";

task<std::string> serve_batches(corio::ipc::listener& l) {
  auto c = co_await l.accept();
  if (!c || !co_await c->recv()) {
    co_return "accept or first recv failed";
  }
  std::vector<pickle::value> values;
  values.emplace_back(1);
  values.emplace_back("two");
  values.push_back(pickle::value::tuple_of(3, nullptr));
  std::vector<std::span<const std::byte>> raw;
  raw.push_back(corio_test::bytes("raw"));
  raw.push_back(corio_test::bytes(""));
  if (!co_await c->send_many(values) || !co_await c->send_many_bytes(raw)) {
    co_return "send_many failed";
  }
  std::int64_t sum = 0;
  for (int got = 0; got < 5;) {
    auto n = co_await c->recv_some(values, 5 - static_cast<std::size_t>(got));
    if (!n) {
      co_return "recv_some: " + n.error().message();
    }
    got += static_cast<int>(*n);
    for (auto& v : values) {
      sum += v.as<std::int64_t>().value_or(1000);
    }
  }
  co_return co_await c->send(pickle::value(sum)) ? "" : "last send failed";
}

// One Python's Client against a corio server (each Python in its own task: their
// start-up times overlap).
task<std::string> batches_with(std::string python) {
  corio::ipc::listener_options o;
  o.auth.authkey = "password";
  auto l = corio::ipc::listener::bind(corio::ipc::socket_address::loopback_v4(0), o);
  if (!l) {
    co_return "bind: " + l.error().message();
  }
  auto server = corio::spawn(serve_batches(*l));
  corio::ipc::command cmd(python);
  cmd.arg("-c").arg(batch_client_script).arg(std::to_string(l->address()->port()));
  auto out = co_await corio::timeout(cmd.output(), 60s);
  auto s = co_await server;
  if (!out) {
    co_return "python: " + out.error().message();
  }
  co_return out->out + out->err + "server " + (s.empty() ? "ok" : s);
}

}  // namespace

TEST_CASE("connection batch: every Python's unmodified Client reads a batch as separate messages",
          "[ipc][connection][batch][python]") {
  REQUIRE_FALSE(corio_test::pythons().empty());  // Debian always has /usr/bin/python3
  corio::runtime rt(corio_test::workers(2));
  std::vector<task<std::string>> all;
  for (const auto& p : corio_test::pythons()) {
    all.push_back(batches_with(p.path));
  }
  auto got = rt.block_on(corio::when_all(std::move(all)));
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("python " << corio_test::pythons()[i].version << " at " << corio_test::pythons()[i].path);
    CHECK(got[i] == "[1, 'two', (3, None)]\n[b'raw', b'']\n10\nserver ok");
  }
}
