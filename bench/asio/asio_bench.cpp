// Boost.Asio (1.81) peer benchmarks for corio.
//
// Built twice from this one file (see meson.build):
//   asio_bench_uring : -DBOOST_ASIO_HAS_IO_URING -DBOOST_ASIO_DISABLE_EPOLL
//   asio_bench_epoll : default reactor (epoll)
// ASIO_SYSTEM_NAME is the system name printed in every result line.
//
// Usage: asio_bench_X <benchmark|all> [--threads N] [--timeout S]
//   benchmarks: spawn pingpong timers io mutex32k mutex1m
//               chan_spsc chan_mpmc chan_pingpong
// Output: one line per figure on stdout: "<name> <system> <value> <unit>".
//
// Every benchmark runs its io_context on N worker threads (default 2). The
// io_context concurrency hint is N. The main thread does not run the context;
// it acts as a watchdog: if a benchmark has not finished after --timeout
// seconds (default 30) the context is stopped, the figure is printed as "nan"
// with a note on stderr, the benchmark's state is deliberately leaked (its
// coroutines are never resumed again) and the program moves on. A wrong
// result (count/sum mismatch, exception in a coroutine) is reported on stderr
// and makes the program exit with status 1 (after the remaining benchmarks).
// A timeout makes the program exit with status 2 (unless a failure occurred).
//
// All coroutines are C++20 coroutines via boost::asio::awaitable /
// use_awaitable; co_spawn is used with a completion handler that counts
// completions, so no result is awaited by polling.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#ifndef ASIO_SYSTEM_NAME
#define ASIO_SYSTEM_NAME "asio"
#endif

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

// Channel carrying an int with an error_code (the canonical asio signature).
using int_channel = asio::experimental::concurrent_channel<void(error_code, int)>;
// Payload-less channel, used as a lock in the mutex benchmarks.
using lock_channel = asio::experimental::concurrent_channel<void(error_code)>;

namespace {

const char* const kSystem = ASIO_SYSTEM_NAME;
int g_threads = 2;
double g_timeout_s = 30.0;
bool g_failed = false;    // a benchmark produced a wrong result
bool g_timed_out = false; // a benchmark hit the watchdog

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void report(const char* name, double value, const char* unit) {
  if (std::isnan(value))
    std::printf("%s %s nan %s\n", name, kSystem, unit);
  else
    std::printf("%s %s %.1f %s\n", name, kSystem, value, unit);
  std::fflush(stdout);
}

void fail(const char* name, const std::string& what) {
  std::fprintf(stderr, "%s %s: FAILED: %s\n", name, kSystem, what.c_str());
  g_failed = true;
}

// Common per-benchmark state: the io_context, a completion counter, and the
// time at which the last tracked coroutine completed.
struct Base {
  explicit Base(int threads) : ctx(threads) {}
  virtual ~Base() = default;

  asio::io_context ctx;
  std::atomic<std::int64_t> remaining{0};
  std::atomic<bool> error{false};
  std::string error_what; // first exception message (written once)
  std::atomic<bool> error_claimed{false};
  Clock::time_point start{};
  Clock::time_point end{};

  // Completion handler body for co_spawn: counts down, stamps the end time.
  void on_done(std::exception_ptr e) {
    if (e) {
      if (!error_claimed.exchange(true)) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          error_what = ex.what();
        } catch (...) {
          error_what = "unknown exception";
        }
      }
      error.store(true);
    }
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) end = Clock::now();
  }

  auto done_token() {
    return [this](std::exception_ptr e) { on_done(e); };
  }
};

// Runs b->ctx on g_threads worker threads until it runs out of work, or until
// the watchdog fires. Returns false on timeout; in that case the caller must
// leak `b` (the stopped context still owns suspended coroutine frames that
// refer to b).
bool run_context(Base& b) {
  std::mutex m;
  std::condition_variable cv;
  int finished = 0;
  std::vector<std::thread> workers;
  workers.reserve(static_cast<std::size_t>(g_threads));
  for (int i = 0; i < g_threads; ++i) {
    workers.emplace_back([&] {
      b.ctx.run();
      std::lock_guard<std::mutex> lk(m);
      ++finished;
      cv.notify_all();
    });
  }
  bool ok;
  {
    std::unique_lock<std::mutex> lk(m);
    ok = cv.wait_for(lk, std::chrono::duration<double>(g_timeout_s),
                     [&] { return finished == g_threads; });
  }
  if (!ok) b.ctx.stop();
  for (auto& t : workers) t.join();
  return ok;
}

// Runs benchmark state `b`. On timeout prints nan for each of `names`/`units`,
// notes it on stderr, leaks b, and returns false. On a coroutine exception,
// reports failure and returns false. Otherwise returns true (caller owns b).
template <class B>
bool execute(std::unique_ptr<B>& b, std::initializer_list<std::pair<const char*, const char*>> figures) {
  if (!run_context(*b)) {
    for (auto& [name, unit] : figures) {
      std::fprintf(stderr,
                   "%s %s: TIMEOUT: not finished after %g s (%lld coroutines outstanding); "
                   "context stopped, state leaked\n",
                   name, kSystem, g_timeout_s, static_cast<long long>(b->remaining.load()));
      report(name, std::nan(""), unit);
    }
    g_timed_out = true;
    (void)b.release(); // intentionally leaked, see run_context
    return false;
  }
  if (b->error.load()) {
    fail(figures.begin()->first, "exception in coroutine: " + b->error_what);
    return false;
  }
  if (b->remaining.load() != 0) {
    fail(figures.begin()->first, "context ran out of work with " +
                                     std::to_string(b->remaining.load()) + " coroutines unfinished");
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// 1. spawn: 1,000,000 empty coroutines co_spawn'ed from a driver coroutine
//    running on the context; each completion decrements a counter, the last
//    one stamps the end time. Time = first spawn .. last completion. The
//    check is that all 1,000,001 completion handlers ran.
// ---------------------------------------------------------------------------
constexpr std::int64_t kSpawnTasks = 1'000'000;

awaitable<void> empty_task() { co_return; }

using SpawnBench = Base;

awaitable<void> spawn_driver(SpawnBench* b) {
  auto ex = co_await asio::this_coro::executor;
  b->start = Clock::now();
  for (std::int64_t i = 0; i < kSpawnTasks; ++i) asio::co_spawn(ex, empty_task(), b->done_token());
  co_return;
}

void bench_spawn() {
  auto b = std::make_unique<SpawnBench>(g_threads);
  b->remaining = kSpawnTasks + 1; // tasks + driver
  asio::co_spawn(b->ctx, spawn_driver(b.get()), b->done_token());
  // execute() checks that every completion handler ran (remaining == 0).
  if (!execute(b, {{"spawn", "ns/task"}})) return;
  report("spawn", seconds(b->end - b->start) * 1e9 / double(kSpawnTasks), "ns/task");
}

// ---------------------------------------------------------------------------
// 2. pingpong / chan_pingpong: two coroutines pass an int back and forth
//    1,000,000 times through two concurrent_channels (ping->pong, pong->ping)
//    of capacity 0, i.e. rendezvous channels: a send completes only when the
//    peer has taken the value. One round trip = send + receive on each side.
//    pong increments the value, ping checks it.
// ---------------------------------------------------------------------------
constexpr std::int64_t kPingPongRounds = 1'000'000;

struct PingPongBench : Base {
  explicit PingPongBench(int threads)
      : Base(threads), to_pong(ctx.get_executor(), 0), to_ping(ctx.get_executor(), 0) {}
  int_channel to_pong;
  int_channel to_ping;
  bool bad = false;
};

awaitable<void> ping(PingPongBench* b) {
  b->start = Clock::now();
  for (std::int64_t i = 0; i < kPingPongRounds; ++i) {
    int v = static_cast<int>(i & 0xffffff);
    co_await b->to_pong.async_send(error_code{}, v, use_awaitable);
    int r = co_await b->to_ping.async_receive(use_awaitable);
    if (r != v + 1) b->bad = true;
  }
}

awaitable<void> pong(PingPongBench* b) {
  for (std::int64_t i = 0; i < kPingPongRounds; ++i) {
    int v = co_await b->to_pong.async_receive(use_awaitable);
    co_await b->to_ping.async_send(error_code{}, v + 1, use_awaitable);
  }
}

void bench_pingpong(const char* name) {
  auto b = std::make_unique<PingPongBench>(g_threads);
  b->remaining = 2;
  asio::co_spawn(b->ctx, pong(b.get()), b->done_token());
  asio::co_spawn(b->ctx, ping(b.get()), b->done_token());
  if (!execute(b, {{name, "ns/rtt"}})) return;
  if (b->bad) {
    fail(name, "value mismatch in round trip");
    return;
  }
  report(name, seconds(b->end - b->start) * 1e9 / double(kPingPongRounds), "ns/rtt");
}

// ---------------------------------------------------------------------------
// 3. timers: 100,000 coroutines, each waits on its own 1 ms steady_timer.
//    A driver coroutine spawns them all; time = start of spawning .. last
//    timer coroutine done. Overshoot = max over timers of (wake time - the
//    timer's expiry), expiry = timer creation time + 1 ms.
// ---------------------------------------------------------------------------
constexpr std::int64_t kTimers = 100'000;

struct TimersBench : Base {
  using Base::Base;
  std::atomic<std::int64_t> max_overshoot_ns{0};
  std::atomic<std::int64_t> early{0}; // woke before expiry (should be 0)
};

awaitable<void> timer_task(TimersBench* b) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
  co_await t.async_wait(use_awaitable);
  auto now = Clock::now();
  std::int64_t over = std::chrono::duration_cast<std::chrono::nanoseconds>(now - t.expiry()).count();
  if (over < 0) b->early.fetch_add(1, std::memory_order_relaxed);
  std::int64_t cur = b->max_overshoot_ns.load(std::memory_order_relaxed);
  while (over > cur && !b->max_overshoot_ns.compare_exchange_weak(cur, over, std::memory_order_relaxed)) {
  }
}

awaitable<void> timers_driver(TimersBench* b) {
  auto ex = co_await asio::this_coro::executor;
  b->start = Clock::now();
  for (std::int64_t i = 0; i < kTimers; ++i) asio::co_spawn(ex, timer_task(b), b->done_token());
  co_return;
}

void bench_timers() {
  auto b = std::make_unique<TimersBench>(g_threads);
  b->remaining = kTimers + 1;
  asio::co_spawn(b->ctx, timers_driver(b.get()), b->done_token());
  if (!execute(b, {{"timers", "ms"}, {"timers_overshoot", "ms"}})) return;
  if (b->early.load() != 0) {
    fail("timers", std::to_string(b->early.load()) + " timers fired before their expiry");
    return;
  }
  report("timers", seconds(b->end - b->start) * 1e3, "ms");
  report("timers_overshoot", double(b->max_overshoot_ns.load()) / 1e6, "ms");
}

// ---------------------------------------------------------------------------
// 4. io: one coroutine does 1,000,000 sequential (write 64 bytes, read 64
//    bytes) pairs over a pipe wrapped in writable_pipe / readable_pipe.
//    op = one read or one write, so ns/op = total / 2,000,000.
// ---------------------------------------------------------------------------
constexpr std::int64_t kIoPairs = 1'000'000;
constexpr std::size_t kIoBytes = 64;

struct IoBench : Base {
  IoBench(int threads, int rfd, int wfd) : Base(threads), rp(ctx, rfd), wp(ctx, wfd) {}
  asio::readable_pipe rp;
  asio::writable_pipe wp;
  bool bad = false;
};

awaitable<void> io_task(IoBench* b) {
  unsigned char out[kIoBytes];
  unsigned char in[kIoBytes];
  b->start = Clock::now();
  for (std::int64_t i = 0; i < kIoPairs; ++i) {
    std::memset(out, static_cast<int>(i & 0xff), sizeof out);
    std::size_t w = co_await asio::async_write(b->wp, asio::buffer(out), use_awaitable);
    std::size_t r = co_await asio::async_read(b->rp, asio::buffer(in), use_awaitable);
    if (w != kIoBytes || r != kIoBytes || in[0] != out[0] || in[kIoBytes - 1] != out[kIoBytes - 1])
      b->bad = true;
  }
  // Close both ends so no I/O object keeps the context alive.
  b->wp.close();
  b->rp.close();
}

void bench_io() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    fail("io", std::string("pipe2: ") + std::strerror(errno));
    return;
  }
  auto b = std::make_unique<IoBench>(g_threads, fds[0], fds[1]);
  b->remaining = 1;
  asio::co_spawn(b->ctx, io_task(b.get()), b->done_token());
  if (!execute(b, {{"io", "ns/op"}})) return;
  if (b->bad) {
    fail("io", "short read/write or data mismatch");
    return;
  }
  report("io", seconds(b->end - b->start) * 1e9 / double(2 * kIoPairs), "ns/op");
}

// ---------------------------------------------------------------------------
// 5. mutex32k / mutex1m: N coroutines each "lock", increment a shared
//    non-atomic counter, "unlock". The lock is a concurrent_channel<void(
//    error_code)> of capacity 1, initially empty: async_send acquires (it
//    completes immediately when the slot is free, otherwise the sender is
//    queued until the holder releases), async_receive releases (it takes the
//    token out of the slot, which lets the next queued sender in). The final
//    counter must equal N exactly. Time = start of spawning .. last done.
// ---------------------------------------------------------------------------
struct MutexBench : Base {
  explicit MutexBench(int threads) : Base(threads), lock(ctx.get_executor(), 1) {}
  lock_channel lock;
  std::int64_t counter = 0; // protected by `lock`
};

awaitable<void> mutex_task(MutexBench* b) {
  co_await b->lock.async_send(error_code{}, use_awaitable); // acquire
  ++b->counter;
  co_await b->lock.async_receive(use_awaitable); // release
}

awaitable<void> mutex_driver(MutexBench* b, std::int64_t n) {
  auto ex = co_await asio::this_coro::executor;
  b->start = Clock::now();
  for (std::int64_t i = 0; i < n; ++i) asio::co_spawn(ex, mutex_task(b), b->done_token());
  co_return;
}

void bench_mutex(const char* name, std::int64_t n) {
  auto b = std::make_unique<MutexBench>(g_threads);
  b->remaining = n + 1;
  asio::co_spawn(b->ctx, mutex_driver(b.get(), n), b->done_token());
  if (!execute(b, {{name, "ms"}})) return;
  if (b->counter != n) {
    fail(name, "counter = " + std::to_string(b->counter) + ", expected " + std::to_string(n));
    return;
  }
  report(name, seconds(b->end - b->start) * 1e3, "ms");
}

// ---------------------------------------------------------------------------
// 6. chan_spsc / chan_mpmc: 1,000,000 ints through a concurrent_channel of
//    capacity 1024. spsc: 1 producer, 1 consumer. mpmc: 4 producers each
//    sending 250,000, 4 consumers each receiving exactly 250,000 (total sends
//    == total receives, so no close() is needed). The sum of all received
//    values must equal the sum of all sent values.
// ---------------------------------------------------------------------------
constexpr std::int64_t kChanMsgs = 1'000'000;
constexpr std::size_t kChanCapacity = 1024;

struct ChanBench : Base {
  explicit ChanBench(int threads) : Base(threads), ch(ctx.get_executor(), kChanCapacity) {}
  int_channel ch;
  std::atomic<std::int64_t> sum{0};
};

awaitable<void> producer(ChanBench* b, std::int64_t first, std::int64_t count) {
  for (std::int64_t i = first; i < first + count; ++i)
    co_await b->ch.async_send(error_code{}, static_cast<int>(i), use_awaitable);
}

awaitable<void> consumer(ChanBench* b, std::int64_t count) {
  std::int64_t local = 0;
  for (std::int64_t i = 0; i < count; ++i) local += co_await b->ch.async_receive(use_awaitable);
  b->sum.fetch_add(local, std::memory_order_relaxed);
}

void bench_chan(const char* name, int producers, int consumers) {
  auto b = std::make_unique<ChanBench>(g_threads);
  b->remaining = producers + consumers;
  b->start = Clock::now();
  const std::int64_t per_p = kChanMsgs / producers;
  const std::int64_t per_c = kChanMsgs / consumers;
  for (int c = 0; c < consumers; ++c) asio::co_spawn(b->ctx, consumer(b.get(), per_c), b->done_token());
  for (int p = 0; p < producers; ++p)
    asio::co_spawn(b->ctx, producer(b.get(), p * per_p, per_p), b->done_token());
  if (!execute(b, {{name, "Mmsg/s"}})) return;
  const std::int64_t n = per_p * producers;
  const std::int64_t expected = n * (n - 1) / 2;
  if (b->sum.load() != expected) {
    fail(name, "sum = " + std::to_string(b->sum.load()) + ", expected " + std::to_string(expected));
    return;
  }
  report(name, double(n) / seconds(b->end - b->start) / 1e6, "Mmsg/s");
}

void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s <benchmark|all> [--threads N] [--timeout SECONDS]\n"
               "benchmarks: spawn pingpong timers io mutex32k mutex1m chan_spsc chan_mpmc "
               "chan_pingpong\n",
               argv0);
}

} // namespace

int main(int argc, char** argv) {
  std::string which;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      g_threads = std::atoi(argv[++i]);
    } else if (a.rfind("--threads=", 0) == 0) {
      g_threads = std::atoi(a.c_str() + 10);
    } else if (a == "--timeout" && i + 1 < argc) {
      g_timeout_s = std::atof(argv[++i]);
    } else if (a.rfind("--timeout=", 0) == 0) {
      g_timeout_s = std::atof(a.c_str() + 10);
    } else if (a == "-h" || a == "--help") {
      usage(argv[0]);
      return 0;
    } else if (which.empty() && a[0] != '-') {
      which = a;
    } else {
      usage(argv[0]);
      return 2;
    }
  }
  if (which.empty() || g_threads < 1 || !(g_timeout_s > 0)) {
    usage(argv[0]);
    return 2;
  }

  const std::vector<std::pair<std::string, std::function<void()>>> benches = {
      {"spawn", [] { bench_spawn(); }},
      {"pingpong", [] { bench_pingpong("pingpong"); }},
      {"timers", [] { bench_timers(); }},
      {"io", [] { bench_io(); }},
      {"mutex32k", [] { bench_mutex("mutex_32k", 32'000); }},
      {"mutex1m", [] { bench_mutex("mutex_1m", 1'000'000); }},
      {"chan_spsc", [] { bench_chan("chan_spsc", 1, 1); }},
      {"chan_mpmc", [] { bench_chan("chan_mpmc", 4, 4); }},
      {"chan_pingpong", [] { bench_pingpong("chan_pingpong"); }},
  };

  bool found = false;
  for (auto& [name, fn] : benches) {
    if (which == "all" || which == name) {
      found = true;
      fn();
    }
  }
  if (!found) {
    std::fprintf(stderr, "unknown benchmark '%s'\n", which.c_str());
    usage(argv[0]);
    return 2;
  }
  if (g_failed) return 1;
  if (g_timed_out) return 2;
  return 0;
}
