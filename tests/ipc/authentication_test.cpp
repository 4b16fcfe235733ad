// Tests for ipc/authentication.hpp: the pure pieces of Python's handshake against
// Python's own HMAC values, both sides over a socket pair for every digest, and every bad
// input of issue 12 for the handshake (wrong, empty and missing keys, garbage instead of a
// challenge, an answer of the wrong length, an oversized frame, a client that vanishes or
// says nothing), each ending in a clear error on the corio side and a closed connection.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"

#include <chrono>
#include <string>
#include <vector>

#include <corio/ipc/authentication.hpp>
#include <corio/ipc/connection.hpp>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::auth_digest;
using corio::ipc::auth_options;
using corio::ipc::connection;
using corio::ipc::unix_stream;
using corio_test::bytes;
namespace auth = corio::ipc::auth;

namespace {

std::vector<std::byte> vec(std::string_view s) {
  auto b = bytes(s);
  return {b.begin(), b.end()};
}

std::vector<std::byte> counting(std::size_t n, std::string_view prefix = {}) {
  auto v = vec(prefix);
  for (std::size_t i = 0; i < n; ++i) {
    v.push_back(static_cast<std::byte>(i));
  }
  return v;
}

std::string hex(std::span<const std::byte> b) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    auto v = std::to_integer<unsigned>(x);
    s.push_back(digits[v >> 4]);
    s.push_back(digits[v & 15]);
  }
  return s;
}

std::string text(const std::vector<std::byte>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size()); }

auth_options with_key(std::string key) {
  auth_options o;
  o.authkey = std::move(key);
  return o;
}

struct two_ends {
  connection server;
  connection client;
};

two_ends make_ends() {
  auto p = corio::ipc::socketpair();
  REQUIRE(p);
  return {connection(std::move(p->first)), connection(std::move(p->second))};
}

// Runs both sides at once; yields their outcomes ("ok" or the error's message).
task<std::pair<std::string, std::string>> handshake_both(two_ends& e, auth_options server, auth_options client) {
  auto s = corio::spawn(corio::ipc::authenticate_server(e.server, std::move(server)));
  auto c = co_await corio::ipc::authenticate_client(e.client, std::move(client));
  auto sr = co_await s;
  co_return std::pair{sr ? std::string("ok") : sr.error().message(), c ? std::string("ok") : c.error().message()};
}

const std::string failed_text = make_error_code(corio::errc::authentication_failed).message();

// A hostile or broken client written by hand: raw frames over a connection with no
// handshake of its own.
struct raw_client {
  two_ends ends = make_ends();
  task<corio::result<void>> serve(auth_options o) {
    co_return co_await corio::ipc::authenticate_server(ends.server, std::move(o));
  }
};

}  // namespace

TEST_CASE("auth: HMACs match the values Python's hmac module gives", "[ipc][auth]") {
  // hmac.new(b'password', bytes(range(20)), 'md5').hexdigest() and so on, from Python 3.11.
  auto md5 = auth::hmac(auth_digest::md5, bytes("password"), counting(20));
  REQUIRE(md5);
  CHECK(hex(*md5) == "8477eee15aeeb85e7ed2a828ac3828b9");
  auto sha = auth::hmac(auth_digest::sha256, bytes("password"), counting(40, "{sha256}"));
  REQUIRE(sha);
  CHECK(hex(*sha) == "c78bca77d832c64a2d71ffa962fb0505b5abc895a6cb7d0b9fa73ce309ad8d30");
  auto sha3 = auth::hmac(auth_digest::sha3_384, bytes(""), counting(40, "{sha3_384}"));
  REQUIRE(sha3);
  CHECK(hex(*sha3) ==
        "62e742de5626d25b951c134c47f73387047b5cfc6914435449835afce95783078bc500b2a2743d810dd17b35cc17b52b");
}

TEST_CASE("auth: messages split into digest and payload as Python's _get_digest_name_and_payload does",
          "[ipc][auth]") {
  for (std::size_t n : {16, 20}) {
    auto m = counting(n);
    auto s = auth::split(m);
    REQUIRE(s);
    CHECK(s->legacy);
    CHECK(s->payload.size() == n);
  }
  for (auth_digest d : {auth_digest::md5, auth_digest::sha256, auth_digest::sha384, auth_digest::sha3_256,
                        auth_digest::sha3_384}) {
    std::string prefix = "{";  // by append: g++ 12 -O3 misreads "literal" + string (-Wrestrict)
    prefix += auth::digest_name(d);
    prefix += "}";
    auto m = counting(40, prefix);
    auto s = auth::split(m);
    REQUIRE(s);
    CHECK_FALSE(s->legacy);
    CHECK(s->digest == d);
    CHECK(s->payload.size() == 40);
  }
  for (std::string bad : {"", "{sha1}xxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "sha256}xxxxxxxxxxxxxxxxxxxxxxx",
                          "{sha256xxxxxxxxxxxxxxxxxxxxxxxxxxxx", "{sha3_384xx}xxxxxxxxxxxxxxxxxxxxxxxx",
                          "{}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "x"}) {
    auto s = auth::split(vec(bad));
    CHECK_FALSE(s);
    CHECK(s.error() == corio::errc::authentication_failed);
  }
}

TEST_CASE("auth: challenges are {sha256} and 40 random bytes, or 20 random bytes in legacy mode", "[ipc][auth]") {
  auto a = auth::make_challenge(auth_digest::sha256, false);
  auto b = auth::make_challenge(auth_digest::sha256, false);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->size() == 8 + 40);
  CHECK(text(*a).substr(0, 8) == "{sha256}");
  CHECK(*a != *b);  // 2^-320 chance of a false failure
  auto legacy = auth::make_challenge(auth_digest::sha256, true);
  REQUIRE(legacy);
  CHECK(legacy->size() == 20);
}

TEST_CASE("auth: responses are raw HMAC-MD5 to a legacy challenge and {name}+HMAC to a modern one",
          "[ipc][auth]") {
  auto key = bytes("password");
  auto legacy = counting(20);
  auto r = auth::make_response(key, legacy, true);
  REQUIRE(r);
  CHECK(hex(*r) == "8477eee15aeeb85e7ed2a828ac3828b9");
  CHECK(auth::verify_response(key, legacy, *r, true));
  CHECK_FALSE(auth::make_response(key, legacy, false));  // MD5 refused

  auto modern = counting(40, "{sha256}");
  auto m = auth::make_response(key, modern, true);
  REQUIRE(m);
  CHECK(text(*m).substr(0, 8) == "{sha256}");
  CHECK(hex(std::span(*m).subspan(8)) == "c78bca77d832c64a2d71ffa962fb0505b5abc895a6cb7d0b9fa73ce309ad8d30");
  CHECK(auth::verify_response(key, modern, *m, false));

  // A challenge shorter than 20 bytes, or one that is neither legacy nor prefixed.
  CHECK(auth::make_response(key, counting(19), true).error() == corio::errc::authentication_failed);
  CHECK(auth::make_response(key, counting(30), true).error() == corio::errc::authentication_failed);
}

TEST_CASE("auth: verification refuses a wrong key, a flipped bit, a wrong length, and MD5 when told to",
          "[ipc][auth]") {
  auto key = bytes("password");
  auto challenge = counting(40, "{sha256}");
  auto good = auth::make_response(key, challenge, true).value();
  CHECK(auth::verify_response(key, challenge, good, true));
  CHECK_FALSE(auth::verify_response(bytes("passwore"), challenge, good, true));
  auto flipped = good;
  flipped.back() ^= std::byte{1};
  CHECK_FALSE(auth::verify_response(key, challenge, flipped, true));
  auto shorter = good;
  shorter.pop_back();
  CHECK_FALSE(auth::verify_response(key, challenge, shorter, true));
  auto longer = good;
  longer.push_back(std::byte{0});
  CHECK_FALSE(auth::verify_response(key, challenge, longer, true));
  // What Python 3.11 answers to a {sha256} challenge: the raw HMAC-MD5 of all of it.
  auto old_client = auth::hmac(auth_digest::md5, key, challenge).value();
  CHECK(auth::verify_response(key, challenge, old_client, true));
  CHECK(auth::verify_response(key, challenge, old_client, false).error() == corio::errc::authentication_failed);
  // 20 bytes is "legacy" too, but no MD5 is 20 bytes long.
  CHECK_FALSE(auth::verify_response(key, challenge, counting(20), true));
}

TEST_CASE("auth: server and client with the same key authenticate, for every digest, legacy and empty keys",
          "[ipc][auth]") {
  corio::runtime rt(corio_test::workers(2));
  for (auth_digest d : {auth_digest::md5, auth_digest::sha256, auth_digest::sha384, auth_digest::sha3_256,
                        auth_digest::sha3_384}) {
    for (bool legacy : {false, true}) {
      for (std::string key : {"password", ""}) {
        auto e = make_ends();
        auto s = with_key(key);
        s.digest = d;
        s.legacy_challenge = legacy;
        auto c = with_key(key);
        c.digest = d;
        auto r = rt.block_on(handshake_both(e, s, c));
        INFO(std::string(auth::digest_name(d)) << (legacy ? " legacy" : "") << " key '" << key << "'");
        CHECK(r == std::pair<std::string, std::string>{"ok", "ok"});
        CHECK(e.server.is_open());
        CHECK(e.client.is_open());
      }
    }
  }
  // Messages flow afterwards, with the connection's own limits restored.
  auto e = make_ends();
  REQUIRE(rt.block_on(handshake_both(e, with_key("k"), with_key("k"))).first == "ok");
  auto body = [&]() -> task<std::string> {
    std::string big(1000, 'b');  // over the handshake's 256-byte limit
    (void)co_await e.client.send_bytes(bytes(big));
    auto m = co_await e.server.recv_bytes();
    co_return m ? std::to_string(m->size()) : m.error().message();
  };
  CHECK(rt.block_on(body()) == "1000");
}

TEST_CASE("auth: a wrong key, or an empty key against a real one, fails on both sides and closes both",
          "[ipc][auth][fault]") {
  corio::runtime rt(corio_test::workers(2));
  for (auto keys : {std::pair<std::string, std::string>{"password", "wrong"}, {"password", ""}, {"", "x"}}) {
    for (bool md5_only : {false, true}) {
      auto e = make_ends();
      auto s = with_key(keys.first);
      s.legacy_challenge = md5_only;
      auto r = rt.block_on(handshake_both(e, s, with_key(keys.second)));
      // The server saw the wrong answer; the client read #FAILURE#.
      CHECK(r == std::pair{failed_text, failed_text});
      CHECK_FALSE(e.server.is_open());
      CHECK_FALSE(e.client.is_open());
    }
  }
}

TEST_CASE("auth: an MD5-only peer is refused when accept_md5 is off", "[ipc][auth][fault]") {
  corio::runtime rt(corio_test::workers(2));
  auto e = make_ends();
  auto s = with_key("k");
  s.legacy_challenge = true;  // as Python <= 3.11 servers
  auto c = with_key("k");
  c.accept_md5 = false;
  auto r = rt.block_on(handshake_both(e, s, c));
  CHECK(r.second == failed_text);
  CHECK(r.first != "ok");  // the client closed instead of answering
}

TEST_CASE("auth: with accept_md5 off a {md5} challenge is refused, not answered with HMAC-MD5", "[ipc][auth][fault]") {
  auto key = bytes("password");
  auto md5 = counting(40, "{md5}");
  auto refused = auth::make_response(key, md5, false);
  CHECK((!refused && refused.error() == corio::errc::authentication_failed));
  auto answered = auth::make_response(key, md5, true);
  REQUIRE(answered);
  CHECK(text(*answered).substr(0, 5) == "{md5}");

  // In a handshake: a server whose challenge asks for MD5, a client that refuses MD5.
  corio::runtime rt(corio_test::workers(2));
  auto e = make_ends();
  auto s = with_key("k");
  s.digest = auth_digest::md5;
  auto c = with_key("k");
  c.accept_md5 = false;
  auto r = rt.block_on(handshake_both(e, s, c));
  CHECK(r.second == failed_text);
  CHECK(r.first != "ok");  // the client closed instead of answering
}

TEST_CASE("auth: a client without a key (sending a message instead of an answer) fails the server's handshake",
          "[ipc][auth][fault]") {
  corio::runtime rt(corio_test::workers(2));
  raw_client c;
  auto body = [&]() -> task<std::string> {
    auto server = corio::spawn(c.serve(with_key("password")));
    (void)co_await c.ends.client.send_bytes(bytes("foo1"));  // what Client(addr) without authkey does
    auto challenge = co_await c.ends.client.recv_bytes();
    auto verdict = co_await c.ends.client.recv_bytes();
    auto r = co_await server;
    if (!challenge || text(*challenge).substr(0, 11) != "#CHALLENGE#") {
      co_return "no challenge";
    }
    if (!verdict || text(*verdict) != "#FAILURE#") {
      co_return "no #FAILURE#";
    }
    co_return r ? "accepted" : r.error().message();
  };
  CHECK(rt.block_on(body()) == failed_text);
}

TEST_CASE("auth: a client with a key against a server without one gives up after the handshake timeout",
          "[ipc][auth][fault]") {
  corio::runtime rt(corio_test::workers(2));
  auto e = make_ends();
  auto o = with_key("password");
  o.timeout = 50ms;
  auto body = [&]() -> task<std::string> {
    // The server has no key: it waits for messages, the client for a challenge.
    auto r = co_await corio::ipc::authenticate_client(e.client, o);
    co_return r ? "ok" : r.error().message();
  };
  CHECK(rt.block_on(body()) == "operation timed out");
  CHECK_FALSE(e.client.is_open());
  // No key on this side either: nothing to do.
  auto f = make_ends();
  CHECK(rt.block_on(corio::ipc::authenticate_server(f.server, auth_options{})));
}

TEST_CASE("auth: garbage or a too-short challenge makes the client fail", "[ipc][auth][fault]") {
  corio::runtime rt(corio_test::workers(2));
  for (std::string garbage : {std::string("HTTP/1.1 200 OK\r\n\r\n"), std::string("#CHALLENGE#short"),
                              std::string("#CHALLENGE#{sha1}") + std::string(40, 'x'), std::string()}) {
    auto e = make_ends();
    auto body = [&]() -> task<std::string> {
      (void)co_await e.server.send_bytes(bytes(garbage));
      auto r = co_await corio::ipc::authenticate_client(e.client, with_key("password"));
      co_return r ? "ok" : r.error().message();
    };
    INFO(garbage);
    CHECK(rt.block_on(body()) == failed_text);
    CHECK_FALSE(e.client.is_open());
  }
}

TEST_CASE("auth: an answer of the wrong length or digest fails with #FAILURE#", "[ipc][auth][fault]") {
  corio::runtime rt(corio_test::workers(2));
  for (std::string answer : {std::string(17, 'a'), std::string("{sha256}") + std::string(31, 'a'),
                             std::string("{sha256}") + std::string(33, 'a'), std::string("{md4}") + std::string(16, 'a'),
                             std::string(), std::string(20, 'a')}) {
    raw_client c;
    auto body = [&]() -> task<std::string> {
      auto server = corio::spawn(c.serve(with_key("password")));
      (void)co_await c.ends.client.recv_bytes();  // the challenge
      (void)co_await c.ends.client.send_bytes(bytes(answer));
      auto verdict = co_await c.ends.client.recv_bytes();
      auto r = co_await server;
      if (!verdict || text(*verdict) != "#FAILURE#") {
        co_return "no #FAILURE#";
      }
      co_return r ? "accepted" : r.error().message();
    };
    INFO(answer.size());
    CHECK(rt.block_on(body()) == failed_text);
  }
}

TEST_CASE("auth: a handshake frame over 256 bytes (up to a 4 GiB prefix) is refused unread", "[ipc][auth][fault]") {
  corio::runtime rt(corio_test::workers(2));
  auto p = corio::ipc::socketpair();
  REQUIRE(p);
  connection server(std::move(p->first));
  unix_stream peer = std::move(p->second);
  auto body = [&]() -> task<std::string> {
    auto s = corio::spawn(corio::ipc::authenticate_server(server, with_key("password")));
    std::byte buf[512];
    (void)co_await peer.read_some(buf);  // the challenge
    std::string huge("\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x00\x00", 12);
    (void)co_await peer.write_all(bytes(huge));
    auto r = co_await s;
    co_return r ? "accepted" : r.error().message();
  };
  CHECK(rt.block_on(body()) == make_error_code(corio::errc::message_size).message());
  CHECK_FALSE(server.is_open());
}

TEST_CASE("auth: a client that vanishes mid-handshake or says nothing ends the server's handshake",
          "[ipc][auth][fault]") {
  corio::runtime rt(corio_test::workers(2));
  SECTION("vanishes after reading the challenge") {
    raw_client c;
    auto body = [&]() -> task<std::error_code> {
      auto server = corio::spawn(c.serve(with_key("password")));
      (void)co_await c.ends.client.recv_bytes();
      c.ends.client = connection();  // closes the descriptor
      auto r = co_await server;
      co_return r ? std::error_code{} : r.error();
    };
    CHECK(rt.block_on(body()) == corio::errc::closed);
    CHECK_FALSE(c.ends.server.is_open());
  }
  SECTION("vanishes halfway through its answer") {
    raw_client c;
    auto body = [&]() -> task<std::error_code> {
      auto server = corio::spawn(c.serve(with_key("password")));
      (void)co_await c.ends.client.recv_bytes();
      auto fd = c.ends.client.stream().fd();
      std::string half("\x00\x00\x00\x28{sha2", 9);
      (void)::write(fd, half.data(), half.size());
      c.ends.client = connection();
      auto r = co_await server;
      co_return r ? std::error_code{} : r.error();
    };
    CHECK(rt.block_on(body()) == corio::errc::protocol_error);
  }
  SECTION("says nothing") {
    raw_client c;
    auto o = with_key("password");
    o.timeout = 50ms;
    auto body = [&]() -> task<std::error_code> {
      auto r = co_await c.serve(o);
      co_return r ? std::error_code{} : r.error();
    };
    CHECK(rt.block_on(body()) == std::errc::timed_out);
    CHECK_FALSE(c.ends.server.is_open());
  }
}

TEST_CASE("auth: a cancelled handshake returns operation_canceled and closes the connection", "[ipc][auth][cancel]") {
  corio::runtime rt(corio_test::workers(1));
  auto e = make_ends();
  std::stop_source stop;
  auto body = [&]() -> task<std::error_code> {
    auto s = corio::spawn(corio::ipc::authenticate_server(e.server, with_key("k"), stop.get_token()));
    (void)co_await e.client.recv_bytes();  // the challenge is out; the server waits for an answer
    stop.request_stop();
    auto r = co_await s;
    co_return r ? std::error_code{} : r.error();
  };
  CHECK(rt.block_on(body()) == std::errc::operation_canceled);
  CHECK_FALSE(e.server.is_open());
}
