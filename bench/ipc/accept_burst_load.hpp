// The accept-burst workload shared by bench/ipc/accept_burst and
// tests/ipc/accept_burst_stress_test (issue 16 item 15): N client tasks connect at once
// to an echo server in the same process, each sends `lines` lines one at a time and
// waits for each echo (a read that takes longer than `read_timeout` counts as a timeout
// and ends that client). The server accepts either with a loop of listener.accept() or
// through listener.incoming() (the multishot acceptor), and echoes each connection in a
// task of its own.
// Reported: clients served (every line echoed), timeouts, other failures, and the
// slowest first reply: from the moment the clients are spawned until a client's first
// line came back, the largest over all clients.
#pragma once

#include <corio/corio.hpp>
#include <corio/ipc/tcp.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace accept_burst {

/// How the server accepts.
enum class style { accept_loop, incoming };

/// The style's name in reports.
inline const char* name(style s) { return s == style::accept_loop ? "accept()" : "incoming()"; }

/// What one run gives.
struct outcome {
  int served = 0;    ///< clients whose every line came back
  int timeouts = 0;  ///< clients that waited longer than read_timeout for an echo
  int failed = 0;    ///< clients that could not connect, write or read
  double slowest_first_reply_ms = 0;
};

/// The run's parameters.
struct params {
  int clients = 1500;
  int lines = 50;
  std::chrono::milliseconds read_timeout{2000};
};

namespace detail {

using clock = std::chrono::steady_clock;

struct shared {
  clock::time_point start;
  std::atomic<long long> slowest_us{0};
  std::atomic<int> served{0};
  std::atomic<int> timeouts{0};
  std::atomic<int> failed{0};
};

inline corio::task<void> echo(corio::ipc::tcp_stream s) {
  std::array<std::byte, 4096> buf{};
  for (;;) {
    auto n = co_await s.read_some(buf);
    if (!n || *n == 0) {
      co_return;
    }
    if (!co_await s.write_all(std::span<const std::byte>(buf.data(), *n))) {
      co_return;
    }
  }
}

// Accepts until `stop`, echoing each connection in a task of its own.
template <class Source>
corio::task<void> accept_loop(const Source& source, std::stop_token stop) {
  for (;;) {
    auto s = co_await source.accept(stop);
    if (s) {
      (void)corio::spawn(echo(std::move(*s)));
    } else if (s.error() == std::errc::operation_canceled || s.error() == corio::errc::closed) {
      co_return;
    }
  }
}

inline void note_first_reply(shared& sh) {
  long long us = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - sh.start).count();
  long long seen = sh.slowest_us.load(std::memory_order_relaxed);
  // relaxed: a running maximum, read only after every client has been joined.
  while (us > seen && !sh.slowest_us.compare_exchange_weak(seen, us, std::memory_order_relaxed)) {
  }
}

// One line out and its echo back; false (counted) on a timeout or a failure.
inline corio::task<bool> round_trip(corio::ipc::tcp_stream& c, const std::string& line, const params& p,
                                    shared& sh) {
  auto bytes = std::as_bytes(std::span(line.data(), line.size()));
  std::string back(line.size(), '\0');
  if (!co_await c.write_all(bytes)) {
    sh.failed.fetch_add(1, std::memory_order_relaxed);
    co_return false;
  }
  auto rd = co_await corio::timeout(c.read_exact(std::as_writable_bytes(std::span(back))), p.read_timeout);
  if (!rd) {
    (rd.error() == std::errc::timed_out ? sh.timeouts : sh.failed).fetch_add(1, std::memory_order_relaxed);
    co_return false;
  }
  if (back != line) {
    sh.failed.fetch_add(1, std::memory_order_relaxed);
    co_return false;
  }
  co_return true;
}

inline corio::task<void> client(corio::ipc::socket_address addr, int id, const params& p, shared& sh) {
  auto c = co_await corio::ipc::tcp_stream::connect(addr);
  if (!c) {
    sh.failed.fetch_add(1, std::memory_order_relaxed);
    co_return;
  }
  for (int i = 0; i < p.lines; ++i) {
    std::string line = "client " + std::to_string(id) + " line " + std::to_string(i) + "\n";
    if (!co_await round_trip(*c, line, p, sh)) {
      co_return;
    }
    if (i == 0) {
      note_first_reply(sh);
    }
  }
  sh.served.fetch_add(1, std::memory_order_relaxed);
}

inline corio::task<void> clients(corio::ipc::socket_address addr, const params& p, shared& sh) {
  std::vector<corio::join_handle<void>> hs;
  hs.reserve(static_cast<std::size_t>(p.clients));
  sh.start = clock::now();
  for (int i = 0; i < p.clients; ++i) {
    hs.push_back(corio::spawn(client(addr, i, p, sh)));
  }
  for (auto& h : hs) {
    co_await h;
  }
}

}  // namespace detail

/// One burst against a fresh listener on loopback, served in style `s` on `rt`.
inline outcome run(corio::runtime& rt, style s, const params& p) {
  auto l = corio::ipc::tcp_listener::bind(corio::ipc::socket_address::loopback_v4(0)).value();
  auto addr = l.local_address().value();
  corio::ipc::tcp_acceptor acc;
  std::stop_source stop;
  corio::join_handle<void> server;
  if (s == style::accept_loop) {
    server = rt.spawn(detail::accept_loop(l, stop.get_token())).value();
  } else {
    acc = l.incoming();
    server = rt.spawn(detail::accept_loop(acc, stop.get_token())).value();
  }
  detail::shared sh;
  rt.block_on(detail::clients(addr, p, sh));
  stop.request_stop();
  rt.block_on([](corio::join_handle<void> h) -> corio::task<void> { co_await h; }(std::move(server)));
  outcome o;
  o.served = sh.served.load();
  o.timeouts = sh.timeouts.load();
  o.failed = sh.failed.load();
  o.slowest_first_reply_ms = static_cast<double>(sh.slowest_us.load()) / 1000.0;
  return o;
}

}  // namespace accept_burst
