// One fuzz input for the frame reader and the handshake of ipc::connection (shared by the
// seeded mutation loop in connection_fuzz_test.cpp and by a libFuzzer entry point).
//
// fuzz_one(input, config) plays `input` as everything a peer sends, then ends the stream:
// 1. to a connection's receive loop, checking every delivered message against a reference
//    reading of the same bytes with frame::decode_header (same messages, same final error:
//    closed at a frame boundary, protocol_error inside a frame, the prefix's own error);
// 2. to a server handshake and to a client handshake, neither of which may succeed (the
//    input cannot know the random challenge) and both of which must close the connection;
// 3. to the pure pieces (auth::split, make_response, verify_response).
// It returns a description of the first broken invariant, or an empty string.
// Thread-safety: call from one thread at a time (it uses a runtime of its own).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <corio/corio.hpp>
#include <corio/ipc/authentication.hpp>
#include <corio/ipc/connection.hpp>
#include <corio/ipc/frame.hpp>

namespace conn_fuzz {

inline constexpr std::size_t kLimit = 1000;  // max_message_size of the connection under test

struct expected_stream {
  std::vector<std::vector<std::byte>> messages;
  std::error_code end;  // errc::closed, protocol_error, message_size
};

inline expected_stream reference_read(std::span<const std::byte> in) {
  expected_stream e;
  while (true) {
    if (in.empty()) {
      e.end = corio::make_error_code(corio::errc::closed);
      return e;
    }
    auto h = corio::ipc::frame::decode_header(in, kLimit);
    if (!h) {
      e.end = h.error();
      return e;
    }
    if (!h->complete() || in.size() - h->header_size < h->length) {
      e.end = corio::make_error_code(corio::errc::protocol_error);  // truncated
      return e;
    }
    auto body = in.subspan(h->header_size, static_cast<std::size_t>(h->length));
    e.messages.emplace_back(body.begin(), body.end());
    in = in.subspan(h->header_size + static_cast<std::size_t>(h->length));
  }
}

// Writes `in` to `s` and ends the stream (shutdown SHUT_WR).
inline corio::task<void> play(const corio::ipc::unix_stream& s, std::span<const std::byte> in) {
  (void)co_await s.write_all(in);
  (void)s.shutdown(SHUT_WR);
}

// Receives with recv_bytes(vector&) (mode 0), recv_bytes() (mode 1), recv_bytes_into a
// buffer of `into` bytes (mode 2: longer messages are skipped with message_size) or recv()
// (mode 3: each message decoded as a pickle, or failing alone).
inline corio::task<std::string> check_reader(std::span<const std::byte> in, std::size_t buffer, int mode,
                                             std::size_t into) {
  auto p = corio::ipc::socketpair();
  if (!p) {
    co_return "socketpair: " + p.error().message();
  }
  corio::ipc::connection_options o;
  o.max_message_size = kLimit;
  o.read_buffer_size = buffer;
  corio::ipc::connection conn(std::move(p->first), o);
  auto writer = corio::spawn(play(p->second, in));
  auto expected = reference_read(in);
  std::vector<std::byte> m;
  std::vector<std::byte> small(into);
  std::size_t i = 0;
  std::string failure;
  for (;; ++i) {
    corio::result<void> r;
    if (mode == 0) {
      r = co_await conn.recv_bytes(m);
    } else if (mode == 1) {
      auto v = co_await conn.recv_bytes();
      if (v) {
        m = std::move(*v);
      } else {
        r = corio::unexpected(v.error());
      }
    } else if (mode == 3) {
      // recv(): each message is decoded (from the read-ahead buffer when it is all there);
      // one that is not a pickle fails alone and the stream stays in step.
      auto v = co_await conn.recv();
      if (!v && v.error().category() == corio::ipc::pickle::category() && i < expected.messages.size()) {
        if (!conn.is_open()) {
          failure = "closed after a message that is not a pickle";
          break;
        }
        if (corio::ipc::pickle::loads(expected.messages[i])) {
          failure = "message " + std::to_string(i) + " decodes alone but not through recv()";
          break;
        }
        continue;
      }
      if (v) {
        auto alone = i < expected.messages.size() ? corio::ipc::pickle::loads(expected.messages[i])
                                                  : corio::result<corio::ipc::pickle::value>();
        if (i >= expected.messages.size() || !alone || !(*alone == *v)) {
          failure = "message " + std::to_string(i) + " decodes differently through recv()";
          break;
        }
        continue;
      }
      r = corio::unexpected(v.error());
    } else {
      auto n = co_await conn.recv_bytes_into(small);
      if (!n && n.error() == corio::errc::message_size && i < expected.messages.size() &&
          expected.messages[i].size() > into) {
        if (!conn.is_open()) {
          failure = "closed after skipping a message too long for the buffer";
          break;
        }
        continue;  // skipped as documented
      }
      if (n) {
        m.assign(small.begin(), small.begin() + static_cast<std::ptrdiff_t>(*n));
      } else {
        r = corio::unexpected(n.error());
      }
    }
    if (!r) {
      if (i != expected.messages.size()) {
        failure = "ended after " + std::to_string(i) + " messages with '" + r.error().message() + "', expected " +
                  std::to_string(expected.messages.size());
      } else if (r.error() != expected.end) {
        failure = "ended with '" + r.error().message() + "', expected '" + expected.end.message() + "'";
      } else if (conn.is_open()) {
        failure = "still open after '" + r.error().message() + "'";
      }
      break;
    }
    if (i >= expected.messages.size() || m != expected.messages[i]) {
      failure = "message " + std::to_string(i) + " differs from the reference reading";
      break;
    }
  }
  conn.close();  // unblocks the writer if we stopped early
  co_await writer;
  co_return failure;
}

inline corio::task<std::string> check_handshake(std::span<const std::byte> in, bool server) {
  auto p = corio::ipc::socketpair();
  if (!p) {
    co_return "socketpair: " + p.error().message();
  }
  corio::ipc::connection conn(std::move(p->first));
  auto writer = corio::spawn(play(p->second, in));
  corio::ipc::auth_options o;
  o.authkey = "password";
  auto r = server ? co_await corio::ipc::authenticate_server(conn, o)
                  : co_await corio::ipc::authenticate_client(conn, o);
  (void)co_await writer;
  std::string side = server ? "server" : "client";
  if (r) {
    co_return side + " handshake succeeded on fuzz input";
  }
  if (conn.is_open()) {
    co_return side + " handshake failed ('" + r.error().message() + "') but left the connection open";
  }
  co_return "";
}

inline void check_pure(std::span<const std::byte> in) {
  auto key = std::as_bytes(std::span<const char>("password", 8));
  (void)corio::ipc::auth::split(in);
  (void)corio::ipc::auth::make_response(key, in, true);
  std::size_t half = in.size() / 2;
  (void)corio::ipc::auth::verify_response(key, in.first(half), in.subspan(half), true);
}

/// `config` picks the reader's buffer size (16..4096), receive form (of four) and
/// recv_bytes_into buffer size (0..1020).
inline std::string fuzz_one(corio::runtime& rt, std::span<const std::byte> in, std::uint32_t config) {
  check_pure(in);
  std::size_t buffer = 16 + (config & 0xff) * 16;
  int mode = static_cast<int>(((config >> 8) & 0xff) % 4);
  std::size_t into = ((config >> 16) & 0xff) * 4;
  auto body = [&]() -> corio::task<std::string> {
    auto a = co_await check_reader(in, buffer, mode, into);
    if (!a.empty()) {
      co_return "reader (buffer " + std::to_string(buffer) + ", mode " + std::to_string(mode) + "): " + a;
    }
    auto b = co_await check_handshake(in, true);
    if (!b.empty()) {
      co_return b;
    }
    co_return co_await check_handshake(in, false);
  };
  return rt.block_on(body());
}

}  // namespace conn_fuzz
