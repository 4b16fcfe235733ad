// job_server's connection limit (connection_limit.hpp): --max-connections fitted to the
// descriptor limit, and the watch over the managers' connection stats.
#include "connection_limit.hpp"

#include "../common/descriptor_limit.hpp"

#include <corio/runtime/time.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>

namespace job_server {

namespace {

// A manager to watch.
struct watched_port {
  const char* name;                          // "sender" or "receiver"
  const corio::ipc::manager_server* server;  // its manager
  unsigned port = 0;                         // the port it listens on
  unsigned busy = 0;                         // consecutive checks that found it full with clients waiting
  bool said = false;                         // the "waiting" line was printed for this spell
  std::uint64_t shortages = 0;               // its accepts refused for lack of descriptors, at the last check
  bool said_shortage = false;                // the "out of descriptors" line was printed for this spell
};

// Checks that found connections waiting at the limit (three in a row, 500 ms apart)
// before the line.
constexpr unsigned kBusyChecks = 3;
constexpr std::chrono::milliseconds kCheckEvery{500};

// One check of `p` (see watch_ports).
void check(watched_port& p) {
  const corio::ipc::listener_stats c = p.server->stats().connections;
  const bool full = c.limit != 0 && c.in_use >= c.limit;
  p.busy = full && c.queued != 0 ? p.busy + 1 : 0;
  p.said = p.said && p.busy != 0;
  if (p.busy >= kBusyChecks && !p.said) {
    p.said = true;
    std::fprintf(stderr,
                 "job_server: %s port %u: %llu connection(s) waiting to be accepted for a second or more: at most "
                 "%llu connections at once on each port (--max-connections, the descriptor limit); they wait "
                 "until others close\n",
                 p.name, p.port, static_cast<unsigned long long>(c.queued), static_cast<unsigned long long>(c.limit));
  }
  const bool short_now = c.shortages != p.shortages;
  p.shortages = c.shortages;
  p.said_shortage = p.said_shortage && short_now;
  if (short_now && !p.said_shortage) {
    p.said_shortage = true;
    std::fprintf(stderr,
                 "job_server: %s port %u: out of descriptors (EMFILE/ENFILE) or memory: %llu accept(s) refused so "
                 "far; clients wait to be accepted until descriptors free (the descriptor limit: ulimit -n)\n",
                 p.name, p.port, static_cast<unsigned long long>(c.shortages));
  }
}

}  // namespace

unsigned fit_max_connections(unsigned given) {
  if (given == 0) {
    return example::fit_descriptor_limit("job_server", kDefaultMaxConnections, 2, example::chosen_by::default_value);
  }
  return example::fit_descriptor_limit("job_server", given, 2, example::chosen_by::user);
}

void announce_limit(unsigned served) {
  std::printf("[Notice] at most %u connections at once on each port\n", served);
}

corio::task<void> watch_ports(const corio::ipc::manager_server& sender, const corio::ipc::manager_server& receiver,
                              std::stop_token stop) {
  std::array<watched_port, 2> ports{watched_port{"sender", &sender}, watched_port{"receiver", &receiver}};
  for (watched_port& p : ports) {
    auto addr = p.server->address();
    p.port = addr ? addr->port() : 0;
  }
  for (;;) {
    if (!co_await corio::sleep_for(kCheckEvery, stop)) {
      co_return;  // stopped
    }
    for (watched_port& p : ports) {
      check(p);
    }
  }
}

}  // namespace job_server
