// accept_burst: a burst of simultaneous connects served by a loop of listener.accept()
// versus listener.incoming() (issue 16 item 15). The workload is
// bench/ipc/accept_burst_load.hpp: N client tasks in this process connect at once, each
// sends 50 lines and waits for each echo (a 2 s read timeout).
//   accept_burst [--clients 1500] [--lines 50] [--repeat 5] [--workers 0 (= default)]
// The two styles alternate within each repeat. Prints per style the median of the
// slowest first reply (ms) and the largest numbers of timeouts and failures over the
// repeats; exits 1 if a client was not served.
#include "accept_burst_load.hpp"
#include "side_by_side.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using side_by_side::median;

namespace {

struct summary {
  std::vector<double> slowest_ms;
  int worst_timeouts = 0;
  int worst_failed = 0;
  int runs_short = 0;  // runs in which some client was not served
};

void add(summary& s, const accept_burst::outcome& o, int clients) {
  s.slowest_ms.push_back(o.slowest_first_reply_ms);
  s.worst_timeouts = std::max(s.worst_timeouts, o.timeouts);
  s.worst_failed = std::max(s.worst_failed, o.failed);
  s.runs_short += o.served == clients ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  accept_burst::params p;
  int repeat = 5;
  unsigned workers = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--clients") p.clients = std::atoi(argv[i + 1]);
    else if (a == "--lines") p.lines = std::atoi(argv[i + 1]);
    else if (a == "--repeat") repeat = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--workers") workers = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else {
      std::fprintf(stderr, "usage: accept_burst [--clients N] [--lines L] [--repeat R] [--workers W]\n");
      return 2;
    }
  }
  corio::runtime_config config;
  if (workers != 0) {
    config.workers = workers;
  }
  corio::runtime rt(config);
  const accept_burst::style styles[] = {accept_burst::style::accept_loop, accept_burst::style::incoming};
  summary sums[2];
  for (int r = 0; r < repeat; ++r) {
    for (int i = 0; i < 2; ++i) {
      add(sums[i], accept_burst::run(rt, styles[i], p), p.clients);
    }
  }
  std::printf("# %d clients x %d lines, %u worker(s), median of %d\n", p.clients, p.lines, rt.worker_count(), repeat);
  int status = 0;
  for (int i = 0; i < 2; ++i) {
    std::printf("accept_burst %-11s slowest first reply %.0f ms, timeouts %d, failed %d, runs short %d\n",
                accept_burst::name(styles[i]), median(sums[i].slowest_ms), sums[i].worst_timeouts,
                sums[i].worst_failed, sums[i].runs_short);
    status |= sums[i].runs_short != 0 ? 1 : 0;
  }
  return status;
}
