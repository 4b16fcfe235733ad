// race_counter: the tutorial's race condition (section 3) with coroutines instead of
// 32,000 pthreads. N tasks on 2 workers each add 1 to a shared counter, four ways:
//   no lock  : read, yield, write — updates get lost (the tutorial's 31997)
//   spinlock : a busy-waiting flag (fine here: nobody suspends while holding it)
//   mutex    : corio::mutex — a waiting task suspends, the worker runs others
//   atomic   : one fetch_add, the cheapest when the critical section is one integer
// Usage: race_counter [tasks]   (default 32000)
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <corio/corio.hpp>
#include <corio/sync/mutex.hpp>

namespace {

struct counters {
  long plain = 0;  // only touched through std::atomic_ref with relaxed loads/stores
  long spin = 0;
  long locked = 0;
  std::atomic<long> atomic{0};
  std::atomic_flag spin_flag;
  corio::mutex m;
};

enum class way { no_lock, spinlock, mutex, atomic };

corio::task<void> add_one(counters& c, way w) {
  switch (w) {
    case way::no_lock: {
      std::atomic_ref<long> ref(c.plain);
      long v = ref.load(std::memory_order_relaxed);
      co_await corio::yield_now{};  // another task runs between our read and write
      ref.store(v + 1, std::memory_order_relaxed);
      break;
    }
    case way::spinlock:
      while (c.spin_flag.test_and_set(std::memory_order_acquire)) {
      }
      ++c.spin;
      c.spin_flag.clear(std::memory_order_release);
      break;
    case way::mutex: {
      auto g = co_await c.m.lock_uncancellable();
      ++c.locked;
      break;
    }
    case way::atomic:
      c.atomic.fetch_add(1, std::memory_order_relaxed);
      break;
  }
}

corio::task<void> run_all(counters& c, way w, long n) {
  std::vector<corio::join_handle<void>> hs;
  hs.reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) {
    hs.push_back(corio::spawn(add_one(c, w)));
  }
  for (auto& h : hs) {
    co_await h;
  }
}

int example_main(int argc, char** argv) {
  long n = 32000;
  example::args args("race_counter", "N tasks add 1 to a counter: no lock, spinlock, mutex, atomic");
  args.positional("tasks", n, 1L, 10000000L, "tasks, 1..10000000 (default 32000)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  corio::runtime_config cfg;
  cfg.workers = 2;
  corio::runtime rt(cfg);
  counters c;
  const char* names[] = {"no lock", "spinlock", "mutex", "atomic"};
  for (way w : {way::no_lock, way::spinlock, way::mutex, way::atomic}) {
    auto t0 = std::chrono::steady_clock::now();
    rt.block_on(run_all(c, w, n));
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    long result = w == way::no_lock    ? std::atomic_ref<long>(c.plain).load()
                  : w == way::spinlock ? c.spin
                  : w == way::mutex    ? c.locked
                                       : c.atomic.load();
    std::printf("%-9s result %ld of %ld  %.1f ms\n", names[static_cast<int>(w)], result, n, ms);
    if (w != way::no_lock && result != n) {
      return 1;  // a lock that loses updates is a bug
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("race_counter", example_main, argc, argv); }
