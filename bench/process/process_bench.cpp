// corio's process benchmarks. Prints `<benchmark> corio <value> <unit>` lines.
//
//   process_bench spawn|pool|bulk|all [--workers N] [--pidfd-poll] [--items N]
// spawn: /bin/true spawned 2,000 times with 20 in flight, each awaited (IORING_OP_WAITID;
//        with --pidfd-poll, the fallback: a poll on the pidfd, then waitid(WNOHANG),
//        printed as system corio-pidfd-poll).
// pool:  process_pool with 2 workers over 100,000 trivial items, one job per item
//        (pool_per_item) and batched (pool_batched), pool startup excluded.
// bulk:  10 M `int` squares (--items N for another count): a plain sequential loop into a
//        fresh std::vector<int> (what map_batched returns) against map_batched on a
//        2-worker pool (block size chosen by the pool), both map_batched(xs) (the call
//        copies xs) and map_batched(std::move(copy)) (the copy made off the clock), best of
//        5 each; prints the times and the ratios (target: <= 3x the loop). Not in `all`.
#include <corio/corio.hpp>
#include <corio/ipc/process/detail/exit_wait.hpp>
#include <corio/ipc/process/process.hpp>

#include <algorithm>
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

int square_int(int x) { return x * x; }

struct bulk_times {
  double loop_ms = 0;
  double map_ms = 0;
  double moved_ms = 0;
  bool ok = false;
};

corio::task<bulk_times> bulk_bench(std::size_t items) {
  bulk_times t;
  auto pool = co_await corio::ipc::process_pool::start(2);
  if (!pool) {
    std::fprintf(stderr, "pool: %s\n", pool.error().message().c_str());
    co_return t;
  }
  std::vector<int> xs(items);
  for (std::size_t i = 0; i < items; ++i) {
    xs[i] = static_cast<int>(i % 40000);
  }
  t.ok = true;
  t.loop_ms = 1e9;
  t.map_ms = 1e9;
  t.moved_ms = 1e9;
  for (int round = 0; round < 5; ++round) {
    auto t0 = steady::now();
    std::vector<int> out(items);
    for (std::size_t i = 0; i < items; ++i) {
      out[i] = square_int(xs[i]);
    }
    double ms = std::chrono::duration<double, std::milli>(steady::now() - t0).count();
    t.ok = t.ok && (items == 0 || out.back() == square_int(xs.back()));
    t.loop_ms = std::min(t.loop_ms, ms);

    t0 = steady::now();
    auto r = co_await (*pool)->map_batched<&square_int>(xs);
    ms = std::chrono::duration<double, std::milli>(steady::now() - t0).count();
    t.ok = t.ok && r && r->size() == items && (items == 0 || r->back() == square_int(xs.back()));
    t.map_ms = std::min(t.map_ms, ms);

    std::vector<int> copy = xs;  // outside the clock: the moved form below copies nothing
    t0 = steady::now();
    auto m = co_await (*pool)->map_batched<&square_int>(std::move(copy));
    ms = std::chrono::duration<double, std::milli>(steady::now() - t0).count();
    t.ok = t.ok && m && m->size() == items && (items == 0 || m->back() == square_int(xs.back()));
    t.moved_ms = std::min(t.moved_ms, ms);
  }
  co_await (*pool)->shutdown();
  co_return t;
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
  std::size_t bulk_items = 10'000'000;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
      cfg.workers = static_cast<unsigned>(std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--pidfd-poll") == 0) {
      corio::ipc::detail::set_exit_wait(corio::ipc::detail::exit_wait::force_pidfd_poll);
      system = "corio-pidfd-poll";
    } else if (std::strcmp(argv[i], "--items") == 0 && i + 1 < argc) {
      bulk_items = static_cast<std::size_t>(std::atoll(argv[++i]));
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
  if (which == "bulk") {
    auto t = rt.block_on(bulk_bench(bulk_items));
    if (!t.ok) {
      std::fprintf(stderr, "bulk: wrong results\n");
      return 1;
    }
    // The loop is the peer of both forms (a user's map_batched(xs) copies xs into the call).
    std::printf("bulk_int_squares sequential_loop %.2f ms\n", t.loop_ms);
    std::printf("bulk_int_squares corio %.2f ms\n", t.map_ms);
    std::printf("bulk_int_squares_moved sequential_loop %.2f ms\n", t.loop_ms);
    std::printf("bulk_int_squares_moved corio %.2f ms\n", t.moved_ms);
    std::printf("# %zu int squares, 2 workers: map_batched(xs) / loop = %.2f, map_batched(std::move(xs)) / loop = %.2f "
                "(target <= 3)\n",
                bulk_items, t.map_ms / t.loop_ms, t.moved_ms / t.loop_ms);
  }
  return 0;
}
