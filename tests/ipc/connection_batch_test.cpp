// Tests for ipc::connection's batches (ipc/connection.hpp): send_many / send_many_bytes put
// the same bytes on the wire as that many sends, in one sendmsg made directly (no SQE), and
// Python's unmodified Client reads them as separate messages; recv_some / recv_bytes_some
// return what is buffered (at least one message, at most `max`) and no more; limits
// (max_batch_size included), cancellation and closing behave as for a single send or
// receive. A receive that a regression could leave waiting forever runs under a 1 s
// timeout, so it fails.
// Python reading a batch: connection_batch_python_test.cpp.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "connection_helpers.hpp"
#include "helpers.hpp"

#include <array>
#include <chrono>
#include <stop_token>
#include <string>
#include <vector>

#include <corio/ipc/connection.hpp>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::connection;
using corio::ipc::connection_options;
using corio::ipc::unix_stream;
using corio_test::bytes;
using corio_test::make_connection_pair;
namespace pickle = corio::ipc::pickle;

namespace {

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

TEST_CASE("connection batch: send_many writes the bytes of that many sends, in one sendmsg and no SQE",
          "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_connection_pair();
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
    co_return sqes == 0 ? "" : "SQEs: " + std::to_string(sqes);  // sent directly
  };
  CHECK(rt.block_on(body()).empty());
}

TEST_CASE("connection batch: send_many_bytes writes the bytes of that many send_bytes, in one sendmsg and no SQE",
          "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_connection_pair();
  auto body = [&]() -> task<std::string> {
    std::string big(5000, 'b');  // longer than a read-ahead buffer
    auto raw = spans("one", "", big, "last");
    for (auto m : raw) {
      if (!co_await p.conn.send_bytes(m)) {
        co_return "send failed";
      }
    }
    std::string singly = co_await drain(p.peer);
    auto before = corio_test::sqes_submitted(rt);
    auto r = co_await p.conn.send_many_bytes(raw);
    auto sqes = corio_test::sqes_submitted(rt) - before;
    if (!r) {
      co_return "send_many_bytes: " + r.error().message();
    }
    std::string batched = co_await drain(p.peer);
    if (singly != frame("one") + frame("") + frame(big) + frame("last") || batched != singly) {
      co_return "wire bytes differ";
    }
    co_return sqes == 0 ? "" : "SQEs: " + std::to_string(sqes);  // sent directly
  };
  CHECK(rt.block_on(body()).empty());
}

TEST_CASE("connection batch: an empty batch sends nothing and succeeds", "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_connection_pair();
  auto body = [&]() -> task<std::string> {
    std::vector<pickle::value> none;
    std::vector<std::span<const std::byte>> no_bytes;
    auto before = corio_test::sqes_submitted(rt);
    auto a = co_await p.conn.send_many(none);
    auto b = co_await p.conn.send_many_bytes(no_bytes);
    auto sqes = corio_test::sqes_submitted(rt) - before;
    if (!a || !b || sqes != 0) {
      co_return "empty batch failed or submitted";
    }
    co_return co_await drain(p.peer) + (p.conn.is_open() ? "open" : "closed");
  };
  CHECK(rt.block_on(body()) == "open");
}

TEST_CASE("connection batch: a batch above max_batch_size is refused whole; the connection still works",
          "[ipc][connection][batch][fault]") {
  corio::runtime rt(corio_test::workers(1));
  connection_options o;
  o.max_batch_size = 24;  // prefixes included: "0123456789" x 2 is 28 bytes framed
  auto p = make_connection_pair(o);
  auto body = [&]() -> task<std::string> {
    auto over = spans("0123456789", "0123456789");
    auto r = co_await p.conn.send_many_bytes(over);
    if (r || r.error() != corio::errc::message_size) {
      co_return "bytes batch not refused";
    }
    std::vector<pickle::value> values;
    values.emplace_back("0123456789");  // its pickle alone, framed, is above 24 bytes
    values.emplace_back(1);
    auto s = co_await p.conn.send_many(values);
    if (s || s.error() != corio::errc::message_size || !p.conn.is_open()) {
      co_return "pickle batch not refused";
    }
    auto two_over = spans("0123456789", "01234567");  // 26 bytes framed
    auto t = co_await p.conn.send_many_bytes(two_over);
    auto exact = spans("0123456789", "012345");  // 24 bytes framed
    if (t || !co_await p.conn.send_many_bytes(exact)) {
      co_return "the limit is not exact";
    }
    co_return co_await drain(p.peer);  // nothing of the refused batches
  };
  CHECK(rt.block_on(body()) == frame("0123456789") + frame("012345"));
}

TEST_CASE("connection batch: the default max_batch_size refuses 17 messages of 4 MiB before copying them",
          "[ipc][connection][batch][fault]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_connection_pair();
  auto body = [&]() -> task<std::string> {
    std::string four_mib(std::size_t{4} << 20, 'x');  // max_message_size: each alone is fine
    std::vector<std::span<const std::byte>> raw(17, corio_test::bytes(four_mib));
    auto r = co_await p.conn.send_many_bytes(raw);
    if (r || r.error() != corio::errc::message_size || !p.conn.is_open()) {
      co_return "68 MiB batch not refused";
    }
    auto ok = spans("ok");
    if (!co_await p.conn.send_many_bytes(ok)) {
      co_return "then a batch failed";
    }
    co_return co_await drain(p.peer);
  };
  CHECK(rt.block_on(body()) == frame("ok"));
}

TEST_CASE("connection batch: on a closed connection send_many reports an unpicklable value first, as send does",
          "[ipc][connection][batch][pickle]") {
  corio::runtime rt(corio_test::workers(1));
  connection_options o;
  o.pickle.protocol = 2;  // corio writes only protocols 4 and 5: every value fails to encode
  auto p = make_connection_pair(o);
  p.conn.close();
  auto body = [&]() -> task<std::string> {
    std::vector<pickle::value> values(1);
    auto one = co_await p.conn.send(values[0]);
    auto many = co_await p.conn.send_many(values);
    std::vector<pickle::value> none;
    auto empty = co_await p.conn.send_many(none);
    // Built by appending, one piece at a time (g++ 12 at -O3 warned falsely,
    // -Wstringop-overflow, about `"|" + message` inside a conditional).
    std::string got;
    for (const auto* r : {&one, &many, &empty}) {
      if (!got.empty()) {
        got += '|';
      }
      got += *r ? std::string("sent") : r->error().message();
    }
    co_return got;
  };
  auto want = make_error_code(pickle::errc::unsupported_protocol).message();
  CHECK(rt.block_on(body()) == want + "|" + want + "|" + make_error_code(corio::errc::closed).message());
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
  auto p = make_connection_pair(o);
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

TEST_CASE("connection batch: send_many obeys max_send_size, not max_message_size, when both are set",
          "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  connection_options o;
  o.max_message_size = 4;  // what the peer may send
  o.max_send_size = 40;    // what this side may send
  auto p = make_connection_pair(o);
  auto body = [&]() -> task<std::string> {
    std::vector<pickle::value> over;
    over.emplace_back(1);
    over.emplace_back(std::string(50, 'z'));  // its pickle is above 40 bytes
    auto r = co_await p.conn.send_many(over);
    if (r || r.error() != corio::errc::message_size || !p.conn.is_open()) {
      co_return "a batch holding a pickle above max_send_size sent, or the connection closed";
    }
    std::vector<pickle::value> within;
    within.emplace_back(std::string(20, 'y'));  // above max_message_size, within max_send_size
    within.emplace_back(7);
    if (!co_await p.conn.send_many(within)) {
      co_return "a batch within max_send_size refused";
    }
    co_return co_await drain(p.peer);  // nothing of the refused batch
  };
  auto y = pickle::dumps(pickle::value(std::string(20, 'y')));
  auto seven = pickle::dumps(pickle::value(7));
  REQUIRE(y);
  REQUIRE(seven);
  CHECK(rt.block_on(body()) == frame(to_string(*y)) + frame(to_string(*seven)));
}

TEST_CASE("connection batch: recv_some returns what is buffered, at most max, and waits only for the first",
          "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_connection_pair();
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
      auto n = co_await corio::timeout(p.conn.recv_some(out, max), 1s);
      got += n ? std::to_string(*n) + ":" : n.error().message();
      for (auto& v : out) {
        got += v.repr() + " ";
      }
    }
    // The sixth is incomplete: recv_some did not wait for it; it comes once completed.
    (void)co_await p.peer.write_all(bytes(third.substr(7)));
    auto n = co_await corio::timeout(p.conn.recv_some(out, 10), 1s);
    got += n && *n == 1 ? out[0].repr() : "sixth missing";
    auto zero = co_await p.conn.recv_some(out, 0);
    got += !zero && zero.error() == std::errc::invalid_argument && out.empty() ? " max0" : " max0 accepted";
    co_return got;
  };
  CHECK(rt.block_on(body()) == "3:0 1 2 2:3 4 'third' max0");
}

TEST_CASE("connection batch: recv_bytes_some reuses its vectors and stops at max", "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_connection_pair();
  auto body = [&]() -> task<std::string> {
    (void)co_await p.peer.write_all(bytes(frame("a") + frame("") + frame("ccc") + frame("dd")));
    std::vector<std::vector<std::byte>> out(5);
    out[1].reserve(64);
    auto* kept = out[1].data();
    std::string got;
    auto n = co_await corio::timeout(p.conn.recv_bytes_some(out, 3), 1s);
    got += n ? std::to_string(*n) + "/" + std::to_string(out.size()) + ":" : n.error().message();
    for (auto& m : out) {
      got += to_string(m) + ",";
    }
    got += out[1].data() == kept ? " reused " : " reallocated ";
    auto m = co_await corio::timeout(p.conn.recv_bytes_some(out, 3), 1s);
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
  auto p = make_connection_pair();
  auto body = [&]() -> task<std::string> {
    std::string good = to_string(*pickle::dumps(pickle::value("good")));
    std::string bad = frame("not a pickle");
    (void)co_await p.peer.write_all(bytes(frame(good) + bad + frame(good) + bad + frame(good)));
    std::vector<pickle::value> out;
    std::string got;
    for (int i = 0; i < 3; ++i) {
      auto n = co_await corio::timeout(p.conn.recv_some(out, 10), 1s);
      got += n ? std::to_string(*n) + " " : n.error().category() == pickle::category() ? "pickle error " : "error ";
      got += p.conn.unpickle_error().empty() ? "" : "(why) ";
    }
    // The second bad message is left to recv_bytes, which takes its bytes.
    std::vector<std::byte> raw;
    auto r = co_await corio::timeout(p.conn.recv_bytes(raw), 1s);
    got += r ? to_string(raw) + " " : "recv_bytes failed ";
    auto last = co_await corio::timeout(p.conn.recv_some(out, 10), 1s);
    got += last && *last == 1 ? "1 " : "last missing ";
    co_return got + (p.conn.is_open() ? "open" : "closed");
  };
  CHECK(rt.block_on(body()) == "1 (why) pickle error (why) 1 (why) not a pickle 1 open");
}

TEST_CASE("connection batch: an oversized prefix buffered behind a good message gives 1, then message_size, then closed",
          "[ipc][connection][batch][fault]") {
  corio::runtime rt(corio_test::workers(1));
  connection_options o;
  o.max_message_size = 100;
  auto p = make_connection_pair(o);
  auto body = [&]() -> task<std::string> {
    std::string good = to_string(*pickle::dumps(pickle::value("good")));
    (void)co_await p.peer.write_all(bytes(frame(good) + frame(std::string(101, 'o'))));
    std::vector<pickle::value> out;
    std::string got;
    for (int i = 0; i < 3; ++i) {
      auto n = co_await corio::timeout(p.conn.recv_some(out, 10), 1s);
      got += (n ? std::to_string(*n) : n.error().message()) + "|";
    }
    co_return got;
  };
  CHECK(rt.block_on(body()) == "1|" + make_error_code(corio::errc::message_size).message() + "|" +
                                   make_error_code(corio::errc::closed).message() + "|");
}

TEST_CASE("connection batch: cancelled or timed out before anything arrives, recv_some and send_many leave it usable",
          "[ipc][connection][batch][cancel]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_connection_pair();
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
    auto ok = co_await corio::timeout(p.conn.recv_some(out, 4), 1s);
    co_return ok && out.size() == 1 ? out[0].repr() : "nothing";
  };
  CHECK(rt.block_on(body()) == "'ok'");
}

TEST_CASE("connection batch: a batch cancelled after part of it left closes the connection",
          "[ipc][connection][batch][cancel]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_connection_pair();
  auto body = [&]() -> task<std::string> {
    std::string mib(std::size_t{1} << 20, 'm');  // the peer never reads: the socket fills
    std::vector<std::span<const std::byte>> raw(4, corio_test::bytes(mib));
    auto r = co_await corio::timeout(p.conn.send_many_bytes(raw), 100ms);
    std::string got = r ? "sent" : r.error() == std::errc::timed_out ? "timed out" : r.error().message();
    auto again = spans("x");
    auto s = co_await p.conn.send_many_bytes(again);
    got += !s && s.error() == corio::errc::closed ? " closed" : " usable";
    co_return got + (p.conn.is_open() ? " open" : "");
  };
  CHECK(rt.block_on(body()) == "timed out closed");
}

TEST_CASE("connection batch: after the peer closes, buffered messages are returned, then closed; a closed one refuses",
          "[ipc][connection][batch]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = make_connection_pair();
  auto body = [&]() -> task<std::string> {
    (void)co_await p.peer.write_all(bytes(frame("x") + frame("y")));
    p.peer.close();
    std::vector<std::vector<std::byte>> out;
    auto n = co_await corio::timeout(p.conn.recv_bytes_some(out, 8), 1s);
    auto end = co_await corio::timeout(p.conn.recv_bytes_some(out, 8), 1s);
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
