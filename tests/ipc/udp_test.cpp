// Tests for ipc/udp.hpp: send_to/recv_from, connected mode, truncation, cancellation.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "datagram_helpers.hpp"
#include "helpers.hpp"

#include <stop_token>
#include <string>
#include <utility>

using corio::task;
using corio::ipc::socket_address;
using corio::ipc::udp_socket;
using corio_test::bytes;
using corio_test::error_when_stopped;
using corio_test::recv_two_datagrams;
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
  // The second recv gets the next datagram: the cut one's rest is gone.
  CHECK(rt.block_on(recv_two_datagrams(*a, *b, "0123456789", "ab", 4)) == "'0123' truncated; 'ab' whole");
}

TEST_CASE("udp: a connected recv of an empty datagram yields size 0, not truncated", "[ipc][udp]") {
  corio::runtime rt(corio_test::workers(1));
  auto [a, b] = connected_pair();
  // "x" comes next: the empty one was a datagram of its own.
  CHECK(rt.block_on(recv_two_datagrams(*a, *b, "", "x", 4)) == "'' whole; 'x' whole");
}

TEST_CASE("udp: a connected recv into an empty buffer reports the datagram truncated", "[ipc][udp]") {
  corio::runtime rt(corio_test::workers(1));
  auto [a, b] = connected_pair();
  // The first recv has no buffer: the whole datagram is discarded.
  CHECK(rt.block_on(recv_two_datagrams(*a, *b, "abc", "de", 0)) == "'' truncated; 'de' whole");
}

TEST_CASE("udp: a stop token cancels a pending connected recv with operation_canceled", "[ipc][udp][cancel]") {
  corio::runtime rt(corio_test::workers(2));
  auto [a, b] = bound_pair();
  REQUIRE(b->connect(a->local_address().value()));
  std::string buf(16, '\0');
  auto pending = [&](std::stop_token t) { return b->recv(wbytes(buf), t); };  // nothing is sent
  CHECK(error_when_stopped(rt, pending) == std::errc::operation_canceled);
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
  std::string buf(16, '\0');
  auto pending = [&](std::stop_token t) { return b->recv_from(wbytes(buf), t); };
  CHECK(error_when_stopped(rt, pending) == std::errc::operation_canceled);
}
