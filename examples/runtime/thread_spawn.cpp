// The tutorial's threading.Thread example (five threads that each sleep a second and
// print their pid/tid), as five corio tasks: they sleep concurrently on two worker threads
// instead of occupying five OS threads, and the whole thing takes one sleep, not five.
//
//   thread_spawn [sleep-ms]
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

long thread_id() { return ::syscall(SYS_gettid); }

corio::task<int> my_function(int arg, std::chrono::milliseconds nap) {
  std::printf("[1] task %d in  (pid %d, worker tid %ld)\n", arg, ::getpid(), thread_id());
  (void)co_await corio::sleep_for(nap);  // a cancelled nap only ends early
  std::printf("[1] task %d out (pid %d, worker tid %ld)\n", arg, ::getpid(), thread_id());
  co_return arg * 10;
}

corio::task<int> main_task(std::chrono::milliseconds nap) {
  auto t0 = std::chrono::steady_clock::now();
  std::vector<corio::join_handle<int>> handles;
  for (int i = 0; i < 5; ++i) {
    handles.push_back(corio::spawn(my_function(i, nap)));  // threading.Thread(...).start()
  }
  int sum = 0;
  for (auto& h : handles) {
    sum += co_await h;  // t.join()
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::printf("all joined after %lld ms (five %lld ms sleeps ran concurrently), sum %d\n",
              static_cast<long long>(ms), static_cast<long long>(nap.count()), sum);
  co_return sum == 100 ? 0 : 1;
}

int example_main(int argc, char** argv) {
  int ms = 1000;
  example::args args("thread_spawn", "five tasks sleeping concurrently on two workers");
  args.positional("sleep-ms", ms, 0, 3600000, "how long each task sleeps, 0..3600000 ms (default 1000)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  std::chrono::milliseconds nap{ms};
  corio::runtime_config cfg;
  cfg.workers = 2;  // two worker threads, whatever the machine has
  return corio::run(main_task(nap), cfg);
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("thread_spawn", example_main, argc, argv); }
