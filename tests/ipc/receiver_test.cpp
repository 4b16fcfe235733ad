// Tests for ipc/receiver.hpp (stream_socket::receiver(): multishot recv on a provided
// buffer ring): data integrity over many random-sized writes (TCP and Unix, provided
// buffers and the fallback), messages spanning several buffers, running out of buffers
// (ENOBUFS: nothing lost, re-armed once buffers come back), cancelling a pending receive
// without losing data, end of stream, destroying the receiver with buffers outstanding,
// and runtime shutdown with an armed receiver.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::receive_options;
using corio::ipc::received_buffer;
using corio::ipc::socket_address;
using corio::ipc::stream_receiver;
using corio::ipc::tcp_listener;
using corio::ipc::tcp_stream;
using corio::ipc::unix_stream;

namespace {

/// Turns on the fallback for receivers created in its scope.
struct no_pbuf_scope {
  explicit no_pbuf_scope(bool on) : m_on(on) {
    if (m_on) {
      corio::ipc::detail::simulate_no_provided_buffers(true);
    }
  }
  ~no_pbuf_scope() {
    if (m_on) {
      corio::ipc::detail::simulate_no_provided_buffers(false);
    }
  }
  bool m_on;
};

std::pair<unix_stream, unix_stream> make_pair() {
  auto p = corio::ipc::socketpair();
  REQUIRE(p);
  return std::move(*p);
}

/// Writes all of `data` with blocking writes of random sizes (1..max_chunk).
void write_random_chunks(int fd, const std::vector<unsigned char>& data, std::size_t max_chunk, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::size_t> len(1, max_chunk);
  std::size_t off = 0;
  while (off < data.size()) {
    std::size_t n = std::min(len(rng), data.size() - off);
    ssize_t w = ::send(fd, data.data() + off, n, MSG_NOSIGNAL);
    if (w <= 0) {
      return;
    }
    off += static_cast<std::size_t>(w);
  }
}

std::vector<unsigned char> random_bytes(std::size_t n, unsigned seed) {
  std::vector<unsigned char> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) {
    b = static_cast<unsigned char>(rng());
  }
  return v;
}

/// Appends the bytes of a received buffer to `out`.
void append(std::vector<unsigned char>& out, const received_buffer& b) {
  auto d = b.data();
  out.insert(out.end(), reinterpret_cast<const unsigned char*>(d.data()),
             reinterpret_cast<const unsigned char*>(d.data()) + d.size());
}
void append(std::string& out, const received_buffer& b) {
  out.append(reinterpret_cast<const char*>(b.data().data()), b.size());
}

/// Receives until end of stream, appending everything.
task<corio::result<std::vector<unsigned char>>> read_all(const stream_receiver& rx) {
  std::vector<unsigned char> out;
  for (;;) {
    auto b = co_await rx.receive();
    if (!b) {
      co_return corio::unexpected(b.error());
    }
    if (b->empty()) {
      co_return out;
    }
    append(out, *b);
  }
}

void check_integrity_unix(bool fallback, const receive_options& opts, std::size_t total, std::size_t max_chunk) {
  no_pbuf_scope hook(fallback);
  corio::runtime rt(corio_test::workers(2));
  auto [a, b] = make_pair();
  auto rx = a.receiver(opts);
  REQUIRE(rx);
  const auto data = random_bytes(total, 7);
  std::thread writer([&, fd = b.fd()] {
    write_random_chunks(fd, data, max_chunk, 11);
    ::shutdown(fd, SHUT_WR);
  });
  auto got = rt.block_on(read_all(*rx));
  writer.join();
  REQUIRE(got);
  CHECK(got->size() == data.size());
  CHECK(*got == data);
  auto st = rx->stats();
  CHECK(st.provided_buffers == !fallback);
  CHECK(st.bytes == total);
  CHECK(st.queued_peak <= opts.buffer_count);
  CHECK(st.held == 0);
  if (!fallback) {
    // One multishot serves many buffers (re-armed only after ENOBUFS stops).
    CHECK(st.arms <= st.enobufs + 1);
  }
}

}  // namespace

TEST_CASE("receiver: 10 MB in random-sized writes over TCP arrive intact", "[ipc][receiver]") {
  const bool fallback = GENERATE(false, true);
  INFO("fallback " << fallback);
  no_pbuf_scope hook(fallback);
  std::size_t fds_before = corio_test::open_fd_count();
  {
    corio::runtime rt(corio_test::workers(2));
    auto l = tcp_listener::bind(socket_address::loopback_v4(0));
    REQUIRE(l);
    auto addr = l->local_address();
    REQUIRE(addr);
    const auto data = random_bytes(10 << 20, 3);
    std::thread client([&] {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || ::connect(fd, addr->native(), addr->size()) != 0) {
        return;
      }
      write_random_chunks(fd, data, 70000, 5);
      ::close(fd);
    });
    auto got = rt.block_on([](tcp_listener& lis) -> task<corio::result<std::vector<unsigned char>>> {
      auto s = co_await lis.accept();
      if (!s) {
        co_return corio::unexpected(s.error());
      }
      auto rx = s->receiver({.buffer_size = 4096, .buffer_count = 16});
      if (!rx) {
        co_return corio::unexpected(rx.error());
      }
      co_return co_await read_all(*rx);
    }(*l));
    client.join();
    REQUIRE(got);
    CHECK(got->size() == data.size());
    CHECK(*got == data);
  }
  CHECK(corio_test::open_fd_count() == fds_before);
}

TEST_CASE("receiver: Unix stream, small buffers, provided and fallback", "[ipc][receiver]") {
  const bool fallback = GENERATE(false, true);
  INFO("fallback " << fallback);
  check_integrity_unix(fallback, {.buffer_size = 512, .buffer_count = 8}, 2 << 20, 3000);
  check_integrity_unix(fallback, {.buffer_size = 1, .buffer_count = 1}, 20000, 100);
}

TEST_CASE("receiver: a message larger than a buffer spans several buffers in order", "[ipc][receiver]") {
  corio::runtime rt(corio_test::workers(1));
  auto [a, b] = make_pair();
  auto rx = a.receiver({.buffer_size = 1000, .buffer_count = 32});
  REQUIRE(rx);
  const auto msg = random_bytes(10000, 1);
  REQUIRE(::send(b.fd(), msg.data(), msg.size(), 0) == static_cast<ssize_t>(msg.size()));
  auto r = rt.block_on([](const stream_receiver& r, std::size_t want) -> task<std::pair<std::vector<unsigned char>, int>> {
    std::vector<unsigned char> out;
    int pieces = 0;
    while (out.size() < want) {
      auto buf = co_await r.receive();
      if (!buf || buf->empty()) {
        break;
      }
      ++pieces;
      append(out, *buf);
    }
    co_return std::pair{out, pieces};
  }(*rx, msg.size()));
  CHECK(r.first == msg);
  CHECK(r.second >= 10);
}

TEST_CASE("receiver: holding every buffer stops the multishot (ENOBUFS); releasing resumes, nothing lost",
          "[ipc][receiver]") {
  const bool fallback = GENERATE(false, true);
  INFO("fallback " << fallback);
  no_pbuf_scope hook(fallback);
  corio::runtime rt(corio_test::workers(2));
  auto [a, b] = make_pair();
  constexpr std::size_t kCount = 4;
  auto rx = a.receiver({.buffer_size = 1024, .buffer_count = kCount});
  REQUIRE(rx);
  const auto data = random_bytes(256 * 1024, 9);
  std::atomic<bool> writer_done{false};
  std::thread writer([&, fd = b.fd()] {
    write_random_chunks(fd, data, 900, 2);
    ::shutdown(fd, SHUT_WR);
    writer_done = true;
  });
  auto got = rt.block_on([](const stream_receiver& r, std::size_t count) -> task<std::vector<unsigned char>> {
    std::vector<unsigned char> out;
    std::vector<received_buffer> held;
    // Hold every buffer, then wait: the kernel has none left.
    for (std::size_t i = 0; i < count; ++i) {
      auto buf = co_await r.receive();
      if (!buf || buf->empty()) {
        co_return out;
      }
      held.push_back(std::move(*buf));
    }
    (void)co_await corio::sleep_for(100ms);
    for (auto& h : held) {
      append(out, h);
    }
    held.clear();  // given back: the multishot re-arms
    for (;;) {
      auto buf = co_await r.receive();
      if (!buf || buf->empty()) {
        break;
      }
      append(out, *buf);
    }
    co_return out;
  }(*rx, kCount));
  writer.join();
  CHECK(writer_done.load());
  CHECK(got.size() == data.size());
  CHECK(got == data);
  auto st = rx->stats();
  CHECK(st.queued_peak <= kCount);
  if (!fallback) {
    CHECK(st.enobufs >= 1);
    CHECK(st.arms >= 2);
  }
}

TEST_CASE("receiver: a cancelled receive loses no data; the next receive gets it", "[ipc][receiver][cancel]") {
  const bool fallback = GENERATE(false, true);
  INFO("fallback " << fallback);
  no_pbuf_scope hook(fallback);
  corio::runtime rt(corio_test::workers(2));
  auto [a, b] = make_pair();
  auto rx = a.receiver({.buffer_size = 256, .buffer_count = 4});
  REQUIRE(rx);
  int fd = b.fd();
  auto out = rt.block_on([](const stream_receiver& r, int peer) -> task<std::string> {
    std::string log;
    for (int round = 0; round < 20; ++round) {
      std::stop_source src;
      // Cancel a pending receive (nothing sent yet).
      auto canceller = corio::spawn([](std::stop_source s) -> task<void> {
        (void)co_await corio::sleep_for(2ms);
        s.request_stop();
      }(src));
      auto x = co_await r.receive(src.get_token());
      if (x) {
        log += "unexpected data;";
      } else if (x.error() != std::errc::operation_canceled) {
        log += "wrong error;";
      }
      co_await std::move(canceller);
      // Data sent while nobody waits is queued for the next receive.
      std::string m = "msg" + std::to_string(round);
      (void)::send(peer, m.data(), m.size(), 0);
      (void)co_await corio::sleep_for(1ms);
      std::stop_source already;
      already.request_stop();
      auto y = co_await r.receive(already.get_token());  // stopped first: takes nothing
      if (y) {
        log += "stopped receive took data;";
      }
      std::string got;
      while (got.size() < m.size()) {
        auto z = co_await r.receive();
        if (!z || z->empty()) {
          log += "lost;";
          co_return log;
        }
        append(got, *z);
      }
      if (got != m) {
        log += "mismatch " + got + ";";
      }
    }
    co_return log;
  }(*rx, fd));
  CHECK(out.empty());
}

TEST_CASE("receiver: peer close yields end of stream, again and again", "[ipc][receiver]") {
  const bool fallback = GENERATE(false, true);
  INFO("fallback " << fallback);
  no_pbuf_scope hook(fallback);
  corio::runtime rt(corio_test::workers(1));
  auto [a, b] = make_pair();
  auto rx = a.receiver();
  REQUIRE(rx);
  REQUIRE(::send(b.fd(), "abc", 3, 0) == 3);
  b.close();
  auto out = rt.block_on([](const stream_receiver& r) -> task<std::string> {
    std::string s;
    auto x = co_await r.receive();
    if (!x) {
      co_return "error";
    }
    append(s, *x);
    for (int i = 0; i < 3; ++i) {
      auto e = co_await r.receive();
      s += (e && e->empty()) ? "|eof" : "|?";
    }
    co_return s;
  }(*rx));
  CHECK(out == "abc|eof|eof|eof");
}

TEST_CASE("receiver: destroyed with buffers outstanding; they stay valid and go back from other threads",
          "[ipc][receiver]") {
  const bool fallback = GENERATE(false, true);
  INFO("fallback " << fallback);
  no_pbuf_scope hook(fallback);
  corio::runtime rt(corio_test::workers(2));
  auto [a, b] = make_pair();
  std::vector<received_buffer> held;
  {
    auto rx = a.receiver({.buffer_size = 8, .buffer_count = 8});
    REQUIRE(rx);
    REQUIRE(::send(b.fd(), "0123456789abcdef0123456789abcdef", 32, 0) == 32);
    held = rt.block_on([](const stream_receiver& r) -> task<std::vector<received_buffer>> {
      std::vector<received_buffer> v;
      for (int i = 0; i < 3; ++i) {
        auto x = co_await r.receive();
        if (x) {
          v.push_back(std::move(*x));
        }
      }
      co_return v;
    }(*rx));
    // rx is destroyed here: its multishot is cancelled through its worker.
  }
  REQUIRE(held.size() == 3);
  std::string s;
  for (auto& h : held) {
    append(s, h);
  }
  CHECK(s == "0123456789abcdef01234567");
  std::thread t([&] { held.clear(); });
  t.join();
  // The last buffer went back on a plain thread: the owner unregisters the group.
  for (int i = 0; i < 200 && corio::ipc::detail::live_buffer_groups() != 0; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  CHECK(corio::ipc::detail::live_buffer_groups() == 0);
}

TEST_CASE("receiver: many receivers one after another release their buffer groups", "[ipc][receiver]") {
  corio::runtime rt(corio_test::workers(2));
  auto r = rt.block_on([]() -> task<std::pair<int, long>> {
    int ok = 0;
    long peak = 0;
    for (int i = 0; i < 300; ++i) {
      auto p = corio::ipc::socketpair();
      if (!p) {
        break;
      }
      auto rx = p->first.receiver({.buffer_size = 128, .buffer_count = 2});
      if (!rx) {
        break;
      }
      (void)::send(p->second.fd(), "hi", 2, 0);
      auto b = co_await rx->receive();
      if (b && b->size() == 2 && rx->stats().provided_buffers) {
        ++ok;
      }
      peak = std::max(peak, corio::ipc::detail::live_buffer_groups());
    }
    co_return std::pair{ok, peak};
  }());
  CHECK(r.first == 300);
  CHECK(r.second <= 8);  // the current one, plus releases not yet drained
  for (int i = 0; i < 200 && corio::ipc::detail::live_buffer_groups() != 0; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  CHECK(corio::ipc::detail::live_buffer_groups() == 0);
}

TEST_CASE("receiver: runtime shutdown with an armed receiver and a waiting task neither hangs nor leaks",
          "[ipc][receiver]") {
  for (int order = 0; order < 3; ++order) {
    INFO("order " << order);
    // 0: the receiver outlives the runtime; 1: closed while a task waits, before the
    // shutdown; 2: a buffer is still held when the runtime goes, released after.
    auto [a, b] = make_pair();
    std::optional<stream_receiver> rx;
    rx.emplace(*a.receiver({.buffer_size = 64, .buffer_count = 4}));
    std::optional<received_buffer> kept;
    {
      corio::runtime rt(corio_test::workers(2));
      if (order == 2) {
        REQUIRE(::send(b.fd(), "x", 1, 0) == 1);
        auto x = rt.block_on([](const stream_receiver& r) -> task<corio::result<received_buffer>> {
          co_return co_await r.receive();
        }(*rx));
        REQUIRE(x);
        kept.emplace(std::move(*x));
      }
      for (int i = 0; i < 2; ++i) {
        (void)rt.spawn([](const stream_receiver& r) -> task<void> {
          auto x = co_await r.receive();
          (void)x;
        }(*rx));
      }
      std::this_thread::sleep_for(20ms);
      if (order == 1) {
        rx->close();
      }
    }
    kept.reset();
    rx.reset();
    CHECK(corio::ipc::detail::live_buffer_groups() == 0);
  }
}

// A receiver that ran out of buffers (ENOBUFS: the multishot ended, nothing armed) when
// its runtime shut down: giving the buffers back afterwards cannot re-arm anything, so a
// later receive() must end with an error instead of waiting forever.
TEST_CASE("receiver: out of buffers when its runtime goes, a later receive ends instead of hanging",
          "[ipc][receiver]") {
  auto [a, b] = make_pair();
  auto rx = a.receiver({.buffer_size = 64, .buffer_count = 2});
  REQUIRE(rx);
  std::vector<received_buffer> held;
  {
    corio::runtime rt(corio_test::workers(2));
    const auto data = random_bytes(1024, 5);
    REQUIRE(::send(b.fd(), data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
    held = rt.block_on([](const stream_receiver& r) -> task<std::vector<received_buffer>> {
      std::vector<received_buffer> out;
      for (int i = 0; i < 2; ++i) {
        auto buf = co_await r.receive();
        if (buf) {
          out.push_back(std::move(*buf));
        }
      }
      (void)co_await corio::sleep_for(50ms);  // the kernel finds no buffer: ENOBUFS
      co_return out;
    }(*rx));
    REQUIRE(held.size() == 2);
  }
  held.clear();  // back to a ring whose owner is gone
  corio::runtime rt2(corio_test::workers(1));
  auto r = rt2.block_on([](const stream_receiver& r) -> task<corio::result<received_buffer>> {
    co_return co_await corio::timeout(r.receive(), 2s);
  }(*rx));
  REQUIRE(!r);
  CHECK(r.error() == std::errc::operation_canceled);
}
