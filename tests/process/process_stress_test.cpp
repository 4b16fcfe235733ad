// Stress tests for ipc/process: 1,000 children spawned and dropped (none left a zombie),
// 1,000 forks from a parent whose threads hammer malloc and a mutex, and a pool that
// loses workers repeatedly.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "process_helpers.hpp"

using namespace std::chrono_literals;
using corio::ipc::command;
using corio_test::workers;

namespace {

const bool g_fork_server = corio::ipc::fork_server::start().has_value();

corio::task<int> spawn_and_drop(int n) {
  int errors = 0;
  for (int i = 0; i < n; ++i) {
    auto c = command("/bin/true").spawn();
    errors += c ? 0 : 1;
    if (i % 50 == 49) {
      (void)co_await corio::sleep_for(1ms);  // let the reaper keep up (pid_max is 32,768)
    }
  }
  co_return errors;
}

}  // namespace

TEST_CASE("stress: 1,000 children spawned and dropped leave no zombie", "[process][stress]") {
  corio::runtime rt(workers(2));
  auto a = rt.spawn(spawn_and_drop(500));
  auto b = rt.spawn(spawn_and_drop(500));
  REQUIRE(a);
  REQUIRE(b);
  int errors = rt.block_on([](corio::join_handle<int> x, corio::join_handle<int> y) -> corio::task<int> {
    co_return co_await x + co_await y;
  }(std::move(*a), std::move(*b)));
  CHECK(errors == 0);
  CHECK(corio_test::zombies_after_settle(10s) == 0);
}

namespace {

std::mutex g_busy_lock;
std::atomic<bool> g_stop{false};

void busy_thread() {
  std::vector<void*> blocks(64);
  std::size_t i = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    std::lock_guard lock(g_busy_lock);
    ::free(blocks[i % 64]);
    blocks[i % 64] = ::malloc(16 + (i * 37) % 4000);
    ++i;
  }
  for (void* p : blocks) {
    ::free(p);
  }
}

corio::task<int> fork_one(int i) {
  auto c = co_await corio::ipc::fork([i] {
    std::lock_guard lock(g_busy_lock);        // held constantly in the parent
    void* p = ::malloc(1000 + (i % 100));     // malloc: the parent's arenas are busy
    ::free(p);
    return i % 200;
  });
  if (!c) {
    co_return 1;
  }
  auto st = co_await c->wait();
  co_return st && st->code() == i % 200 ? 0 : 1;
}

corio::task<int> fork_range(int from, int to, int stride) {
  int bad = 0;
  for (int i = from; i < to; i += stride) {
    bad += co_await fork_one(i);
  }
  co_return bad;
}

corio::task<int> fork_1000() {
  std::vector<corio::task<int>> lanes;
  for (int lane = 0; lane < 8; ++lane) {  // 8 forks in flight
    lanes.push_back(fork_range(lane, 1000, 8));
  }
  auto bad = co_await corio::when_all(std::move(lanes));
  int total = 0;
  for (int b : bad) {
    total += b;
  }
  co_return total;
}

}  // namespace

TEST_CASE("stress: 1,000 forks while parent threads hammer malloc and a mutex", "[process][stress][fork]") {
  REQUIRE(g_fork_server);
  g_stop = false;
  std::thread t1(busy_thread);
  std::thread t2(busy_thread);
  int bad = 0;
  {
    corio::runtime rt(workers(2));
    bad = rt.block_on(fork_1000());
  }
  g_stop = true;
  t1.join();
  t2.join();
  CHECK(bad == 0);
  CHECK(corio_test::zombies_after_settle(5s) == 0);
}

namespace {
int crash_every_50(int x) {
  if (x % 50 == 25) {
    ::raise(SIGKILL);
  }
  return -x;
}
corio::task<std::pair<int, int>> pool_many_crashes() {
  auto pool = co_await corio::ipc::process_pool::start(2, 16);
  if (!pool) {
    co_return std::pair{-1, -1};
  }
  std::vector<int> xs(1000);
  for (int i = 0; i < 1000; ++i) {
    xs[static_cast<std::size_t>(i)] = i;
  }
  auto rs = co_await (*pool)->map<&crash_every_50>(xs);
  int crashed = 0;
  int wrong = 0;
  for (int i = 0; i < 1000; ++i) {
    auto& r = rs[static_cast<std::size_t>(i)];
    if (i % 50 == 25) {
      crashed += !r && r.error() == corio::ipc::pool_errc::worker_crashed;
    } else {
      wrong += !(r && *r == -i);
    }
  }
  co_await (*pool)->shutdown();
  co_return std::pair{crashed, wrong};
}
}  // namespace

TEST_CASE("stress: a pool losing 20 workers fails exactly the crashing jobs", "[process][stress][pool]") {
  REQUIRE(g_fork_server);
  corio::runtime rt(workers(2));
  auto [crashed, wrong] = rt.block_on(pool_many_crashes());
  CHECK(crashed == 20);
  CHECK(wrong == 0);
  CHECK(corio_test::zombies_after_settle(5s) == 0);
}

namespace {
int spin_us(int us) {
  auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  while (std::chrono::steady_clock::now() < end) {
  }
  return us;
}

/// Updated by racing calls that when_all may run on both workers at once: atomics.
struct race_counts {
  std::atomic<int> bad{0};        // a result neither correct nor operation_canceled / timed_out
  std::atomic<int> cancelled{0};  // calls cut short
  std::atomic<int> streams_bad{0};
};

struct race_summary {
  int bad = 0;
  int cancelled = 0;
  int streams_bad = 0;
  bool after_ok = false;
};

/// One call of 20 jobs of 0-400 µs, cut by a timeout of 0-3 ms: races the cancel with
/// the results arriving (on the other worker thread).
corio::task<void> racing_call(corio::ipc::process_pool* p, int i, race_counts* c) {
  std::vector<int> us(20);
  for (int k = 0; k < 20; ++k) {
    us[static_cast<std::size_t>(k)] = (i * 37 + k * 11) % 400;
  }
  auto limit = std::chrono::microseconds((i * 131) % 3000);
  if (i % 3 == 0) {
    std::stop_source src;
    auto stream = p->map_stream<&spin_us>(us, src.get_token());
    std::size_t items = 0;
    for (;;) {
      auto it = co_await stream.next();
      if (!it) {
        c->streams_bad += it.error() == corio::errc::closed ? 0 : 1;
        break;
      }
      ++items;
      if (items == static_cast<std::size_t>(i % 7)) {
        src.request_stop();
      }
      bool ok = it->value ? *it->value == us[it->index] : it->value.error() == std::errc::operation_canceled;
      c->streams_bad += ok ? 0 : 1;
    }
    c->streams_bad += items == us.size() ? 0 : 1;
    co_return;
  }
  auto r = co_await corio::timeout(p->map<&spin_us>(us), limit);
  if (!r) {
    c->cancelled += 1;
    c->bad += r.error() == std::errc::timed_out ? 0 : 1;
    co_return;
  }
  for (std::size_t k = 0; k < r->size(); ++k) {
    auto& x = (*r)[k];
    c->bad += (x && *x == us[k]) || (!x && x.error() == std::errc::operation_canceled) ? 0 : 1;
  }
}

corio::task<race_summary> pool_cancel_races() {
  race_counts c;
  race_summary out;
  auto pool = co_await corio::ipc::process_pool::start(2);
  if (!pool) {
    out.bad = -1;
    co_return out;
  }
  auto* p = pool->get();
  for (int round = 0; round < 50; ++round) {
    std::vector<corio::task<void>> calls;
    for (int j = 0; j < 6; ++j) {
      calls.push_back(racing_call(p, round * 6 + j, &c));
    }
    co_await corio::when_all(std::move(calls));
  }
  auto after = co_await p->map<&spin_us>(std::vector<int>(50, 1));
  out.after_ok = after.size() == 50;
  for (auto& x : after) {
    out.after_ok = out.after_ok && x && *x == 1;
  }
  co_await p->shutdown();
  out.bad = c.bad.load();
  out.cancelled = c.cancelled.load();
  out.streams_bad = c.streams_bad.load();
  co_return out;
}
}  // namespace

TEST_CASE("stress: 300 pool calls cancelled at racing moments stay consistent", "[process][stress][pool]") {
  REQUIRE(g_fork_server);
  corio::runtime rt(workers(2));
  auto c = rt.block_on(pool_cancel_races());
  CHECK(c.bad == 0);
  CHECK(c.streams_bad == 0);
  CHECK(c.cancelled > 0);
  CHECK(c.after_ok);
  CHECK(corio_test::zombies_after_settle(5s) == 0);
}
