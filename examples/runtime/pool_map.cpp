// The tutorial's ThreadPool(5).map and ThreadPoolExecutor.submit/map, in corio:
//  - map over coroutines:          when_all over a range of tasks (concurrent, in order)
//  - submit blocking functions:    spawn_blocking on the runtime's elastic blocking pool
//  (executor.map over a blocking function is the submit loop below: when_all gives the
//  results in the order of the items)
//
//   pool_map [sleep-ms]
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

// A coroutine "worker function": waits without blocking a thread.
corio::task<int> square_later(int x, std::chrono::milliseconds nap) {
  (void)co_await corio::sleep_for(nap);  // a cancelled nap only ends early: the square is the same
  co_return x * x;
}

// A plain blocking function, as in the tutorial (time.sleep inside).
int blocking_cube(int x, std::chrono::milliseconds nap) {
  std::this_thread::sleep_for(nap);
  return x * x * x;
}

corio::task<int> main_task(std::chrono::milliseconds nap) {
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  };

  // pool.map(myfunction, range(5))
  std::vector<corio::task<int>> tasks;
  for (int i = 0; i < 5; ++i) {
    tasks.push_back(square_later(i, nap));
  }
  std::vector<int> squares = co_await corio::when_all(std::move(tasks));
  std::printf("map:    ");
  for (int v : squares) {
    std::printf("%d ", v);
  }
  std::printf("(%lld ms)\n", static_cast<long long>(elapsed()));

  // executor.submit(blocking_function, i) for i in range(5), then future.result()
  std::vector<corio::task<int>> futures;
  for (int i = 0; i < 5; ++i) {
    futures.push_back([](int v, std::chrono::milliseconds d) -> corio::task<int> {
      auto r = co_await corio::spawn_blocking([v, d] { return blocking_cube(v, d); });
      co_return r ? *r : -1;
    }(i, nap));
  }
  std::vector<int> cubes = co_await corio::when_all(std::move(futures));
  std::printf("submit: ");
  for (int v : cubes) {
    std::printf("%d ", v);
  }
  std::printf("(%lld ms total)\n", static_cast<long long>(elapsed()));
  co_return squares[4] == 16 && cubes[4] == 64 ? 0 : 1;
}

int example_main(int argc, char** argv) {
  int ms = 1000;
  example::args args("pool_map", "ThreadPool.map and executor.submit as corio tasks");
  args.positional("sleep-ms", ms, 0, 3600000, "how long each job sleeps, 0..3600000 ms (default 1000)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  std::chrono::milliseconds nap{ms};
  return corio::run(main_task(nap));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("pool_map", example_main, argc, argv); }
