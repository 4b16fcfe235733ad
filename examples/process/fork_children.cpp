// fork_children: the tutorial's five multiprocessing.Process children, each printing its
// pid after a sleep, with the parent awaiting their exit statuses.
//
//   fork_children [sleep ms]     default 1000
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

corio::task<int> start_five(int sleep_ms) {
  std::vector<corio::ipc::child> children;
  for (int i = 0; i < 5; ++i) {
    // The callable travels as bytes to the fork server, which forks the child.
    auto c = co_await corio::ipc::fork([i, sleep_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
      std::printf("[1] function process %d in! (pid:%d, parent:%d)\n", i, ::getpid(), ::getppid());
      return i;  // the exit code
    });
    if (!c) {
      std::fprintf(stderr, "fork: %s\n", c.error().message().c_str());
      co_return 1;
    }
    children.push_back(std::move(*c));
  }
  std::printf("[1] function out\n");
  std::fflush(stdout);
  int bad = 0;
  for (int i = 0; i < 5; ++i) {
    auto st = co_await children[static_cast<std::size_t>(i)].wait();
    bad += !(st && st->code() == i);
  }
  co_return bad;
}

int example_main(int argc, char** argv) {
  int ms = 1000;
  example::args args("fork_children", "five child processes print their pids; the parent awaits them");
  args.positional("sleep-ms", ms, 0, 3600000, "how long each child sleeps, 0..3600000 ms (default 1000)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  // First, while the program is single-threaded: the helper that forks every child.
  if (auto ok = corio::ipc::fork_server::start(); !ok) {
    std::fprintf(stderr, "fork server: %s\n", ok.error().message().c_str());
    return 1;
  }
  return corio::run(start_five(ms));
}

int main(int argc, char** argv) { return example::main_guard("fork_children", example_main, argc, argv); }
