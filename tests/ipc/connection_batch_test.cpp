// Tests for ipc::connection's batches (ipc/connection.hpp): send_many / send_many_bytes put
// the same bytes on the wire as that many sends, in one SQE, and Python's unmodified
// Client reads them as separate messages; recv_some / recv_bytes_some return what is
// buffered (at least one message, at most `max`) and no more; limits, cancellation and
// closing behave as for a single send or receive.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"

#include <array>
#include <chrono>
#include <stop_token>
#include <string>
#include <vector>

#include <corio/ipc/connection.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/process/command.hpp>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::connection;
using corio::ipc::connection_options;
using corio::ipc::unix_stream;
using corio_test::bytes;
namespace pickle = corio::ipc::pickle;

namespace {

struct pair_of {
  connection conn;  // the side under test
  unix_stream peer; // a raw peer
};

pair_of make_pair(const connection_options& o = {}) {
  auto p = corio::ipc::socketpair();
  REQUIRE(p);
  return {connection(std::move(p->first), o), std::move(p->second)};
}

std::string to_string(std::span<const std::byte> v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size()); }

// A 4-byte length prefix, then the body.
std::string frame(std::string_view body) {
  std::string s(4, '\0');
  auto n = static_cast<std::uint32_t>(body.size());
  for (int i = 0; i < 4; ++i) {
    s[i] = static_cast<char>((n >> (8 * (3 - i))) & 0xff);
  }
  return s + std::string(body);
}

// Whatever the peer can read now (after a short wait), or "" when nothing came.
task<std::string> drain(const unix_stream& s) {
  std::string got;
  for (;;) {
    std::byte buf[4096];
    auto n = co_await corio::timeout(s.read_some(buf), 20ms);
    if (!n || *n == 0) {
      co_return got;
    }
    got += to_string(std::span(buf, *n));
  }
}

// Byte views of several strings (a function, not a braced list: g++ 12 rejects
// initializer lists inside coroutine lambdas).
template <class... S>
std::vector<std::span<const std::byte>> spans(const S&... s) {
  return {bytes(s)...};
}

std::vector<pickle::value> sample_values() {
  std::vector<pickle::value> v;
  v.emplace_back("foo1");
  v.emplace_back(42);
  v.push_back(pickle::value::tuple_of("x", 2.5, nullptr));
  v.emplace_back(std::string(300, 'z'));
  return v;
}

}  // namespace

TEST_CASE("connection batch: send_many writes the bytes of that many sends, in one SQE", "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_pair();
  auto body = [&]() -> task<std::string> {
    auto values = sample_values();
    for (const auto& v : values) {
      if (!co_await p.conn.send(v)) {
        co_return "send failed";
      }
    }
    std::string singly = co_await drain(p.peer);
    auto before = corio_test::sqes_submitted(rt);
    auto r = co_await p.conn.send_many(values);
    auto sqes = corio_test::sqes_submitted(rt) - before;
    if (!r) {
      co_return "send_many: " + r.error().message();
    }
    std::string batched = co_await drain(p.peer);
    if (singly.empty() || batched != singly) {
      co_return "wire bytes differ";
    }
    co_return sqes == 1 ? "" : "SQEs: " + std::to_string(sqes);
  };
  CHECK(rt.block_on(body()).empty());
}

TEST_CASE("connection batch: a batch arrives as separate messages for recv and recv_bytes", "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(2));
  auto p = corio::ipc::socketpair();
  REQUIRE(p);
  connection a(std::move(p->first)), b(std::move(p->second));
  auto body = [&]() -> task<std::string> {
    auto values = sample_values();
    std::string big(100'000, 'B');  // longer than the read-ahead buffer
    auto raw = spans("one", "", big, "last");
    if (!co_await a.send_many(values) || !co_await a.send_many_bytes(raw)) {
      co_return "send failed";
    }
    std::string got;
    for (std::size_t i = 0; i < values.size(); ++i) {
      auto v = co_await b.recv();
      got += (v ? v->repr().substr(0, 12) : v.error().message()) + "|";
    }
    for (std::size_t i = 0; i < raw.size(); ++i) {
      auto m = co_await b.recv_bytes();
      got += (m ? (m->size() > 10 ? std::to_string(m->size()) : to_string(*m)) : m.error().message()) + "|";
    }
    co_return got;
  };
  CHECK(rt.block_on(body()) == "'foo1'|42|('x', 2.5, N|'zzzzzzzzzzz|one||100000|last|");
}

TEST_CASE("connection batch: a too-large message refuses the whole batch, as a single send would",
          "[ipc][connection][batch][fault]") {
  corio::runtime rt(corio_test::workers(1));
  connection_options o;
  o.max_message_size = 10;
  auto p = make_pair(o);
  auto body = [&]() -> task<std::string> {
    auto raw = spans("ok", "eleven byte", "ok");
    auto r = co_await p.conn.send_many_bytes(raw);
    if (r || r.error() != corio::errc::message_size) {
      co_return "bytes batch not refused";
    }
    std::vector<pickle::value> values;
    values.emplace_back(1);
    values.emplace_back("a str of more than ten bytes");
    auto s = co_await p.conn.send_many(values);
    if (s || s.error() != corio::errc::message_size) {
      co_return "pickle batch not refused";
    }
    if (!p.conn.is_open()) {
      co_return "closed";
    }
    auto fine = spans("ten bytes!", "");
    if (!co_await p.conn.send_many_bytes(fine)) {
      co_return "batch at the limit failed";
    }
    co_return co_await drain(p.peer);  // nothing of the refused batches
  };
  CHECK(rt.block_on(body()) == frame("ten bytes!") + frame(""));
}

TEST_CASE("connection batch: recv_some returns what is buffered, at most max, and waits only for the first",
          "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_pair();
  auto body = [&]() -> task<std::string> {
    std::string wire;
    for (int i = 0; i < 5; ++i) {
      wire += frame(to_string(*pickle::dumps(pickle::value(i))));
    }
    std::string third = frame(to_string(*pickle::dumps(pickle::value("third"))));
    wire += third.substr(0, 7);  // the start of a sixth message
    (void)co_await p.peer.write_all(bytes(wire));
    std::vector<pickle::value> out;
    std::string got;
    const std::array<std::size_t, 2> maxes{3, 10};
    for (std::size_t max : maxes) {
      auto n = co_await p.conn.recv_some(out, max);
      got += n ? std::to_string(*n) + ":" : n.error().message();
      for (auto& v : out) {
        got += v.repr() + " ";
      }
    }
    // The sixth is incomplete: recv_some did not wait for it; it comes once completed.
    (void)co_await p.peer.write_all(bytes(third.substr(7)));
    auto n = co_await p.conn.recv_some(out, 10);
    got += n && *n == 1 ? out[0].repr() : "sixth missing";
    co_return got;
  };
  CHECK(rt.block_on(body()) == "3:0 1 2 2:3 4 'third'");
}

TEST_CASE("connection batch: recv_bytes_some reuses its vectors and stops at max", "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_pair();
  auto body = [&]() -> task<std::string> {
    (void)co_await p.peer.write_all(bytes(frame("a") + frame("") + frame("ccc") + frame("dd")));
    std::vector<std::vector<std::byte>> out(5);
    out[1].reserve(64);
    auto* kept = out[1].data();
    std::string got;
    auto n = co_await p.conn.recv_bytes_some(out, 3);
    got += n ? std::to_string(*n) + "/" + std::to_string(out.size()) + ":" : n.error().message();
    for (auto& m : out) {
      got += to_string(m) + ",";
    }
    got += out[1].data() == kept ? " reused " : " reallocated ";
    auto m = co_await p.conn.recv_bytes_some(out, 3);
    got += m && out.size() == 1 ? to_string(out[0]) : "last missing";
    auto zero = co_await p.conn.recv_bytes_some(out, 0);
    got += !zero && zero.error() == std::errc::invalid_argument ? " max0" : " max0 accepted";
    co_return got;
  };
  CHECK(rt.block_on(body()) == "3/3:a,,ccc, reused dd max0");
}

TEST_CASE("connection batch: a buffered message that does not decode ends the batch; the next receive reports it",
          "[ipc][connection][batch][pickle][fault]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_pair();
  auto body = [&]() -> task<std::string> {
    std::string good = to_string(*pickle::dumps(pickle::value("good")));
    (void)co_await p.peer.write_all(bytes(frame(good) + frame("not a pickle") + frame(good)));
    std::vector<pickle::value> out;
    std::string got;
    for (int i = 0; i < 3; ++i) {
      auto n = co_await p.conn.recv_some(out, 10);
      got += n ? std::to_string(*n) + " " : "error ";
    }
    co_return got + (p.conn.is_open() ? "open" : "closed");
  };
  CHECK(rt.block_on(body()) == "1 error 1 open");
}

TEST_CASE("connection batch: cancelled or timed out before anything arrives, recv_some and send_many leave it usable",
          "[ipc][connection][batch][cancel]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_pair();
  auto body = [&]() -> task<std::string> {
    std::stop_source stop;
    stop.request_stop();
    std::vector<pickle::value> out(3);
    auto r = co_await p.conn.recv_some(out, 4, stop.get_token());
    if (r || r.error() != std::errc::operation_canceled || !out.empty()) {
      co_return "recv_some not cancelled";
    }
    auto t = co_await corio::timeout(p.conn.recv_some(out, 4), 10ms);
    if (t || t.error() != std::errc::timed_out || !p.conn.is_open()) {
      co_return "timeout did not leave it open";
    }
    auto values = sample_values();
    auto s = co_await p.conn.send_many(values, stop.get_token());
    if (s || s.error() != std::errc::operation_canceled || !p.conn.is_open()) {
      co_return "send_many not cancelled";
    }
    if (!(co_await drain(p.peer)).empty()) {
      co_return "a cancelled batch sent bytes";
    }
    (void)co_await p.peer.write_all(bytes(frame(to_string(*pickle::dumps(pickle::value("ok"))))));
    auto ok = co_await p.conn.recv_some(out, 4);
    co_return ok && out.size() == 1 ? out[0].repr() : "nothing";
  };
  CHECK(rt.block_on(body()) == "'ok'");
}

TEST_CASE("connection batch: after the peer closes, buffered messages are returned, then closed; a closed one refuses",
          "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_pair();
  auto body = [&]() -> task<std::string> {
    (void)co_await p.peer.write_all(bytes(frame("x") + frame("y")));
    p.peer.close();
    std::vector<std::vector<std::byte>> out;
    auto n = co_await p.conn.recv_bytes_some(out, 8);
    auto end = co_await p.conn.recv_bytes_some(out, 8);
    std::string got = (n ? std::to_string(*n) : "error") + " " +
                      (!end && end.error() == corio::errc::closed && out.empty() ? "closed" : "not closed");
    auto raw = spans("z");
    auto s = co_await p.conn.send_many_bytes(raw);
    std::vector<pickle::value> values(1);
    auto v = co_await p.conn.send_many(values);
    got += !s && s.error() == corio::errc::closed && !v && v.error() == corio::errc::closed ? " refused" : " sent";
    co_return got;
  };
  CHECK(rt.block_on(body()) == "2 closed refused");
}

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
  auto raw = spans("raw", "");
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

}  // namespace

TEST_CASE("connection batch: Python's unmodified Client reads a batch as separate messages",
          "[ipc][connection][batch][python]") {
  corio::runtime rt(corio_test::workers(2));
  auto body = [&]() -> task<std::string> {
    corio::ipc::listener_options o;
    o.auth.authkey = "password";
    auto l = corio::ipc::listener::bind(corio::ipc::socket_address::loopback_v4(0), o);
    if (!l) {
      co_return "bind: " + l.error().message();
    }
    auto server = corio::spawn(serve_batches(*l));
    corio::ipc::command cmd("/usr/bin/python3");
    cmd.arg("-c").arg(batch_client_script).arg(std::to_string(l->address()->port()));
    auto out = co_await corio::timeout(cmd.output(), 60s);
    auto s = co_await server;
    if (!out) {
      co_return "python: " + out.error().message();
    }
    co_return out->out + out->err + "server " + (s.empty() ? "ok" : s);
  };
  CHECK(rt.block_on(body()) == "[1, 'two', (3, None)]\n[b'raw', b'']\n10\nserver ok");
}
