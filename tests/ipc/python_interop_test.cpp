// Interoperability of ipc::listener / ipc::connect with Python's own
// multiprocessing.connection, unmodified, for every Python 3 on the machine: Debian's
// /usr/bin/python3 always, and each version under pyenv's versions folder
// ($PYENV_ROOT, default ~/.pyenv) found at run time. Python <= 3.11 speaks the HMAC-MD5
// handshake, 3.12+ the {sha256} one; both must work in both directions, and a wrong key
// must give Python's AuthenticationError on the Python side and
// errc::authentication_failed on corio's, with the corio server still serving.
// Messages are pickled objects (recv / send: corio decodes what each Python writes and
// encodes what each Python reads) and raw bytes (send_bytes / recv_bytes).
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"
#include "pythons.hpp"

#include <chrono>
#include <stop_token>
#include <string>
#include <vector>

#include <corio/ipc/client.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/process/command.hpp>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::connection;
using corio::ipc::listener;
using corio::ipc::socket_address;

namespace {

using corio_test::pythons;

// Python's Client against a corio server: the right key (a small and a 1 MiB message
// echoed), a wrong key and an empty key.
const char* client_script = R"(
import sys
from multiprocessing.connection import Client
address = ('127.0.0.1', int(sys.argv[1]))
c = Client(address, authkey=b'password')
c.send('hello from python')
print('echo', c.recv())
obj = {'tuple': (1, -2**70, 2.5, None, True), 'list': ['\u00e9', b'x', bytearray(b'y')], 'set': frozenset({3})}
c.send(obj)
print('object', c.recv() == obj)
big = bytes(range(256)) * 4096
c.send_bytes(big)
print('big', c.recv_bytes() == big)
c.close()
for key in (b'wrong', b''):
    try:
        Client(address, authkey=key)
        print('accepted', key)
    except Exception as e:
        print('refused', type(e).__name__)
)";

// Python's Listener for a corio client: the right key, then a wrong key.
const char* listener_script = R"(
from multiprocessing.connection import Listener
l = Listener(('127.0.0.1', 0), authkey=b'password')
print(l.address[1], flush=True)
c = l.accept()
m = c.recv()
c.send(m[::-1])
c.close()
try:
    l.accept()
    print('accepted wrong key')
except Exception as e:
    print('refused', type(e).__name__)
l.close()
)";

// Echoes each message: pickled objects are decoded and encoded again by corio (recv /
// send); the one raw message (send_bytes) is not a pickle and goes back as it came.
task<std::string> echo_server(listener& l, std::stop_token stop) {
  auto handler = [](connection conn, std::stop_token) -> task<void> {
    for (int i = 0;; ++i) {
      if (i == 2) {  // the third message is raw bytes
        auto m = co_await conn.recv_bytes();
        if (!m || !co_await conn.send_bytes(*m)) {
          co_return;
        }
        continue;
      }
      auto v = co_await conn.recv();
      if (!v || !co_await conn.send(*v)) {
        co_return;
      }
    }
  };
  auto r = co_await l.serve(handler, std::move(stop));
  co_return r ? "" : r.error().message();
}

task<std::string> python_client_against_corio(std::string py) {
  corio::ipc::listener_options o;
  o.auth.authkey = "password";
  auto l = listener::bind(socket_address::loopback_v4(0), o);
  if (!l) {
    co_return "bind: " + l.error().message();
  }
  std::stop_source stop;
  auto server = corio::spawn(echo_server(*l, stop.get_token()));
  corio::ipc::command cmd(py);
  cmd.arg("-c").arg(client_script).arg(std::to_string(l->address()->port()));
  auto out = co_await corio::timeout(cmd.output(), 60s);
  stop.request_stop();
  auto s = co_await server;
  if (!out) {
    co_return "python: " + out.error().message();
  }
  auto st = l->stats();
  co_return out->out + out->err + "server " + (s.empty() ? "ok" : s) + " authenticated " +
      std::to_string(st.authenticated) + " failed " + std::to_string(st.failed);
}

task<std::string> corio_client_against_python(std::string py) {
  corio::ipc::command cmd(py);
  cmd.arg("-c").arg(listener_script).stdout_mode(corio::ipc::stdio::piped());
  auto child = cmd.spawn();
  if (!child) {
    co_return "spawn: " + child.error().message();
  }
  // The port, on the first line.
  std::string line;
  auto* pipe = child->stdout_pipe();
  while (line.find('\n') == std::string::npos) {
    char buf[64];
    auto n = co_await corio::timeout(pipe->read(std::as_writable_bytes(std::span(buf))), 30s);
    if (!n || *n == 0) {
      break;
    }
    line.append(buf, *n);
  }
  std::string report;
  auto port = std::atoi(line.c_str());
  auto addr = socket_address::loopback_v4(static_cast<std::uint16_t>(port));
  auto c = co_await corio::ipc::connect(addr, "password");
  if (c) {
    (void)co_await c->send(corio::ipc::pickle::value("stressed"));
    auto m = co_await c->recv();
    report += "reply " + (m ? m->repr() : m.error().message()) + "\n";
  } else {
    report += "connect " + c.error().message() + "\n";
  }
  auto bad = co_await corio::ipc::connect(addr, "wrong");
  report += "wrong key: " + (bad ? std::string("accepted") : bad.error().message()) + "\n";
  std::string rest = line.substr(line.find('\n') + 1);
  (void)co_await pipe->read_to_end(rest);
  auto st = co_await child->wait();
  report += rest;
  report += st && st->success() ? "exit 0" : "exit failed";
  co_return report;
}

// All Pythons at once (each in its own task: their start-up times overlap).
template <class F>
std::vector<std::string> for_each_python(F run) {
  corio::runtime rt(corio_test::workers(2));
  std::vector<task<std::string>> all;
  for (auto& p : pythons()) {
    all.push_back(run(p.path));
  }
  return rt.block_on(corio::when_all(std::move(all)));
}

}  // namespace

TEST_CASE("python: Python's unmodified Client authenticates with corio's listener, and wrong keys are refused",
          "[ipc][python]") {
  REQUIRE_FALSE(pythons().empty());  // Debian always has /usr/bin/python3
  auto got = for_each_python(python_client_against_corio);
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("python " << pythons()[i].version << " at " << pythons()[i].path);
    CHECK(got[i] ==
          "echo hello from python\nobject True\nbig True\nrefused AuthenticationError\n"
          "refused AuthenticationError\n"
          "server ok authenticated 1 failed 2");
  }
}

TEST_CASE("python: corio's connect authenticates with Python's unmodified Listener, and a wrong key is refused",
          "[ipc][python]") {
  REQUIRE_FALSE(pythons().empty());
  auto got = for_each_python(corio_client_against_python);
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("python " << pythons()[i].version << " at " << pythons()[i].path);
    CHECK(got[i] == "reply 'desserts'\nwrong key: " + make_error_code(corio::errc::authentication_failed).message() +
                        "\nrefused AuthenticationError\nexit 0");
  }
}
