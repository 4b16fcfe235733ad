// echo_load: the shared load generator for the echo benchmarks. N connections each in
// lockstep: send a message of S bytes, wait until all S bytes came back, send the next.
// --threads K splits the connections over K threads (connection i on thread i mod K), each
// with its own epoll; their counts are summed. Runs a warm-up, then a fixed window, and
// prints
//   requests <count> seconds <window> rps <requests/s>
// and, with --stat-pid PID, the server's CPU time over the window (utime + stime from
// /proc/PID/stat; whole process, all threads):  server_cpu_us <µs>  us_per_request <µs>;
// then its own CPU time over the window (all its threads), so that a reader sees when the
// client is the bottleneck:  client_cpu_us <µs>  client_us_per_request <µs>  threads <K>.
//   echo_load --port P [--conns 50] [--size 64] [--seconds 5] [--warmup 1] [--threads 1]
//             [--stat-pid PID]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;

struct conn {
  int fd = -1;
  std::size_t sent = 0;
  std::size_t received = 0;
};

struct options {
  int port = 0, conns = 50, pid = 0, threads = 1;
  std::size_t size = 64;
  double seconds = 5, warmup = 1;
};

// What one thread measured: the requests completed in its window, and the window.
struct share_result {
  unsigned long long requests = 0;
  double window = 0;
  bool failed = false;
};

double cpu_seconds(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), {});
  std::size_t close = all.rfind(')');
  if (close == std::string::npos) {
    return 0;
  }
  std::istringstream in(all.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // Fields after the command: state(3) ... utime(14) stime(15).
  for (int i = 3; i <= 15; ++i) {
    in >> field;
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double own_cpu_seconds() {  // this process, all threads
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Connects this share's connections, registers them with ep and sends each its first message.
bool connect_share(int ep, std::vector<conn>& cs, const options& o, const std::vector<char>& msg) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(o.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (std::size_t i = 0; i < cs.size(); ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      const int e = errno;
      rlimit lim{};
      ::getrlimit(RLIMIT_NOFILE, &lim);
      std::fprintf(stderr, "echo_load: socket: %s (%d connections need as many descriptors; the limit is %llu)\n",
                   std::strerror(e), o.conns, static_cast<unsigned long long>(lim.rlim_cur));
      return false;
    }
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::perror("echo_load: connect");
      ::close(fd);
      return false;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cs[i].fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    // Lockstep: the first message; later ones go out when the echo is complete.
    ssize_t n = ::send(fd, msg.data(), o.size, MSG_NOSIGNAL);
    cs[i].sent = n > 0 ? static_cast<std::size_t>(n) : 0;
  }
  return true;
}

// One readable connection: take what came back, push the rest of a short send, and send
// the next message when the whole echo is in. False when the server closed it.
bool on_readable(conn& c, const options& o, const std::vector<char>& msg, std::vector<char>& buf,
                 unsigned long long& requests) {
  ssize_t r = ::recv(c.fd, buf.data(), buf.size(), MSG_DONTWAIT);
  if (r <= 0) {
    return r != 0;
  }
  c.received += static_cast<std::size_t>(r);
  if (c.sent < o.size) {
    // Large messages: the first send may have been short; push the rest.
    ssize_t s = ::send(c.fd, msg.data() + c.sent, o.size - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (s > 0) c.sent += static_cast<std::size_t>(s);
  }
  if (c.received >= o.size) {
    ++requests;
    c.received -= o.size;
    ssize_t s = ::send(c.fd, msg.data(), o.size, MSG_NOSIGNAL);
    c.sent = s > 0 ? static_cast<std::size_t>(s) : 0;
  }
  return true;
}

// One thread's share of the connections, from connect to the end of the window.
void run_share(std::size_t conns, const options& o, steady::time_point window_start, steady::time_point end,
               share_result& out) {
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<conn> cs(conns);
  std::vector<char> msg(o.size, 'x'), buf(std::max<std::size_t>(o.size, 65536));
  out.failed = !connect_share(ep, cs, o, msg);
  bool in_window = false;
  unsigned long long requests = 0;
  std::vector<epoll_event> events(std::max<std::size_t>(conns, 1));
  while (!out.failed) {
    auto now = steady::now();
    if (!in_window && now >= window_start) {
      in_window = true;
      requests = 0;
      window_start = now;
    }
    if (now >= end) {
      break;
    }
    int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
    for (int k = 0; k < n && !out.failed; ++k) {
      if (!on_readable(cs[events[static_cast<std::size_t>(k)].data.u64], o, msg, buf, requests)) {
        std::fprintf(stderr, "echo_load: server closed a connection\n");
        out.failed = true;
      }
    }
  }
  out.requests = requests;
  out.window = std::chrono::duration<double>(steady::now() - window_start).count();
  for (auto& c : cs) {
    if (c.fd >= 0) ::close(c.fd);
  }
  ::close(ep);
}

// Raises the soft descriptor limit to fit `conns` connections (plus the epoll descriptors
// and stdio), up to the hard limit: a scaling run opens 50 per server worker, more than a
// stock soft limit of 1,024 at 32 workers. What does not fit fails at socket() (above).
void fit_descriptor_limit(int conns, int threads) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return;
  }
  const rlim_t want = static_cast<rlim_t>(conns) + static_cast<rlim_t>(threads) + 64;
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
    lim.rlim_cur = lim.rlim_max == RLIM_INFINITY ? want : std::min(want, lim.rlim_max);
    (void)::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

bool positive(const char* s, int& v) {
  char* end = nullptr;
  long x = std::strtol(s, &end, 10);
  if (end == s || *end != '\0' || x <= 0 || x > 100000) {
    return false;
  }
  v = static_cast<int>(x);
  return true;
}

bool parse(int argc, char** argv, options& o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--port") o.port = std::atoi(argv[i + 1]);
    else if (a == "--conns") o.conns = std::atoi(argv[i + 1]);
    else if (a == "--size") o.size = std::strtoul(argv[i + 1], nullptr, 10);
    else if (a == "--seconds") o.seconds = std::atof(argv[i + 1]);
    else if (a == "--warmup") o.warmup = std::atof(argv[i + 1]);
    else if (a == "--stat-pid") o.pid = std::atoi(argv[i + 1]);
    else if (a == "--threads") {
      if (!positive(argv[i + 1], o.threads)) return false;
    }
  }
  return o.port != 0 && o.conns > 0 && o.threads <= o.conns;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  if (!parse(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: echo_load --port P [--conns N] [--size S] [--seconds T] [--warmup T] [--threads K <= N] "
                 "[--stat-pid PID]\n");
    return 2;
  }
  fit_descriptor_limit(o.conns, o.threads);
  auto start = steady::now();
  auto window_start = start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.warmup));
  auto end = window_start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<share_result> results(static_cast<std::size_t>(o.threads));
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    std::size_t conns = static_cast<std::size_t>(o.conns / o.threads + (t < o.conns % o.threads ? 1 : 0));
    threads.emplace_back(run_share, conns, std::cref(o), window_start, end, std::ref(results[static_cast<std::size_t>(t)]));
  }
  // The CPU times over the window, read by this thread, which sleeps meanwhile.
  std::this_thread::sleep_until(window_start);
  double server0 = o.pid != 0 ? cpu_seconds(o.pid) : 0, own0 = own_cpu_seconds();
  std::this_thread::sleep_until(end);
  double server1 = o.pid != 0 ? cpu_seconds(o.pid) : 0, own1 = own_cpu_seconds();
  for (auto& t : threads) {
    t.join();
  }
  unsigned long long requests = 0;
  double rps = 0, window = 0;
  for (const auto& r : results) {
    if (r.failed) {
      return 1;
    }
    requests += r.requests;
    rps += r.window > 0 ? static_cast<double>(r.requests) / r.window : 0;  // each share's rate, summed
    window = std::max(window, r.window);
  }
  std::printf("requests %llu seconds %.3f rps %.0f", requests, window, rps);
  double per = requests > 0 ? 1 / static_cast<double>(requests) : 0;  // (no request: 0, dropped by report.sh)
  if (o.pid != 0) {
    double us = (server1 - server0) * 1e6;
    std::printf(" server_cpu_us %.0f us_per_request %.3f", us, us * per);
  }
  double own = (own1 - own0) * 1e6;
  std::printf(" client_cpu_us %.0f client_us_per_request %.3f threads %d\n", own, own * per, o.threads);
  return 0;
}
