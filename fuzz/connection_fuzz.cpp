// Fuzz target: ipc::connection's frame reader and both sides of the multiprocessing.connection
// handshake (ipc/connection.hpp, ipc/authentication.hpp), driven through a real socket pair.
// fuzz-sources: @runtime/runtime_sources @ipc/pickle_sources sync/semaphore.cpp sync/waiter_list.cpp ipc/acceptor.cpp ipc/address.cpp ipc/authentication.cpp @ipc/connection_sources ipc/frame.cpp ipc/receiver.cpp ipc/socket.cpp ipc/unix.cpp ipc/owned_fd.cpp ipc/detail/pinned_multishot.cpp
// fuzz-args: -fno-sanitize=function -luring -lcrypto -lpthread
// (clang 14's function sanitizer cannot compile coroutines: "Cannot represent a difference
// across sections"; the rest of UBSan stays on.)
//
// An input is everything a peer sends, then the end of its stream; its last 3 bytes (when
// it has 3) choose how it is read: the read-ahead buffer's size (16..4096 bytes), the
// receive form (recv_bytes into a vector, recv_bytes(), recv_bytes_into a buffer of
// 0..1020 bytes, or recv() of pickled objects). Properties checked on every input (a
// violation aborts, which the fuzzer reports):
// - every message the connection delivers equals the reference reading of the same bytes
//   with frame::decode_header, and the stream ends with the same error (closed at a frame
//   boundary, protocol_error inside a frame, the prefix's own error), the connection then
//   closed; recv_bytes_into skips a message too long for its buffer and stays in step;
//   recv() decodes each message as pickle::loads does alone, or fails for it alone;
// - neither a server nor a client handshake fed the input succeeds (it cannot know the
//   random challenge), and each closes its connection;
// - the pure pieces (auth::split, make_response, verify_response) never crash;
// - no socket leaks (checked every 256 inputs).
// Built two ways: with libFuzzer by fuzz/run.sh, and with fuzz/driver.cpp (a seeded
// mutation loop) as the `stress` suite test fuzz_connection.
#include <dirent.h>
#include <unistd.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <corio/ipc/authentication.hpp>
#include <corio/ipc/connection.hpp>
#include <corio/ipc/frame.hpp>
#include <corio/ipc/pickle.hpp>
#include <corio/ipc/unix.hpp>
#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>

namespace {


constexpr std::size_t kLimit = 1000;  // max_message_size of the connection under test

struct expected_stream {
  std::vector<std::vector<std::byte>> messages;
  std::error_code end;  // errc::closed, protocol_error, message_size
};

expected_stream reference_read(std::span<const std::byte> in) {
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
corio::task<void> play(const corio::ipc::unix_stream& s, std::span<const std::byte> in) {
  (void)co_await s.write_all(in);
  (void)s.shutdown(SHUT_WR);
}

// Receives with recv_bytes(vector&) (mode 0), recv_bytes() (mode 1), recv_bytes_into a
// buffer of `into` bytes (mode 2: longer messages are skipped with message_size) or recv()
// (mode 3: each message decoded as a pickle, or failing alone).
corio::task<std::string> check_reader(std::span<const std::byte> in, std::size_t buffer, int mode,
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

corio::task<std::string> check_handshake(std::span<const std::byte> in, bool server) {
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

void check_pure(std::span<const std::byte> in) {
  auto key = std::as_bytes(std::span<const char>("password", 8));
  (void)corio::ipc::auth::split(in);
  (void)corio::ipc::auth::make_response(key, in, true);
  std::size_t half = in.size() / 2;
  (void)corio::ipc::auth::verify_response(key, in.first(half), in.subspan(half), true);
}

/// `config` picks the reader's buffer size (16..4096), receive form (of four) and
/// recv_bytes_into buffer size (0..1020).
std::string fuzz_one(corio::runtime& rt, std::span<const std::byte> in, std::uint32_t config) {
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

// The open sockets, as "fd->socket:[inode]" (only sockets: the sanitizers' symbolizer
// opens pipes of its own when libFuzzer prints new functions).
std::string open_sockets() {
  std::string list;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') {
        continue;
      }
      char target[256] = "";
      std::string path = std::string("/proc/self/fd/") + e->d_name;
      ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
      target[n > 0 ? n : 0] = '\0';
      if (std::string_view(target).starts_with("socket:")) {
        list += std::string(e->d_name) + "->" + target + " ";
      }
    }
    ::closedir(d);
  }
  return list;
}

}  // namespace

// OpenSSL keeps a random generator per thread behind a pthread key, which LeakSanitizer
// does not scan: its first use on each worker thread would read as a leak.
extern "C" const char* __lsan_default_suppressions() { return "leak:libcrypto.so"; }

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static corio::runtime rt;
  static std::size_t runs = 0;
  static std::optional<std::string> fds;  // the sockets open after the first input
  std::uint32_t config = 0;
  if (size >= 3) {
    config = static_cast<std::uint32_t>(data[size - 3]) | (static_cast<std::uint32_t>(data[size - 2]) << 8) |
             (static_cast<std::uint32_t>(data[size - 1]) << 16);
    size -= 3;
  }
  auto failure = fuzz_one(rt, std::span(reinterpret_cast<const std::byte*>(data), size), config);
  if (!failure.empty()) {
    std::fprintf(stderr, "connection_fuzz: property violated: %s\n", failure.c_str());
    std::abort();
  }
  if (runs++ % 256 == 0) {
    std::string now = open_sockets();
    if (!fds) {
      fds = now;
    } else if (now != *fds) {
      std::fprintf(stderr, "connection_fuzz: property violated: sockets open now: %s; before: %s\n", now.c_str(),
                   fds->c_str());
      std::abort();
    }
  }
  return 0;
}
