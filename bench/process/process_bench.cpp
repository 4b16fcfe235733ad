// corio's process benchmarks. Prints `<benchmark> corio <value> <unit>` lines.
//
//   process_bench spawn|pool|all [--workers N] [--pidfd-poll]
// spawn: /bin/true spawned 2,000 times with 20 in flight, each awaited (IORING_OP_WAITID;
//        with --pidfd-poll, the fallback: a poll on the pidfd, then waitid(WNOHANG),
//        printed as system corio-pidfd-poll).
// pool:  process_pool with 2 workers over 100,000 trivial items, one job per item
//        (pool_per_item) and batched (pool_batched), pool startup excluded.
#include <corio/corio.hpp>
#include <corio/ipc/process/detail/exit_wait.hpp>
#include <corio/ipc/process/process.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;

corio::task<int> spawn_lane(int count) {
  int bad = 0;
  for (int i = 0; i < count; ++i) {
    auto c = corio::ipc::command("/bin/true").spawn();
    if (!c) {
      ++bad;
      continue;
    }
    auto st = co_await c->wait();
    bad += !(st && st->success());
  }
  co_return bad;
}

corio::task<double> spawn_bench(int total, int in_flight) {
  auto t0 = steady::now();
  std::vector<corio::join_handle<int>> lanes;
  for (int i = 0; i < in_flight; ++i) {
    lanes.push_back(corio::spawn(spawn_lane(total / in_flight)));
  }
  int bad = 0;
  for (auto& l : lanes) {
    bad += co_await std::move(l);
  }
  double s = std::chrono::duration<double>(steady::now() - t0).count();
  if (bad != 0) {
    std::fprintf(stderr, "spawn: %d failures\n", bad);
  }
  co_return total / s;
}

long square(long x) { return x * x; }

struct pool_rates {
  double per_item = 0;
  double batched = 0;
};

corio::task<pool_rates> pool_bench(std::size_t items) {
  pool_rates r;
  auto pool = co_await corio::ipc::process_pool::start(2);
  if (!pool) {
    std::fprintf(stderr, "pool: %s\n", pool.error().message().c_str());
    co_return r;
  }
  std::vector<long> xs(items);
  for (std::size_t i = 0; i < items; ++i) {
    xs[i] = static_cast<long>(i);
  }
  (void)co_await (*pool)->map<&square>(std::vector<long>(xs.begin(), xs.begin() + 1000));  // warm up
  auto t0 = steady::now();
  auto each = co_await (*pool)->map<&square>(xs);
  double s = std::chrono::duration<double>(steady::now() - t0).count();
  r.per_item = each.size() == items && each.back() && *each.back() == square(xs.back()) ? items / s : 0;

  t0 = steady::now();
  auto batched = co_await (*pool)->map_batched<&square>(xs);
  s = std::chrono::duration<double>(steady::now() - t0).count();
  r.batched = batched && batched->size() == items && batched->back() == square(xs.back()) ? items / s : 0;
  co_await (*pool)->shutdown();
  co_return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (!corio::ipc::fork_server::start()) {
    std::fprintf(stderr, "fork server failed\n");
    return 1;
  }
  std::string which = argc > 1 ? argv[1] : "all";
  corio::runtime_config cfg;
  cfg.workers = 2;
  const char* system = "corio";
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
      cfg.workers = static_cast<unsigned>(std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--pidfd-poll") == 0) {
      corio::ipc::detail::set_exit_wait(corio::ipc::detail::exit_wait::force_pidfd_poll);
      system = "corio-pidfd-poll";
    }
  }
  corio::runtime rt(cfg);
  if (which == "spawn" || which == "all") {
    std::printf("spawn_true_20_in_flight %s %.0f spawns/s\n", system, rt.block_on(spawn_bench(2000, 20)));
  }
  if (which == "pool" || which == "all") {
    auto r = rt.block_on(pool_bench(100000));
    std::printf("pool_per_item corio %.0f items/s\n", r.per_item);
    std::printf("pool_batched corio %.0f items/s\n", r.batched);
  }
  return 0;
}
