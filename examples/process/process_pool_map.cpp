// process_pool_map: the tutorial's multiprocessing.Pool(5).map(f, [10..14]) — each item
// runs in one of five worker processes; results come back in order. Exits 1 unless every
// job returned its item + 1 ([11, 12, 13, 14, 15]).
//
//   process_pool_map [sleep ms]     default 1000
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

namespace {
int g_sleep_ms = 1000;  // set before the fork server starts: the workers see it too

int myfunction4(int arg) {
  std::this_thread::sleep_for(std::chrono::milliseconds(g_sleep_ms));
  std::printf("[3-3] function4 process %d in! (pid:%d)\n", arg, ::getpid());
  std::fflush(stdout);
  return arg + 1;
}
}  // namespace

corio::task<int> pool_map() {
  auto pool = co_await corio::ipc::process_pool::start(5);
  if (!pool) {
    std::fprintf(stderr, "pool: %s\n", pool.error().message().c_str());
    co_return 1;
  }
  std::vector<int> array;
  for (int x = 10; x <= 14; ++x) {
    array.push_back(x);  // (a braced list here trips GCC 12's coroutine frame: "array used as initializer")
  }
  const std::size_t items = array.size();
  auto results = co_await (*pool)->map<&myfunction4>(std::move(array));
  // Every job must have run and returned its item + 1, in order: [11, 12, 13, 14, 15].
  bool ok = results.size() == items;
  std::printf("[3-3] pool out3 : [");
  for (std::size_t i = 0; i < results.size(); ++i) {
    std::printf("%s%d", i ? ", " : "", results[i] ? *results[i] : -1);
    ok = ok && results[i] && *results[i] == 10 + static_cast<int>(i) + 1;
  }
  std::printf("]\n");
  co_await (*pool)->shutdown();  // pool.close(); pool.join()
  if (!ok) {
    std::fprintf(stderr, "process_pool_map: expected [11, 12, 13, 14, 15]\n");
  }
  co_return ok ? 0 : 1;
}

int example_main(int argc, char** argv) {
  example::args args("process_pool_map", "multiprocessing.Pool(5).map over five items");
  args.positional("sleep-ms", g_sleep_ms, 0, 3600000, "how long each job sleeps, 0..3600000 ms (default 1000)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (auto ok = corio::ipc::fork_server::start(); !ok) {
    std::fprintf(stderr, "fork server: %s\n", ok.error().message().c_str());
    return 1;
  }
  return corio::run(pool_map());
}

int main(int argc, char** argv) { return example::main_guard("process_pool_map", example_main, argc, argv); }
