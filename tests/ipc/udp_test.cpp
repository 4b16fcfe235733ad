// Tests for ipc/udp.hpp: send_to/recv_from, connected mode, truncation, cancellation.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "datagram_helpers.hpp"
#include "helpers.hpp"

#include <chrono>
#include <string>
#include <thread>
#include <utility>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::socket_address;
using corio::ipc::udp_socket;
using corio_test::bytes;
using corio_test::described;
using corio_test::wbytes;

namespace {
// Two UDP sockets, each bound to a port of its own on loopback; REQUIREs both. They stay
// results (which the REQUIREs proved hold a socket), so that a case reads `a->`.
std::pair<corio::result<udp_socket>, corio::result<udp_socket>> bound_pair() {
  auto a = udp_socket::bind(socket_address::loopback_v4(0));
  auto b = udp_socket::bind(socket_address::loopback_v4(0));
  REQUIRE(a);
  REQUIRE(b);
  return {std::move(a), std::move(b)};
}

// bound_pair(), each connected to the other; REQUIREs both connects.
std::pair<corio::result<udp_socket>, corio::result<udp_socket>> connected_pair() {
  auto [a, b] = bound_pair();
  REQUIRE(a->connect(b->local_address().value()));
  REQUIRE(b->connect(a->local_address().value()));
  return {std::move(a), std::move(b)};
}
}  // namespace

TEST_CASE("udp: send_to and recv_from carry a datagram and the sender's address", "[ipc][udp]") {
  corio::runtime rt(corio_test::workers(2));
  auto [a, b] = bound_pair();
  auto body = [&]() -> task<std::string> {
    auto sent = co_await a->send_to(bytes("datagram one"), b->local_address().value());
    if (!sent || *sent != 12) {
      co_return "send_to";
    }
    std::string buf(64, '\0');
    auto d = co_await b->recv_from(wbytes(buf));
    if (!d) {
      co_return d.error().message();
    }
    if (!(d->from == a->local_address().value()) || d->truncated) {
      co_return "from " + d->from.to_string();
    }
    co_return buf.substr(0, d->size);
  };
  CHECK(rt.block_on(body()) == "datagram one");
}

TEST_CASE("udp: connected sockets use send and recv", "[ipc][udp]") {
  corio::runtime rt(corio_test::workers(1));
  auto [a, b] = connected_pair();
  auto body = [&]() -> task<std::string> {
    (void)co_await a->send(bytes("ping"));
    std::string buf(16, '\0');
    auto n = co_await b->recv(wbytes(buf));
    if (!n) {
      co_return n.error().message();
    }
    (void)co_await b->send(bytes("pong"));
    std::string buf2(16, '\0');
    auto m = co_await a->recv(wbytes(buf2));
    co_return buf.substr(0, n->size) + buf2.substr(0, m ? m->size : 0);
  };
  CHECK(rt.block_on(body()) == "pingpong");
}

TEST_CASE("udp: a connected recv reports a datagram longer than the buffer as truncated", "[ipc][udp]") {
  // recv used to yield only the bytes stored: a cut datagram looked like a short one.
  corio::runtime rt(corio_test::workers(1));
  auto [a, b] = connected_pair();
  auto body = [&]() -> task<std::string> {
    (void)co_await a->send(bytes("0123456789"));
    (void)co_await a->send(bytes("ab"));
    std::string buf(4, '\0');
    auto cut = co_await b->recv(wbytes(buf));
    if (!cut) {
      co_return cut.error().message();
    }
    std::string out = buf.substr(0, cut->size) + (cut->truncated ? " truncated; " : " whole; ");
    buf.assign(4, '\0');
    auto whole = co_await b->recv(wbytes(buf));  // the next datagram: the cut one's rest is gone
    if (!whole) {
      co_return whole.error().message();
    }
    co_return out + buf.substr(0, whole->size) + (whole->truncated ? " truncated" : " whole");
  };
  CHECK(rt.block_on(body()) == "0123 truncated; ab whole");
}

TEST_CASE("udp: a connected recv of an empty datagram yields size 0, not truncated", "[ipc][udp]") {
  corio::runtime rt(corio_test::workers(1));
  auto [a, b] = connected_pair();
  auto body = [&]() -> task<std::string> {
    (void)co_await a->send(bytes(""));
    (void)co_await a->send(bytes("x"));  // the next one: the empty one was a datagram of its own
    std::string buf(4, '\0');
    auto empty = co_await b->recv(wbytes(buf));
    std::string out = described(empty, buf) + "; ";
    auto next = co_await b->recv(wbytes(buf));
    co_return out + described(next, buf);
  };
  CHECK(rt.block_on(body()) == "'' whole; 'x' whole");
}

TEST_CASE("udp: a connected recv into an empty buffer reports the datagram truncated", "[ipc][udp]") {
  corio::runtime rt(corio_test::workers(1));
  auto [a, b] = connected_pair();
  auto body = [&]() -> task<std::string> {
    (void)co_await a->send(bytes("abc"));
    (void)co_await a->send(bytes("de"));
    std::string none;
    auto cut = co_await b->recv(std::span<std::byte>{});  // the whole datagram is discarded
    std::string out = described(cut, none) + "; ";
    std::string buf(4, '\0');
    auto next = co_await b->recv(wbytes(buf));
    co_return out + described(next, buf);
  };
  CHECK(rt.block_on(body()) == "'' truncated; 'de' whole");
}

TEST_CASE("udp: a stop token cancels a pending connected recv with operation_canceled", "[ipc][udp][cancel]") {
  corio::runtime rt(corio_test::workers(2));
  auto [a, b] = bound_pair();
  REQUIRE(b->connect(a->local_address().value()));
  std::stop_source stop;
  auto body = [&]() -> task<std::error_code> {
    std::string buf(16, '\0');
    auto d = co_await b->recv(wbytes(buf), stop.get_token());  // nothing is sent
    co_return d ? std::error_code{} : d.error();
  };
  std::thread canceller([&] {
    std::this_thread::sleep_for(50ms);
    stop.request_stop();
  });
  CHECK(rt.block_on(body()) == std::errc::operation_canceled);
  canceller.join();
}

TEST_CASE("udp: a datagram longer than the buffer is reported truncated", "[ipc][udp]") {
  corio::runtime rt(corio_test::workers(1));
  auto a = udp_socket::open(AF_INET);
  auto b = udp_socket::bind(socket_address::loopback_v4(0));
  REQUIRE(a);
  REQUIRE(b);
  auto body = [&]() -> task<bool> {
    (void)co_await a->send_to(bytes("0123456789"), b->local_address().value());
    std::string buf(4, '\0');
    auto d = co_await b->recv_from(wbytes(buf));
    co_return d && d->truncated && d->size == 4 && buf == "0123";
  };
  CHECK(rt.block_on(body()));
}

TEST_CASE("udp: a stop token cancels a pending recv_from", "[ipc][udp][cancel]") {
  corio::runtime rt(corio_test::workers(2));
  auto b = udp_socket::bind(socket_address::loopback_v4(0));
  REQUIRE(b);
  std::stop_source stop;
  auto body = [&]() -> task<std::error_code> {
    std::string buf(16, '\0');
    auto d = co_await b->recv_from(wbytes(buf), stop.get_token());
    co_return d ? std::error_code{} : d.error();
  };
  std::thread canceller([&] {
    std::this_thread::sleep_for(50ms);
    stop.request_stop();
  });
  CHECK(rt.block_on(body()) == std::errc::operation_canceled);
  canceller.join();
}
