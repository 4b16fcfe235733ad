// corio's side of the sync/ benchmarks (issue 3), with the thread baselines. Prints one
// line per figure: `<benchmark> <system> <value> <unit>`. The Boost.Asio peers are
// bench/asio (asio_bench_uring / asio_bench_epoll mutex32k mutex1m chan_spsc chan_mpmc
// chan_pingpong), which do the same work:
//   mutex_32k / mutex_1m : N tasks each lock, increment a plain counter, unlock; time from
//                          the first spawn to the last completion (ms); then the same tasks
//                          without the mutex (corio-spawn-only: what spawning costs alone)
//   spawn_1m             : only that spawn-only phase, on a fresh runtime (not part of
//                          `all`): run after the mutex phase, the spawn-only figure also
//                          depends on the memory that phase left behind
//   chan_spsc / chan_mpmc: 1,000,000 ints through a capacity-1024 channel, 1 producer and
//                          1 consumer / 4 and 4 (M msgs/s)
//   chan_pingpong        : two tasks pass an int back and forth 1,000,000 times through
//                          two rendezvous (capacity 0) channels (ns per round trip)
//   lock_uncontended     : lock + unlock by one task, nobody else (ns)
// Baselines: std-mutex (uncontended), std-mutex-32k-threads (the tutorial's experiment:
// 32,000 pthreads each lock/increment/unlock a std::mutex), std-mutex-cv-threads (a
// std::mutex + std::condition_variable queue between OS threads, same shapes).
//
//   sync_bench <lock|mutex32k|mutex1m|spawn1m|chan_spsc|chan_mpmc|chan_pingpong|threads32k|all>
//              [--workers N] [--corio-only: skip the thread baselines]
#include "../worker_count.hpp"

#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <corio/corio.hpp>
#include <corio/sync/channel.hpp>
#include <corio/sync/latch.hpp>
#include <corio/sync/mutex.hpp>

using steady = std::chrono::steady_clock;

namespace {

unsigned g_workers = 2;
bool g_failed = false;
bool g_corio_only = false;  // --corio-only: skip the thread baselines (for profiling)

double ms_since(steady::time_point t0) { return std::chrono::duration<double, std::milli>(steady::now() - t0).count(); }

void report(const char* name, const char* system, double value, const char* unit) {
  std::printf("%s %s %.1f %s\n", name, system, value, unit);
  std::fflush(stdout);
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    g_failed = true;
  }
}

// ---- uncontended lock/unlock ---------------------------------------------------------

constexpr long kLockIters = 10'000'000;

corio::task<double> corio_uncontended() {
  corio::mutex m;
  long counter = 0;
  auto t0 = steady::now();
  for (long i = 0; i < kLockIters; ++i) {
    auto g = co_await m.lock_uncancellable();
    ++counter;
  }
  double ns = ms_since(t0) * 1e6 / kLockIters;
  check(counter == kLockIters, "uncontended count");
  co_return ns;
}

void bench_lock(corio::runtime& rt) {
  report("lock_uncontended", "corio", rt.block_on(corio_uncontended()), "ns");
  std::mutex m;
  long counter = 0;
  auto t0 = steady::now();
  for (long i = 0; i < kLockIters; ++i) {
    std::lock_guard g(m);
    ++counter;
  }
  double ns = ms_since(t0) * 1e6 / kLockIters;
  check(counter == kLockIters, "std uncontended count");
  report("lock_uncontended", "std-mutex", ns, "ns");
}

// ---- N tasks contending one mutex ----------------------------------------------------

struct mutex_state {
  corio::mutex m;
  std::int64_t counter = 0;  // guarded by m
};

corio::task<void> mutex_task(mutex_state& s, corio::latch& done) {
  {
    auto g = co_await s.m.lock_uncancellable();
    ++s.counter;
  }
  done.count_down();
}

// The same tasks without the mutex (an atomic increment): what spawning costs alone.
corio::task<void> atomic_task(std::atomic<std::int64_t>& c, corio::latch& done) {
  c.fetch_add(1, std::memory_order_relaxed);
  done.count_down();
  co_return;
}

corio::task<double> mutex_driver(std::int64_t n, bool with_mutex) {
  mutex_state s;
  std::atomic<std::int64_t> atomic_counter{0};
  corio::latch done(n);
  auto t0 = steady::now();
  for (std::int64_t i = 0; i < n; ++i) {
    if (with_mutex) {
      corio::spawn(mutex_task(s, done)).detach();
    } else {
      corio::spawn(atomic_task(atomic_counter, done)).detach();
    }
  }
  (void)co_await done.wait();
  double ms = ms_since(t0);
  check((with_mutex ? s.counter : atomic_counter.load()) == n, "mutex counter");
  co_return ms;
}

void bench_mutex(corio::runtime& rt, const char* name, std::int64_t n) {
  report(name, "corio", rt.block_on(mutex_driver(n, true)), "ms");
  report(name, "corio-spawn-only", rt.block_on(mutex_driver(n, false)), "ms");
}

// The tutorial's experiment: 32,000 pthreads, each lock / increment / unlock.
void bench_threads32k() {
  constexpr int kThreads = 32000;
  std::mutex m;
  long counter = 0;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);  // 32,000 default 8 MiB stacks would not fit
  struct arg_t {
    std::mutex* m;
    long* c;
  } arg{&m, &counter};
  std::vector<pthread_t> ts(kThreads);
  int created = 0;
  auto t0 = steady::now();
  for (; created < kThreads; ++created) {
    if (pthread_create(&ts[created], &attr, [](void* p) -> void* {
          auto* a = static_cast<arg_t*>(p);
          std::lock_guard g(*a->m);
          ++*a->c;
          return nullptr;
        }, &arg) != 0) {
      break;
    }
  }
  for (int i = 0; i < created; ++i) {
    pthread_join(ts[i], nullptr);
  }
  double ms = ms_since(t0);
  pthread_attr_destroy(&attr);
  check(created == kThreads, "could not create 32,000 threads");
  check(counter == created, "thread counter");
  report("mutex_32k", "std-mutex-32k-threads", ms, "ms");
}

// ---- channels ------------------------------------------------------------------------

constexpr std::int64_t kMsgs = 1'000'000;
constexpr std::size_t kCapacity = 1024;

corio::task<void> producer(corio::channel<int>& ch, std::int64_t first, std::int64_t count) {
  for (std::int64_t i = first; i < first + count; ++i) {
    (void)co_await ch.send(static_cast<int>(i));
  }
}

corio::task<std::int64_t> consumer(corio::channel<int>& ch, std::int64_t count) {
  std::int64_t sum = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    sum += (co_await ch.recv()).value_or(0);
  }
  co_return sum;
}

corio::task<double> chan_driver(int producers, int consumers) {
  corio::channel<int> ch(kCapacity);
  const std::int64_t per_p = kMsgs / producers;
  const std::int64_t per_c = kMsgs / consumers;
  auto t0 = steady::now();
  std::vector<corio::join_handle<std::int64_t>> cs;
  std::vector<corio::join_handle<void>> ps;
  for (int c = 0; c < consumers; ++c) {
    cs.push_back(corio::spawn(consumer(ch, per_c)));
  }
  for (int p = 0; p < producers; ++p) {
    ps.push_back(corio::spawn(producer(ch, p * per_p, per_p)));
  }
  std::int64_t sum = 0;
  for (auto& h : cs) {
    sum += co_await h;
  }
  for (auto& h : ps) {
    co_await h;
  }
  double s = ms_since(t0) / 1e3;
  check(sum == kMsgs * (kMsgs - 1) / 2, "channel sum");
  co_return double(kMsgs) / s / 1e6;
}

/// The std::mutex + std::condition_variable bounded queue between OS threads.
struct cv_queue {
  std::mutex m;
  std::condition_variable not_empty, not_full;
  std::deque<int> q;
  std::size_t cap;
  explicit cv_queue(std::size_t c) : cap(c) {}
  void push(int v) {
    std::unique_lock lk(m);
    not_full.wait(lk, [&] { return q.size() < cap; });
    q.push_back(v);
    lk.unlock();
    not_empty.notify_one();
  }
  int pop() {
    std::unique_lock lk(m);
    not_empty.wait(lk, [&] { return !q.empty(); });
    int v = q.front();
    q.pop_front();
    lk.unlock();
    not_full.notify_one();
    return v;
  }
};

double threads_chan(int producers, int consumers) {
  cv_queue q(kCapacity);
  const std::int64_t per_p = kMsgs / producers;
  const std::int64_t per_c = kMsgs / consumers;
  std::atomic<std::int64_t> sum{0};
  std::vector<std::thread> ts;
  auto t0 = steady::now();
  for (int c = 0; c < consumers; ++c) {
    ts.emplace_back([&] {
      std::int64_t local = 0;
      for (std::int64_t i = 0; i < per_c; ++i) {
        local += q.pop();
      }
      sum += local;
    });
  }
  for (int p = 0; p < producers; ++p) {
    ts.emplace_back([&, p] {
      for (std::int64_t i = p * per_p; i < (p + 1) * per_p; ++i) {
        q.push(static_cast<int>(i));
      }
    });
  }
  for (auto& t : ts) {
    t.join();
  }
  double s = ms_since(t0) / 1e3;
  check(sum.load() == kMsgs * (kMsgs - 1) / 2, "thread queue sum");
  return double(kMsgs) / s / 1e6;
}

void bench_chan(corio::runtime& rt, const char* name, int producers, int consumers) {
  report(name, "corio", rt.block_on(chan_driver(producers, consumers)), "Mmsg/s");
  if (!g_corio_only) {
    report(name, "std-mutex-cv-threads", threads_chan(producers, consumers), "Mmsg/s");
  }
}

// ---- ping-pong -----------------------------------------------------------------------

constexpr std::int64_t kRounds = 1'000'000;

corio::task<void> pong(corio::channel<int>& in, corio::channel<int>& out) {
  for (std::int64_t i = 0; i < kRounds; ++i) {
    int v = (co_await in.recv()).value_or(0);
    (void)co_await out.send(v + 1);
  }
}

corio::task<double> pingpong_driver(std::size_t capacity) {
  corio::channel<int> to_pong(capacity);
  corio::channel<int> to_ping(capacity);
  auto h = corio::spawn(pong(to_pong, to_ping));
  bool bad = false;
  auto t0 = steady::now();
  for (std::int64_t i = 0; i < kRounds; ++i) {
    int v = static_cast<int>(i & 0xffffff);
    (void)co_await to_pong.send(v);
    bad |= (co_await to_ping.recv()).value_or(-1) != v + 1;
  }
  double ns = ms_since(t0) * 1e6 / double(kRounds);
  co_await h;
  check(!bad, "ping-pong value");
  co_return ns;
}

double threads_pingpong() {
  cv_queue to_pong(1), to_ping(1);
  std::thread t([&] {
    for (std::int64_t i = 0; i < kRounds; ++i) {
      to_ping.push(to_pong.pop() + 1);
    }
  });
  bool bad = false;
  auto t0 = steady::now();
  for (std::int64_t i = 0; i < kRounds; ++i) {
    int v = static_cast<int>(i & 0xffffff);
    to_pong.push(v);
    bad |= to_ping.pop() != v + 1;
  }
  double ns = ms_since(t0) * 1e6 / double(kRounds);
  t.join();
  check(!bad, "thread ping-pong value");
  return ns;
}

void bench_pingpong(corio::runtime& rt) {
  report("chan_pingpong", "corio", rt.block_on(pingpong_driver(0)), "ns/rtt");
  report("chan_pingpong_cap1", "corio", rt.block_on(pingpong_driver(1)), "ns/rtt");
  if (!g_corio_only) {
    report("chan_pingpong", "std-mutex-cv-threads", threads_pingpong(), "ns/rtt");
  }
}

[[noreturn]] void usage(const char* why = nullptr) {
  if (why != nullptr) {
    std::fprintf(stderr, "sync_bench: %s\n", why);
  }
  std::fprintf(stderr, "usage: sync_bench <lock|mutex32k|mutex1m|spawn1m|chan_spsc|chan_mpmc|chan_pingpong|threads32k|all> [--workers N] [--corio-only]\n");
  std::exit(2);
}

// A worker count (bench/worker_count.hpp), or the usage and exit status 2.
unsigned parse_workers(const char* s) {
  if (auto n = bench::parse_worker_count(s)) {
    return *n;
  }
  usage("--workers takes a positive integer (at most 1024, as runtime_config allows)");
}

}  // namespace

int main(int argc, char** argv) {
  std::string which = "all";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--workers" && i + 1 < argc) {
      g_workers = parse_workers(argv[++i]);
    } else if (a == "--corio-only") {
      g_corio_only = true;
    } else {
      which = a;
    }
  }
  corio::runtime_config cfg;
  cfg.workers = g_workers;
  corio::runtime rt(cfg);
  bool all = which == "all";
  bool any = false;
  auto want = [&](const char* n) {
    bool w = all || which == n;
    any |= w;
    return w;
  };
  if (want("lock")) {
    bench_lock(rt);
  }
  if (want("mutex32k")) {
    bench_mutex(rt, "mutex_32k", 32'000);
  }
  if (want("mutex1m")) {
    bench_mutex(rt, "mutex_1m", 1'000'000);
  }
  if (which == "spawn1m") {  // asked for by name only
    any = true;
    report("spawn_1m", "corio-spawn-only", rt.block_on(mutex_driver(1'000'000, false)), "ms");
  }
  if (want("chan_spsc")) {
    bench_chan(rt, "chan_spsc", 1, 1);
  }
  if (want("chan_mpmc")) {
    bench_chan(rt, "chan_mpmc", 4, 4);
  }
  if (want("chan_pingpong")) {
    bench_pingpong(rt);
  }
  if (want("threads32k")) {
    bench_threads32k();
  }
  if (!any) {
    usage();
  }
  return g_failed ? 1 : 0;
}
