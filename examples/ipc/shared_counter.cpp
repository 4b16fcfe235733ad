// shared_counter: the tutorial's race on a shared multiprocessing.Value, across 4
// processes, first without a lock (updates are lost), then with corio's process-shared
// mutex (ipc/process_mutex.hpp: exact).
//
// The parent creates a named shared-memory block holding a process_mutex, a start event
// and two counters; four child processes (forked through corio's fork server) attach to
// it by name. Each child runs its own corio runtime: it waits for the start event, adds 1
// to the unlocked counter n times (load, add, store: the race), then n times to the
// locked one under `co_await mutex.lock()`.
//
// A child that fails (exits with a code other than 0, or is killed by a signal) leaves
// counters that mean nothing: the parent then prints none, but names each failed child
// and how it ended ("shared_counter: child 2 of 4 (pid 1234) failed: signal 9 (Killed)")
// on stderr, and exits 1.
//
// The block's name (/corio-example-counter-PID, in /dev/shm) outlives the processes until
// it is removed, so the parent removes it however it ends: also on Ctrl-C or SIGTERM,
// which end its waits (the children still running are killed and reaped first; exit
// status 1).
//
//   shared_counter [n]                 increments per process and counter, default 100000
//   shared_counter --hold-ms MS [n]    wait MS with the children started and waiting for
//                                      the start event (look at the block in /dev/shm;
//                                      the children's pids are printed)
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "../common/shutdown.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>
#include <corio/ipc/process_event.hpp>
#include <corio/ipc/process_mutex.hpp>
#include <corio/ipc/shared_memory.hpp>
#include <corio/runtime/port.hpp>

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace {

constexpr int kProcesses = 4;
// Layout of the shared block.
constexpr std::size_t kMutexAt = 0;
constexpr std::size_t kStartAt = 64;
constexpr std::size_t kUnlockedAt = 128;
constexpr std::size_t kLockedAt = 192;
constexpr std::size_t kSize = 4096;

std::int64_t& counter_at(corio::ipc::shared_memory& shm, std::size_t offset) {
  return *reinterpret_cast<std::int64_t*>(shm.bytes().data() + offset);
}

/// One child process: its own runtime, one task doing both loops.
corio::task<int> child_work(corio::ipc::shared_memory* shm, int n) {
  auto mutex = corio::ipc::process_mutex::attach(*shm, kMutexAt);
  auto start = corio::ipc::process_event::attach(*shm, kStartAt);
  if (!mutex || !start) {
    co_return 2;
  }
  if (!co_await start->wait()) {
    co_return 3;
  }
  // The race: a plain read-modify-write (relaxed atomics, so the program has no undefined
  // behaviour, but nothing stops another process between the load and the store).
  std::atomic_ref<std::int64_t> unlocked(counter_at(*shm, kUnlockedAt));
  for (int i = 0; i < n; ++i) {
    const std::int64_t seen = unlocked.load(std::memory_order_relaxed);
    for (int k = 0; k < 8; ++k) {
      corio::port::cpu_relax();  // the time an interpreter takes between the read and the write
    }
    unlocked.store(seen + 1, std::memory_order_relaxed);
  }
  std::int64_t& locked = counter_at(*shm, kLockedAt);
  for (int i = 0; i < n; ++i) {
    auto guard = co_await mutex->lock();
    if (!guard) {
      co_return 4;
    }
    locked = locked + 1;  // the same read-modify-write, inside the lock
  }
  co_return 0;
}

// Forks the kProcesses children, each attaching to the block `name` on its own runtime;
// stops early on a signal (`stop`) or a failed fork.
corio::task<std::vector<corio::ipc::child>> fork_children(const std::string& name, int n, std::stop_token stop) {
  // The callable travels to the fork server as bytes: the name goes as a char array.
  std::array<char, 64> name_chars{};
  name.copy(name_chars.data(), name_chars.size() - 1);
  std::vector<corio::ipc::child> children;
  for (int c = 0; c < kProcesses && !stop.stop_requested(); ++c) {
    auto child = co_await corio::ipc::fork([name_chars, n] {
      auto mine = corio::ipc::shared_memory::open(name_chars.data());
      if (!mine) {
        return 2;
      }
      corio::runtime_config config;
      config.workers = 1;
      return corio::run(child_work(&*mine, n), config);
    });
    if (!child) {
      std::fprintf(stderr, "fork: %s\n", child.error().message().c_str());
      break;
    }
    children.push_back(std::move(*child));
  }
  co_return children;
}

// Says on stderr which of the (reaped) children failed and how: an exit code other than 0
// (2..4: a step of the child failed, see fork_children and child_work; 70: its runtime
// could not start) or a signal. True when none did and all kProcesses started: only then
// do the counters mean something.
bool all_children_ok(const std::vector<corio::ipc::child>& children) {
  bool ok = children.size() == kProcesses;
  if (!ok) {
    std::fprintf(stderr, "shared_counter: only %zu of %d children started\n", children.size(), kProcesses);
  }
  for (std::size_t i = 0; i < children.size(); ++i) {
    const auto status = children[i].status();
    if (!status || !status->success()) {
      ok = false;
      std::fprintf(stderr, "shared_counter: child %zu of %d (pid %d) failed: %s\n", i + 1, kProcesses,
                   static_cast<int>(children[i].id()), status ? status->to_string().c_str() : "its wait failed");
    }
  }
  return ok;
}

// Prints both counters against what they should be; true when the locked one is exact.
bool print_counters(corio::ipc::shared_memory& shm, int n) {
  const std::int64_t expected = static_cast<std::int64_t>(n) * kProcesses;
  const std::int64_t unlocked = counter_at(shm, kUnlockedAt);
  const std::int64_t locked = counter_at(shm, kLockedAt);
  std::printf("%d processes x %d increments = %lld expected\n", kProcesses, n, static_cast<long long>(expected));
  std::printf("  without a lock:                  %lld (%lld updates lost)\n", static_cast<long long>(unlocked),
              static_cast<long long>(expected - unlocked));
  std::printf("  with corio::ipc::process_mutex:  %lld (%s)\n", static_cast<long long>(locked),
              locked == expected ? "exact" : "WRONG");
  return locked == expected;
}

corio::task<int> parent(const corio::signal_stream& signals, std::string name, int n,
                        std::chrono::milliseconds hold) {
  auto shm = corio::ipc::shared_memory::create(name, kSize);
  if (!shm) {
    std::fprintf(stderr, "create %s: %s\n", name.c_str(), shm.error().message().c_str());
    co_return 1;
  }
  auto mutex = corio::ipc::process_mutex::construct(*shm, kMutexAt);
  auto start = corio::ipc::process_event::construct(*shm, kStartAt, corio::ipc::event_mode::manual_reset);
  if (!mutex || !start) {
    std::fprintf(stderr, "construct: %s\n", (!mutex ? mutex.error() : start.error()).message().c_str());
    (void)corio::ipc::shared_memory::remove(name);
    co_return 1;
  }
  std::printf("parent: shared block %s made\n", name.c_str());
  std::fflush(stdout);
  std::stop_source stop;  // a signal came, or the parent is done
  auto watcher = corio::spawn(example::stop_on_signal(signals, stop, "parent"));
  std::vector<corio::ipc::child> children = co_await fork_children(name, n, stop.get_token());
  if (hold.count() > 0) {
    std::printf("parent: %zu children (pids", children.size());
    for (const auto& c : children) {
      std::printf(" %d", static_cast<int>(c.id()));
    }
    std::printf(") wait for the start event; holding for %lld ms\n", static_cast<long long>(hold.count()));
    std::fflush(stdout);
    (void)co_await corio::sleep_for(hold, stop.get_token());  // a signal ends it early
  }
  if (!stop.stop_requested()) {
    start->set();  // all children start together: the race is at its worst
  }
  (void)co_await example::wait_children(children, stop.get_token());
  const bool signalled = stop.stop_requested();
  stop.request_stop();
  co_await std::move(watcher);
  (void)corio::ipc::shared_memory::remove(name);
  if (signalled) {
    std::printf("parent: stopped (%zu of %d children started, all ended); block %s removed\n", children.size(),
                kProcesses, name.c_str());
    co_return 1;
  }
  co_return all_children_ok(children) && print_counters(*shm, n) ? 0 : 1;
}

int example_main(int argc, char** argv) {
  int n = 100000;
  int hold_ms = 0;
  example::args args("shared_counter", "the shared-counter race across 4 processes, without and with a process_mutex");
  args.option("--hold-ms", hold_ms, 0, 86400000, "MS",
              "wait this long with the children started (the block's name printed) before the start event "
              "(default 0)");
  args.positional("n", n, 1, 100000000, "increments per process and counter, 1..100000000 (default 100000)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  // First, while the program is single-threaded: the helper that forks every child.
  if (auto ok = corio::ipc::fork_server::start(); !ok) {
    std::fprintf(stderr, "fork server: %s\n", ok.error().message().c_str());
    return 1;
  }
  auto signals = example::shutdown_signals("shared_counter");  // before the runtime's threads start
  return corio::run(parent(signals, "/corio-example-counter-" + std::to_string(::getpid()), n,
                           std::chrono::milliseconds(hold_ms)));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("shared_counter", example_main, argc, argv); }
