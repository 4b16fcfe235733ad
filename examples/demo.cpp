// corio's main demo: what the runtime core does, in one run.
//
//   1. a fork-join tree of 2^18 tasks spread over the workers by work stealing;
//   2. 10,000 concurrent timers, fired in deadline order by one heap per worker;
//   3. pipe I/O through io_uring, with a timeout that cancels a read in the kernel;
//   4. blocking work moved off the workers (spawn_blocking);
//   5. the per-worker metrics that show where the work ran.
// (The tutorial's job server is examples/job_server/.)
#include "common/args.hpp"
#include "common/main_guard.hpp"

#include <corio/corio.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <string_view>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

double ms_since(steady::time_point t0) { return std::chrono::duration<double, std::milli>(steady::now() - t0).count(); }

corio::task<long> tree(int depth) {
  if (depth == 0) {
    co_return 1;
  }
  auto left = corio::spawn(tree(depth - 1));
  auto right = corio::spawn(tree(depth - 1));
  co_return co_await left + co_await right;
}

corio::task<void> nap(std::chrono::microseconds d) { (void)co_await corio::sleep_for(d); }

corio::task<int> demo() {
  auto t0 = steady::now();
  long leaves = co_await tree(18);
  std::printf("1. fork-join tree: %ld leaves, %ld tasks in %.1f ms\n", leaves, 2 * leaves - 1, ms_since(t0));

  t0 = steady::now();
  std::vector<corio::task<void>> sleeps;
  for (int i = 0; i < 10'000; ++i) {
    sleeps.push_back(nap(std::chrono::microseconds(i)));
  }
  co_await corio::when_all(std::move(sleeps));
  std::printf("2. 10,000 concurrent sleeps (0-10 ms) all done in %.1f ms\n", ms_since(t0));

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    co_return 1;
  }
  std::string_view msg = "hello through io_uring";
  auto wrote = co_await corio::io::write(fds[1], std::as_bytes(std::span(msg.data(), msg.size())));
  std::array<char, 64> buf{};
  auto got = co_await corio::io::read(fds[0], std::as_writable_bytes(std::span(buf)));
  std::printf("3. pipe: wrote %zu bytes, read back \"%.*s\"\n", wrote.value_or(0), static_cast<int>(got.value_or(0)),
              buf.data());
  t0 = steady::now();
  auto late = co_await corio::timeout(corio::io::read(fds[0], std::as_writable_bytes(std::span(buf))), 25ms);
  std::printf("   a read with nothing to read, under timeout(25 ms): \"%s\" after %.1f ms\n",
              late ? "data?" : late.error().message().c_str(), ms_since(t0));
  ::close(fds[0]);
  ::close(fds[1]);

  t0 = steady::now();
  auto blocking = co_await corio::spawn_blocking([] {
    std::this_thread::sleep_for(30ms);  // e.g. a blocking library call
    return 42;
  });
  std::printf("4. spawn_blocking: a 30 ms blocking call returned %d after %.1f ms, workers stayed free\n",
              blocking.value_or(-1), ms_since(t0));
  co_return leaves == (1 << 18) && wrote && got && !late && blocking ? 0 : 1;
}

int example_main(int argc, char** argv) {
  unsigned workers = 0;
  example::args args("demo", "what corio's runtime core does, in one run");
  args.workers(workers);
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  corio::runtime rt(example::with_workers(workers));
  std::printf("corio demo: %u worker threads, one io_uring each\n", rt.worker_count());
  int rc = rt.block_on(demo());
  auto m = rt.metrics();
  std::printf("5. metrics:\n");
  for (std::size_t i = 0; i < m.workers.size(); ++i) {
    const auto& w = m.workers[i];
    std::printf("   worker %zu: %8llu tasks run, %6llu steals (%llu tasks), %4llu parks, %llu SQEs, %llu CQEs\n", i,
                static_cast<unsigned long long>(w.tasks_run), static_cast<unsigned long long>(w.steals),
                static_cast<unsigned long long>(w.stolen_tasks), static_cast<unsigned long long>(w.parks),
                static_cast<unsigned long long>(w.sqes_submitted), static_cast<unsigned long long>(w.cqes_reaped));
  }
  std::printf(rc == 0 ? "demo OK\n" : "demo FAILED\n");
  return rc;
}

}  // namespace

// Whatever escapes example_main (a runtime that cannot start: io_uring refused by a
// container's seccomp policy) ends the program with one line on stderr and status 1.
int main(int argc, char** argv) { return example::main_guard("demo", example_main, argc, argv); }
