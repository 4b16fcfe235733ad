// accept_rate: connections accepted per second with one-shot listener.accept() versus the
// multishot acceptor (listener.incoming()), and the acceptor's one-shot fallback, side by
// side in one run on one runtime.
//   accept_rate [--conns 20000] [--window 64] [--accepters 1] [--workers 1] [--repeat 5]
// Client: one plain thread (not a worker), non-blocking connects on loopback with at most
// `window` connections open; each waits for the server's close (EOF) and then closes, so
// TIME_WAIT stays on the server side and the client's ephemeral ports last. Server:
// `accepters` tasks, each accepting and closing at once. A run ends when the client has
// seen every connection closed by the server. Modes alternate within each repeat.
// Prints per mode `accept_rate <mode> <conn/s> conn/s` (median of the repeats) and
// `accept_cpu <mode> <µs> us/conn` (process CPU per connection, client included), then the
// ratios to one-shot accept.
#include "side_by_side.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/tcp.hpp>

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using corio::task;
using corio::ipc::socket_address;
using corio::ipc::tcp_acceptor;
using corio::ipc::tcp_listener;
using side_by_side::cpu_seconds;
using side_by_side::median;

namespace {

struct params {
  int conns = 20000;
  int window = 64;
  int accepters = 1;
  unsigned workers = 1;
  int repeat = 5;
};

enum class mode { oneshot, multishot, acceptor_oneshot };
const char* name(mode m) {
  switch (m) {
    case mode::oneshot: return "corio-accept-oneshot";
    case mode::multishot: return "corio-acceptor-multishot";
    default: return "corio-acceptor-fallback";
  }
}

// Returns the number of connections that failed (0 expected).
int run_client(const socket_address& addr, int total, int window) {
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  int started = 0;
  int finished = 0;
  int failed = 0;
  std::vector<epoll_event> events(256);
  while (finished < total) {
    while (started < total && started - finished < window) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0 || (::connect(fd, addr.native(), addr.size()) != 0 && errno != EINPROGRESS)) {
        std::perror("accept_rate: client connect");
        std::exit(1);
      }
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = fd;
      ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
      ++started;
    }
    int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 10000);
    if (n == 0) {
      std::fprintf(stderr, "accept_rate: no progress for 10 s (%d of %d done)\n", finished, total);
      std::exit(1);
    }
    for (int i = 0; i < n; ++i) {
      if ((events[static_cast<std::size_t>(i)].events & EPOLLERR) != 0) {
        ++failed;
      }
      ::close(events[static_cast<std::size_t>(i)].data.fd);  // also leaves the epoll set
      ++finished;
    }
  }
  ::close(ep);
  return failed;
}

task<void> oneshot_loop(const tcp_listener& l, std::stop_token stop) {
  for (;;) {
    auto s = co_await l.accept(stop);
    if (!s && s.error() == std::errc::operation_canceled) {
      co_return;
    }
    // Accepted (closed by the destructor) or a transient error.
  }
}

task<void> acceptor_loop(const tcp_acceptor& acc) {
  for (;;) {
    auto s = co_await acc.accept();
    if (!s && s.error() == corio::errc::closed) {
      co_return;
    }
  }
}

struct sample {
  double rate = 0;
  double cpu_us_per_conn = 0;
};

sample run_once(corio::runtime& rt, mode m, const params& p) {
  auto l = tcp_listener::bind(socket_address::loopback_v4(0)).value();
  auto addr = l.local_address().value();
  std::stop_source stop;
  tcp_acceptor acc;
  if (m != mode::oneshot) {
    corio::ipc::accept_options o;
    o.multishot = m == mode::multishot;
    acc = l.incoming(o);
  }
  std::vector<corio::join_handle<void>> loops;
  for (int i = 0; i < p.accepters; ++i) {
    auto h = m == mode::oneshot ? rt.spawn(oneshot_loop(l, stop.get_token())) : rt.spawn(acceptor_loop(acc));
    loops.push_back(std::move(h.value()));
  }
  double cpu0 = cpu_seconds();
  auto t0 = std::chrono::steady_clock::now();
  int failed = run_client(addr, p.conns, p.window);
  auto t1 = std::chrono::steady_clock::now();
  double cpu1 = cpu_seconds();
  if (failed != 0) {
    std::fprintf(stderr, "accept_rate: %d connections failed\n", failed);
    std::exit(1);
  }
  stop.request_stop();
  acc.close();
  auto join = [&]() -> task<void> {
    for (auto& h : loops) {
      co_await h;
    }
  };
  rt.block_on(join());
  if (m != mode::oneshot) {
    auto st = acc.stats();
    if (st.multishot != (m == mode::multishot)) {
      std::fprintf(stderr, "accept_rate: the kernel has no multishot accept\n");
    }
  }
  double secs = std::chrono::duration<double>(t1 - t0).count();
  return {p.conns / secs, (cpu1 - cpu0) * 1e6 / p.conns};
}

}  // namespace

int main(int argc, char** argv) {
  params p;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--conns") p.conns = std::atoi(argv[i + 1]);
    else if (a == "--window") p.window = std::atoi(argv[i + 1]);
    else if (a == "--accepters") p.accepters = std::atoi(argv[i + 1]);
    else if (a == "--workers") p.workers = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else if (a == "--repeat") p.repeat = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: accept_rate [--conns N] [--window W] [--accepters K] [--workers N] [--repeat R]\n");
      return 2;
    }
  }
  if (p.conns < 1 || p.window < 1 || p.accepters < 1 || p.workers < 1 || p.repeat < 1) {
    std::fprintf(stderr, "accept_rate: every count must be >= 1\n");
    return 2;
  }
  corio::runtime_config config;
  config.workers = p.workers;
  corio::runtime rt(config);
  const mode modes[] = {mode::oneshot, mode::multishot, mode::acceptor_oneshot};
  std::vector<double> rates[3];
  std::vector<double> cpus[3];
  // One short warm-up of each mode (page cache, TCP hash tables), not counted.
  params warm = p;
  warm.conns = std::min(p.conns, 2000);
  for (mode m : modes) {
    (void)run_once(rt, m, warm);
  }
  for (int r = 0; r < p.repeat; ++r) {
    for (int i = 0; i < 3; ++i) {
      sample s = run_once(rt, modes[i], p);
      rates[i].push_back(s.rate);
      cpus[i].push_back(s.cpu_us_per_conn);
    }
  }
  std::printf("# %d connections per run, window %d, %d accepting task(s), %u worker(s), median of %d\n", p.conns,
              p.window, p.accepters, p.workers, p.repeat);
  double med[3];
  for (int i = 0; i < 3; ++i) {
    med[i] = median(rates[i]);
    std::printf("accept_rate %s %.0f conn/s\n", name(modes[i]), med[i]);
  }
  for (int i = 0; i < 3; ++i) {
    std::printf("accept_cpu %s %.2f us/conn\n", name(modes[i]), median(cpus[i]));
  }
  std::printf("ratio multishot/oneshot %.3f\n", med[1] / med[0]);
  std::printf("ratio fallback/oneshot %.3f\n", med[2] / med[0]);
  return 0;
}
