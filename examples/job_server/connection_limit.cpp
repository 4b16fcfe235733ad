// job_server's connection limit (connection_limit.hpp): --max-connections fitted to the
// descriptor limit, and the watch over the listening sockets' accept queues.
#include "connection_limit.hpp"

#include "../common/descriptor_limit.hpp"

#include <corio/runtime/time.hpp>

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

namespace job_server {

namespace {

// A listening port to watch.
struct watched_port {
  const char* name;    // "sender" or "receiver"
  std::uint16_t port;  // the port it listens on
  int fd = -1;         // its listening socket (find_listener), -1: not watched
  unsigned busy = 0;   // consecutive checks that found connections waiting
  bool said = false;   // the line was printed for this spell
};

// Checks that connections waited (three in a row, 500 ms apart) before the line.
constexpr unsigned kBusyChecks = 3;
constexpr std::chrono::milliseconds kCheckEvery{500};

// Whether `fd` is a listening TCP socket bound to `port`.
bool listens_on(int fd, std::uint16_t port) {
  int listening = 0;
  socklen_t len = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening == 0) {
    return false;
  }
  sockaddr_storage addr{};
  socklen_t alen = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) {
    return false;
  }
  if (addr.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(addr).sin_port) == port;
  }
  return addr.ss_family == AF_INET6 && ntohs(reinterpret_cast<const sockaddr_in6&>(addr).sin6_port) == port;
}

// Connections in the accept queue of listening socket `fd` (TCP_INFO gives its length as
// tcpi_unacked for a listener); 0 if it cannot be read.
unsigned accept_queue_length(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) {
    return 0;
  }
  return info.tcpi_unacked;
}

// This process's listening TCP socket bound to `port` (the manager's own; looked up among
// the open descriptors, since manager_server does not give it out), or -1.
int find_listener(std::uint16_t port) {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) {
    return -1;
  }
  int found = -1;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') {
      continue;
    }
    const int fd = std::atoi(e->d_name);
    if (fd != ::dirfd(d) && listens_on(fd, port)) {
      found = fd;
      break;
    }
  }
  ::closedir(d);
  return found;
}

// Checks the ports' accept queues until `stop` (see watch_ports).
corio::task<void> watch_accept_queues(std::vector<watched_port> ports, unsigned max_connections,
                                      std::stop_token stop) {
  for (;;) {
    if (!co_await corio::sleep_for(kCheckEvery, stop)) {
      co_return;  // stopped
    }
    for (watched_port& p : ports) {
      const unsigned waiting = p.fd < 0 ? 0 : accept_queue_length(p.fd);
      p.busy = waiting == 0 ? 0 : p.busy + 1;
      p.said = p.said && p.busy != 0;
      if (p.busy >= kBusyChecks && !p.said) {
        p.said = true;
        std::fprintf(stderr,
                     "job_server: %s port %u: %u connection(s) waiting to be accepted for a second or more: at most "
                     "%u connections at once on each port (--max-connections, the descriptor limit); they wait "
                     "until others close\n",
                     p.name, p.port, waiting, max_connections);
      }
    }
  }
}

}  // namespace

unsigned fit_max_connections(unsigned given) {
  if (given == 0) {
    return example::fit_descriptor_limit("job_server", kDefaultMaxConnections, 2, example::chosen_by::default_value);
  }
  return example::fit_descriptor_limit("job_server", given, 2, example::chosen_by::user);
}

void watch_ports(corio::runtime& rt, const corio::ipc::manager_server& sender,
                 const corio::ipc::manager_server& receiver, unsigned served, std::stop_token stop) {
  std::printf("[Notice] at most %u connections at once on each port\n", served);
  std::vector<watched_port> ports;
  for (auto [name, m] : {std::pair{"sender", &sender}, std::pair{"receiver", &receiver}}) {
    const std::uint16_t port = m->address().value().port();
    ports.push_back({name, port, find_listener(port)});
  }
  (void)rt.spawn(watch_accept_queues(std::move(ports), served, std::move(stop)));
}

}  // namespace job_server
