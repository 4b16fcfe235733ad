// shared_memory: the tutorial's shared_memory.SharedMemory. The parent creates a named
// shared-memory block of n integers; four child processes (forked through corio's fork
// server) attach to it by name, each squares its quarter of the numbers in place; the
// parent awaits their exits without blocking a worker and sums the result.
//
// The block's name (/corio-example-shm-PID, in /dev/shm) outlives the processes until it
// is removed, so the parent removes it however it ends: also on Ctrl-C or SIGTERM, which
// end its waits (the children still running are killed and reaped first; exit status 1).
//
//   shared_memory [n]                 default 1000
//   shared_memory --hold-ms MS [n]    wait MS with the block made and filled before
//                                     starting the children (look at it in /dev/shm)
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "../common/shutdown.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>
#include <corio/ipc/shared_memory.hpp>

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

constexpr int kChildren = 4;

corio::task<int> parent(const corio::signal_stream& signals, std::string name, int n,
                        std::chrono::milliseconds hold) {
  auto shm = corio::ipc::shared_memory::create(name, static_cast<std::size_t>(n) * sizeof(std::int64_t));
  if (!shm) {
    std::fprintf(stderr, "create %s: %s\n", name.c_str(), shm.error().message().c_str());
    co_return 1;
  }
  auto numbers = shm->view<std::int64_t>(0, static_cast<std::size_t>(n));
  if (!numbers) {
    std::fprintf(stderr, "view: %s\n", numbers.error().message().c_str());
    (void)corio::ipc::shared_memory::remove(name);
    co_return 1;
  }
  for (int i = 0; i < n; ++i) {
    (*numbers)[static_cast<std::size_t>(i)] = i;
  }
  std::printf("parent: shared block %s holds 0..%d\n", name.c_str(), n - 1);
  std::fflush(stdout);
  std::stop_source stop;  // a signal came, or the parent is done
  auto watcher = corio::spawn(example::stop_on_signal(signals, stop, "parent"));
  if (hold.count() > 0) {
    std::printf("parent: holding for %lld ms before starting the children\n", static_cast<long long>(hold.count()));
    std::fflush(stdout);
    (void)co_await corio::sleep_for(hold, stop.get_token());  // a signal ends it early
  }
  // The callable travels to the fork server as bytes: the name goes as a char array.
  std::array<char, 64> name_chars{};
  name.copy(name_chars.data(), name_chars.size() - 1);
  std::vector<corio::ipc::child> children;
  for (int c = 0; c < kChildren && !stop.stop_requested(); ++c) {
    auto child = co_await corio::ipc::fork([name_chars, n, c] {
      auto mine = corio::ipc::shared_memory::open(name_chars.data());
      if (!mine) {
        return 2;
      }
      const int begin = n * c / kChildren, end = n * (c + 1) / kChildren;
      auto slice = mine->view<std::int64_t>(static_cast<std::size_t>(begin) * sizeof(std::int64_t),
                                            static_cast<std::size_t>(end - begin));
      if (!slice) {
        return 3;
      }
      for (auto& v : *slice) {
        v *= v;
      }
      std::printf("child %d (pid %d) squared numbers %d..%d\n", c, ::getpid(), begin, end - 1);
      return 0;
    });
    if (!child) {
      std::fprintf(stderr, "fork: %s\n", child.error().message().c_str());
      break;
    }
    children.push_back(std::move(*child));
  }
  const bool all_exited_0 = co_await example::wait_children(children, stop.get_token());
  const bool ok = children.size() == kChildren && all_exited_0;
  const bool signalled = stop.stop_requested();
  stop.request_stop();
  co_await std::move(watcher);
  (void)corio::ipc::shared_memory::remove(name);
  if (signalled) {
    std::printf("parent: stopped (%zu of %d children started, all ended); block %s removed\n", children.size(),
                kChildren, name.c_str());
    co_return 1;
  }
  std::int64_t sum = 0;
  for (std::int64_t v : *numbers) {
    sum += v;
  }
  const std::int64_t expected = static_cast<std::int64_t>(n - 1) * n * (2 * n - 1) / 6;
  std::printf("sum of squares 0..%d through shared memory: %lld (expected %lld)\n", n - 1,
              static_cast<long long>(sum), static_cast<long long>(expected));
  co_return ok && sum == expected ? 0 : 1;
}

int example_main(int argc, char** argv) {
  int n = 1000;
  int hold_ms = 0;
  example::args args("shared_memory", "four child processes square numbers in a named shared-memory block");
  args.option("--hold-ms", hold_ms, 0, 86400000, "MS",
              "wait this long with the block made (its name printed) before starting the children (default 0)");
  args.positional("n", n, 1, 1000000, "how many numbers, 1..1000000 (default 1000)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  // First, while the program is single-threaded: the helper that forks every child.
  if (auto ok = corio::ipc::fork_server::start(); !ok) {
    std::fprintf(stderr, "fork server: %s\n", ok.error().message().c_str());
    return 1;
  }
  auto signals = example::shutdown_signals("shared_memory");  // before the runtime's threads start
  return corio::run(parent(signals, "/corio-example-shm-" + std::to_string(::getpid()), n,
                           std::chrono::milliseconds(hold_ms)));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("shared_memory", example_main, argc, argv); }
