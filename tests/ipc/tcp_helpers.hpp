// Scaffolding shared by the TCP listener and acceptor tests: a loopback listener and its
// address, a blocking connect from a plain thread, and the pieces of the "out of
// descriptors" (EMFILE) tests — clients connected before the table is filled, the
// filler that exhausts the table below a lowered limit, the accept loop with the
// documented back-off that counts its attempts, and the process CPU clock.
#pragma once

#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "helpers.hpp"

namespace corio_test {

/// A TCP listener on 127.0.0.1 with a kernel-chosen port; REQUIREs that it bound.
inline corio::ipc::tcp_listener listen_loopback(int backlog = SOMAXCONN) {
  corio::ipc::tcp_listen_options o;
  o.backlog = backlog;
  auto l = corio::ipc::tcp_listener::bind(corio::ipc::socket_address::loopback_v4(0), o);
  REQUIRE(l);
  return std::move(*l);
}

/// The address `l` listens on; REQUIREs that it is known.
inline corio::ipc::socket_address address_of(const corio::ipc::tcp_listener& l) {
  auto a = l.local_address();
  REQUIRE(a);
  return *a;
}

/// A blocking connect from a plain thread (no runtime involved); -1 on failure.
inline int plain_connect(const corio::ipc::socket_address& addr) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  if (::connect(fd, addr.native(), addr.size()) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// CPU time this process has used, in microseconds (all threads).
inline long long process_cpu_us() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

/// `n` clients connected to `addr`, each having sent "ping": made before the descriptor
/// table is filled, so that only the server's accept then lacks a descriptor.
inline corio::task<std::vector<corio::ipc::tcp_stream>> connect_pingers(corio::ipc::socket_address addr, int n) {
  std::vector<corio::ipc::tcp_stream> cs;
  for (int i = 0; i < n; ++i) {
    auto c = co_await corio::ipc::tcp_stream::connect(addr);
    if (c) {
      (void)co_await c->write_all(bytes("ping"));
      cs.push_back(std::move(*c));
    }
  }
  co_return cs;
}

/// How many of `clients` read "ping" back.
inline corio::task<int> count_ping_replies(std::vector<corio::ipc::tcp_stream>* clients) {
  int ok = 0;
  for (auto& c : *clients) {
    std::string got(4, '\0');
    if (co_await c.read_exact(wbytes(got)) && got == "ping") {
      ++ok;
    }
  }
  co_return ok;
}

/// Fills the descriptor table below a lowered soft RLIMIT_NOFILE, and gives it back.
/// Between fill() and release() no Catch2 assertion may run: the sanitizers' runtimes
/// need descriptors of their own to report (UBSan's vptr check reads /proc/self/maps).
class descriptor_table_filler {
 public:
  descriptor_table_filler() { ::getrlimit(RLIMIT_NOFILE, &m_saved); }
  descriptor_table_filler(const descriptor_table_filler&) = delete;
  descriptor_table_filler& operator=(const descriptor_table_filler&) = delete;
  ~descriptor_table_filler() {
    release();
    ::setrlimit(RLIMIT_NOFILE, &m_saved);
  }

  /// Lowers the soft limit to `limit` (or less if it already is); false if refused.
  bool lower_limit(rlim_t limit) {
    rlimit low = m_saved;
    low.rlim_cur = std::min<rlim_t>(m_saved.rlim_cur, limit);
    return ::setrlimit(RLIMIT_NOFILE, &low) == 0;
  }

  /// Takes every free descriptor (duplicates of stdin) until the table is full.
  void fill() {
    for (;;) {
      int fd = ::dup(0);
      if (fd < 0) {
        break;
      }
      m_fillers.push_back(fd);
    }
  }

  /// Closes what fill() took (the lowered limit stays until destruction).
  void release() {
    for (int fd : m_fillers) {
      ::close(fd);
    }
    m_fillers.clear();
  }

 private:
  rlimit m_saved{};
  std::vector<int> m_fillers;
};

/// What an accept loop with back-off saw while the table was full.
struct emfile_counts {
  std::atomic<int> accept_calls{0};
  std::atomic<int> emfile_errors{0};
  std::atomic<long long> slowest_emfile_us{0};  ///< the longest one accept() took to say EMFILE
};

/// Serves `want` connections from `acceptor` (a tcp_listener or tcp_acceptor), echoing a
/// 4-byte message on each, with the documented back-off: on EMFILE/ENFILE it sleeps 20 ms
/// and tries again. Counts into `counts`; -1 on any other accept error.
template <class Acceptor>
corio::task<int> serve_with_backoff(const Acceptor& acceptor, int want, emfile_counts& counts) {
  using namespace std::chrono_literals;
  int served = 0;
  while (served < want) {
    counts.accept_calls.fetch_add(1, std::memory_order_relaxed);
    const auto t0 = std::chrono::steady_clock::now();
    auto s = co_await acceptor.accept();
    if (!s) {
      if (s.error() == std::errc::too_many_files_open || s.error() == std::errc::too_many_files_open_in_system) {
        const long long us =
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
        if (us > counts.slowest_emfile_us.load(std::memory_order_relaxed)) {
          counts.slowest_emfile_us.store(us, std::memory_order_relaxed);  // one accept loop: no race
        }
        counts.emfile_errors.fetch_add(1, std::memory_order_relaxed);
        (void)co_await corio::sleep_for(20ms);
        continue;
      }
      co_return -1;
    }
    std::array<std::byte, 4> b{};
    if (auto r = co_await s->read_exact(b); r) {
      (void)co_await s->write_all(b);
    }
    ++served;
  }
  co_return served;
}

}  // namespace corio_test
