// Stress tests for the runtime core (suite `stress`): many tasks, steal pressure, foreign
// spawners, cancellation storms, sleep/wake hammering, and runtime churn.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <random>
#include <set>
#include <stop_token>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace std::chrono_literals;

namespace {

using corio_test::workers;

corio::task<long> value_of(long i) { co_return i; }

corio::task<long> spawn_many(long n) {
  std::vector<corio::join_handle<long>> handles;
  handles.reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) {
    handles.push_back(corio::spawn(value_of(i)));
  }
  long sum = 0;
  for (auto& h : handles) {
    sum += co_await h;
  }
  co_return sum;
}

corio::task<long> tree(int depth) {
  if (depth == 0) {
    co_return 1;
  }
  auto l = corio::spawn(tree(depth - 1));
  auto r = corio::spawn(tree(depth - 1));
  long a = co_await l;
  long b = co_await r;
  co_return a + b;
}

}  // namespace

TEST_CASE("stress: 1,000,000 spawned tasks sum exactly", "[stress]") {
  corio::runtime rt(workers(2));
  constexpr long n = 1'000'000;
  CHECK(rt.block_on(spawn_many(n)) == n * (n - 1) / 2);
}

TEST_CASE("stress: 1,000,000 spawned tasks with tiny local queues (constant overflow)", "[stress]") {
  auto c = workers(2);
  c.local_queue_capacity = 4;
  corio::runtime rt(c);
  constexpr long n = 1'000'000;
  CHECK(rt.block_on(spawn_many(n)) == n * (n - 1) / 2);
}

namespace {
void spin_for(std::chrono::microseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}
corio::task<long> hopper(long v, std::atomic<long>* hops) {
  auto last = ::syscall(SYS_gettid);  // not std::this_thread::get_id(): g++ may cache it across co_await
  for (int i = 0; i < 20; ++i) {
    spin_for(std::chrono::microseconds(5));
    co_await corio::yield_now{};
    auto now = ::syscall(SYS_gettid);
    if (now != last) {
      hops->fetch_add(1, std::memory_order_relaxed);
      last = now;
    }
  }
  co_return v;
}
corio::task<long> hop_rounds(std::atomic<long>* hops) {
  long sum = 0;
  for (int round = 0; round < 20; ++round) {
    // 200 tasks fit in the spawner's local queue (256): the other worker gets them only
    // by stealing, and a yielded task can be stolen again, so tasks move between workers.
    std::vector<corio::join_handle<long>> hs;
    for (long i = 0; i < 200; ++i) {
      hs.push_back(corio::spawn(hopper(i, hops)));
    }
    for (auto& h : hs) {
      sum += co_await h;
    }
  }
  co_return sum + co_await tree(14);
}
}  // namespace

TEST_CASE("stress: tasks hop between workers under steal pressure", "[stress]") {
  corio::runtime rt(workers(2));
  std::atomic<long> hops{0};
  CHECK(rt.block_on(hop_rounds(&hops)) == 20L * (200L * 199 / 2) + (1L << 14));
  auto m = rt.metrics();
  std::uint64_t steals = m.workers[0].steals + m.workers[1].steals;
  INFO("hops " << hops.load() << " steals " << steals);
  CHECK(steals > 0);
  CHECK(hops.load() > 0);
}

TEST_CASE("stress: spawning from 8 foreign threads at once", "[stress]") {
  corio::runtime rt(workers(2));
  std::atomic<long> done{0};
  std::atomic<int> refused{0};  // Catch2 assertions are not thread-safe: count, check later
  std::vector<std::thread> threads;
  constexpr int kPerThread = 20'000;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      std::vector<corio::join_handle<long>> hs;
      for (int i = 0; i < kPerThread; ++i) {
        auto h = rt.spawn(value_of(1));
        if (!h) {
          refused.fetch_add(1);
          continue;
        }
        hs.push_back(std::move(*h));
      }
      auto joiner = [](std::vector<corio::join_handle<long>> v) -> corio::task<long> {
        long s = 0;
        for (auto& h : v) {
          s += co_await h;
        }
        co_return s;
      };
      done.fetch_add(rt.block_on(joiner(std::move(hs))));
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(refused.load() == 0);
  CHECK(done.load() == 8L * kPerThread);
}

TEST_CASE("stress: 10,000 sleeps cancelled at random points", "[stress][cancel]") {
  corio::runtime rt(workers(2));
  std::atomic<int> cancelled{0};
  std::atomic<int> fired{0};
  auto sleeper = [&](std::stop_token token, int ms) -> corio::task<void> {
    auto r = co_await corio::sleep_for(std::chrono::milliseconds(ms), token);
    (r ? fired : cancelled).fetch_add(1, std::memory_order_relaxed);
  };
  std::vector<std::stop_source> sources(10'000);
  std::vector<corio::join_handle<void>> hs;
  std::mt19937 rng(7);
  for (auto& s : sources) {
    auto h = rt.spawn(sleeper(s.get_token(), static_cast<int>(rng() % 400)));
    REQUIRE(h);
    hs.push_back(std::move(*h));
  }
  // Cancel from two foreign threads at random moments while sleeps fire.
  auto canceller = [&](int start) {
    std::mt19937 r(static_cast<unsigned>(start));
    for (std::size_t i = static_cast<std::size_t>(start); i < sources.size(); i += 2) {
      if (r() % 4 == 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(r() % 20));
      }
      sources[i].request_stop();
    }
  };
  std::thread c1(canceller, 0);
  std::thread c2(canceller, 1);
  c1.join();
  c2.join();
  auto joiner = [](std::vector<corio::join_handle<void>> v) -> corio::task<void> {
    for (auto& h : v) {
      co_await h;
    }
  };
  rt.block_on(joiner(std::move(hs)));
  CHECK(cancelled.load() + fired.load() == 10'000);
  CHECK(cancelled.load() > 0);
}

TEST_CASE("stress: 2,000 pipe reads cancelled at random points lose no data", "[stress][cancel]") {
  corio::runtime rt(workers(2));
  constexpr int kPipes = 2'000;
  std::vector<std::array<int, 2>> pipes(kPipes);
  for (auto& p : pipes) {
    REQUIRE(::pipe2(p.data(), O_CLOEXEC) == 0);
  }
  std::vector<std::stop_source> stops(kPipes);
  std::atomic<int> got_data{0};
  std::atomic<int> got_cancel{0};
  std::atomic<int> unexpected_result{0};
  auto reader = [&](int i) -> corio::task<void> {
    std::array<std::byte, 8> buf{};
    auto r = co_await corio::io::read(pipes[i][0], buf, -1, stops[i].get_token());
    if (r && *r == 1) {
      got_data.fetch_add(1);
    } else if (!r && r.error() == std::errc::operation_canceled) {
      got_cancel.fetch_add(1);
    } else {
      unexpected_result.fetch_add(1);
    }
  };
  std::vector<corio::join_handle<void>> hs;
  for (int i = 0; i < kPipes; ++i) {
    hs.push_back(std::move(*rt.spawn(reader(i))));
  }
  std::mt19937 rng(3);
  std::vector<int> written(kPipes, 0);
  for (int i = 0; i < kPipes; ++i) {
    // Race a write against a cancel on each pipe.
    if (rng() % 2 == 0) {
      written[i] = ::write(pipes[i][1], "x", 1) == 1 ? 1 : 0;
      stops[i].request_stop();
    } else {
      stops[i].request_stop();
      written[i] = ::write(pipes[i][1], "x", 1) == 1 ? 1 : 0;
    }
  }
  auto joiner = [](std::vector<corio::join_handle<void>> v) -> corio::task<void> {
    for (auto& h : v) {
      co_await h;
    }
  };
  rt.block_on(joiner(std::move(hs)));
  CHECK(unexpected_result.load() == 0);
  CHECK(got_data.load() + got_cancel.load() == kPipes);
  // Every byte is either delivered to a reader or still in its pipe: nothing lost.
  int left_in_pipes = 0;
  for (auto& p : pipes) {
    ::fcntl(p[0], F_SETFL, O_NONBLOCK);
    char c;
    left_in_pipes += ::read(p[0], &c, 1) == 1 ? 1 : 0;
    ::close(p[0]);
    ::close(p[1]);
  }
  CHECK(got_data.load() + left_in_pipes == kPipes);
}

TEST_CASE("stress: sleep/wake hammer - 20,000 wake-ups of parked workers, none lost", "[stress][park]") {
  corio::runtime rt(workers(2));
  // Each block_on finds the workers parked (or parking) and must wake one; a lost wake-up
  // hangs here (meson's timeout turns that into a failure).
  long sum = 0;
  for (int i = 0; i < 20'000; ++i) {
    sum += rt.block_on(value_of(i));
    if (i % 1000 == 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  CHECK(sum == 20'000L * 19'999 / 2);
  // And cross-worker wakes from inside: a chain of spawns that each wait on a short sleep.
  auto chain = [](int n) -> corio::task<int> {
    int done = 0;
    for (int i = 0; i < n; ++i) {
      auto h = corio::spawn([]() -> corio::task<int> {
        (void)co_await corio::sleep_for(std::chrono::microseconds(50));
        co_return 1;
      }());
      done += co_await h;
    }
    co_return done;
  };
  CHECK(rt.block_on(chain(5'000)) == 5'000);
}

namespace {
corio::task<long> churn_workload(int i) {
  // Work on the workers: spawns, frames freed on other threads, timers and a ring op.
  long s = co_await spawn_many(200);
  (void)co_await corio::sleep_for(std::chrono::microseconds(10));
  (void)co_await corio::io::nop();
  co_return s + i;
}
}  // namespace

TEST_CASE("stress: a runtime created and destroyed 1,000 times leaks no fds or memory", "[stress][shutdown]") {
  std::size_t fds_before = corio_test::open_fd_count();
  // Warm up allocator arenas and frame caches first, then measure growth.
  for (int i = 0; i < 100; ++i) {
    corio::runtime rt(workers(2));
    rt.block_on(churn_workload(i));
  }
  long rss_before = corio_test::rss_kib();
  for (int i = 0; i < 1'000; ++i) {
    corio::runtime rt(workers(2));
    CHECK(rt.block_on(churn_workload(i)) == 200L * 199 / 2 + i);
  }
  long rss_after = corio_test::rss_kib();
  CHECK(corio_test::open_fd_count() == fds_before);
  INFO("RSS before " << rss_before << " KiB, after " << rss_after << " KiB");
#if defined(__SANITIZE_ADDRESS__)
  WARN("RSS growth is not checked under AddressSanitizer (its quarantine holds freed memory)");
#else
  CHECK(rss_after - rss_before < 8 * 1024);
#endif
}
