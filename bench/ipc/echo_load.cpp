// echo_load: the shared load generator for the echo benchmarks. One thread, epoll,
// N connections each in lockstep: send a message of S bytes, wait until all S bytes came
// back, send the next. Runs a warm-up, then a fixed window, and prints
//   requests <count> seconds <window> rps <requests/s>
// and, with --stat-pid PID, the server's CPU time over the window (utime + stime from
// /proc/PID/stat; whole process, all threads):  server_cpu_us <µs>  us_per_request <µs>.
//   echo_load --port P [--conns 50] [--size 64] [--seconds 5] [--warmup 1] [--stat-pid PID]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct conn {
  int fd = -1;
  std::size_t sent = 0;
  std::size_t received = 0;
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

}  // namespace

int main(int argc, char** argv) {
  int port = 0, conns = 50, pid = 0;
  std::size_t size = 64;
  double seconds = 5, warmup = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--port") port = std::atoi(argv[i + 1]);
    else if (a == "--conns") conns = std::atoi(argv[i + 1]);
    else if (a == "--size") size = std::strtoul(argv[i + 1], nullptr, 10);
    else if (a == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (a == "--warmup") warmup = std::atof(argv[i + 1]);
    else if (a == "--stat-pid") pid = std::atoi(argv[i + 1]);
  }
  if (port == 0) {
    std::fprintf(stderr, "usage: echo_load --port P [--conns N] [--size S] [--seconds T] [--stat-pid PID]\n");
    return 2;
  }
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<conn> cs(static_cast<std::size_t>(conns));
  std::vector<char> msg(size, 'x'), buf(std::max<std::size_t>(size, 65536));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (std::size_t i = 0; i < cs.size(); ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      std::perror("connect");
      return 1;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cs[i].fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    // Lockstep: the first message; later ones go out when the echo is complete.
    ssize_t n = ::send(fd, msg.data(), size, MSG_NOSIGNAL);
    cs[i].sent = n > 0 ? static_cast<std::size_t>(n) : 0;
  }
  using clock = std::chrono::steady_clock;
  auto start = clock::now();
  auto window_start = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(warmup));
  auto end = window_start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
  bool in_window = false;
  unsigned long long requests = 0;
  double cpu0 = 0;
  std::vector<epoll_event> events(static_cast<std::size_t>(conns));
  for (;;) {
    auto now = clock::now();
    if (!in_window && now >= window_start) {
      in_window = true;
      requests = 0;
      cpu0 = pid != 0 ? cpu_seconds(pid) : 0;
      window_start = now;
    }
    if (now >= end) {
      break;
    }
    int n = ::epoll_wait(ep, events.data(), conns, 100);
    for (int k = 0; k < n; ++k) {
      conn& c = cs[events[static_cast<std::size_t>(k)].data.u64];
      ssize_t r = ::recv(c.fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (r <= 0) {
        if (r == 0) {
          std::fprintf(stderr, "echo_load: server closed a connection\n");
          return 1;
        }
        continue;
      }
      c.received += static_cast<std::size_t>(r);
      if (c.sent < size) {
        // Large messages: the first send may have been short; push the rest.
        ssize_t s = ::send(c.fd, msg.data() + c.sent, size - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (s > 0) c.sent += static_cast<std::size_t>(s);
      }
      if (c.received >= size) {
        ++requests;
        c.received -= size;
        ssize_t s = ::send(c.fd, msg.data(), size, MSG_NOSIGNAL);
        c.sent = s > 0 ? static_cast<std::size_t>(s) : 0;
      }
    }
  }
  double window = std::chrono::duration<double>(clock::now() - window_start).count();
  double cpu1 = pid != 0 ? cpu_seconds(pid) : 0;
  std::printf("requests %llu seconds %.3f rps %.0f", requests, window, static_cast<double>(requests) / window);
  if (pid != 0) {
    double us = (cpu1 - cpu0) * 1e6;
    std::printf(" server_cpu_us %.0f us_per_request %.3f", us, us / static_cast<double>(requests));
  }
  std::printf("\n");
  for (auto& c : cs) {
    ::close(c.fd);
  }
  return 0;
}
