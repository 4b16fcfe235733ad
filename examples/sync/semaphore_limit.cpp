// semaphore_limit: the tutorial's Semaphore(3). Ten tasks want a resource that at most
// three may use at once; each holds a permit for 20 ms. The program prints who enters
// and leaves, and checks that no more than three were ever inside together.
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <vector>

#include <corio/corio.hpp>
#include <corio/sync/semaphore.hpp>

using namespace std::chrono_literals;

namespace {

std::atomic<int> inside{0};
std::atomic<int> most{0};

corio::task<void> worker(corio::semaphore& sem, int id) {
  auto permit = co_await sem.acquire();  // waits while three are inside
  if (!permit) {
    co_return;  // cancelled (a stop token or an abort): no permit, do not enter
  }
  int now = inside.fetch_add(1) + 1;
  int m = most.load();
  while (now > m && !most.compare_exchange_weak(m, now)) {
  }
  std::printf("task %d enters (%d inside)\n", id, now);
  (void)co_await corio::sleep_for(20ms);  // the work; the worker thread runs others
  inside.fetch_sub(1);
  std::printf("task %d leaves\n", id);
}  // the permit is released here

corio::task<int> main_task() {
  corio::semaphore sem(3);
  std::vector<corio::join_handle<void>> hs;
  for (int i = 0; i < 10; ++i) {
    hs.push_back(corio::spawn(worker(sem, i)));
  }
  for (auto& h : hs) {
    co_await h;
  }
  std::printf("at most %d inside at once\n", most.load());
  co_return most.load() <= 3 ? 0 : 1;
}

int example_main(int argc, char** argv) {
  example::args args("semaphore_limit", "ten tasks, at most three inside at once (Semaphore(3))");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  corio::runtime_config cfg;
  cfg.workers = 2;
  return corio::run(main_task(), cfg);
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("semaphore_limit", example_main, argc, argv); }
