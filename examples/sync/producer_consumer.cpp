// producer_consumer: the tutorial's Condition example. Producers put numbers into a
// bounded queue, consumers take them out; a corio::condition_variable makes each side
// wait (suspended, not spinning) while the queue is full or empty.
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <cstdio>
#include <deque>
#include <vector>

#include <corio/corio.hpp>
#include <corio/sync/condition_variable.hpp>
#include <corio/sync/mutex.hpp>

namespace {

struct bounded_queue {
  corio::mutex m;
  corio::condition_variable not_empty;
  corio::condition_variable not_full;
  std::deque<int> items;
  int producers_left = 0;
  static constexpr std::size_t kCapacity = 8;
};

corio::task<void> producer(bounded_queue& q, int first, int count) {
  for (int i = first; i < first + count; ++i) {
    auto g = co_await q.m.lock_uncancellable();
    if (!co_await q.not_full.wait(g, [&] { return q.items.size() < bounded_queue::kCapacity; })) {
      co_return;  // cancelled: the predicate may not hold, so push nothing
    }
    q.items.push_back(i);
    g.unlock();
    q.not_empty.notify_one();
  }
  auto g = co_await q.m.lock_uncancellable();
  if (--q.producers_left == 0) {
    q.not_empty.notify_all();  // wake consumers so they can see the end
  }
}

corio::task<long> consumer(bounded_queue& q) {
  long sum = 0;
  for (;;) {
    auto g = co_await q.m.lock_uncancellable();
    if (!co_await q.not_empty.wait(g, [&] { return !q.items.empty() || q.producers_left == 0; })) {
      co_return sum;  // cancelled
    }
    if (q.items.empty()) {
      co_return sum;  // all produced and all taken
    }
    sum += q.items.front();
    q.items.pop_front();
    g.unlock();
    q.not_full.notify_one();
  }
}

corio::task<int> main_task() {
  constexpr int kProducers = 3, kConsumers = 3, kEach = 10000;
  bounded_queue q;
  q.producers_left = kProducers;
  std::vector<corio::join_handle<long>> consumers;
  std::vector<corio::join_handle<void>> producers;
  for (int c = 0; c < kConsumers; ++c) {
    consumers.push_back(corio::spawn(consumer(q)));
  }
  for (int p = 0; p < kProducers; ++p) {
    producers.push_back(corio::spawn(producer(q, p * kEach, kEach)));
  }
  long total = 0;
  for (auto& h : consumers) {
    total += co_await h;
  }
  for (auto& h : producers) {
    co_await h;
  }
  const long n = long{kProducers} * kEach;
  std::printf("consumed sum %ld (expected %ld)\n", total, n * (n - 1) / 2);
  co_return total == n * (n - 1) / 2 ? 0 : 1;
}

int example_main(int argc, char** argv) {
  example::args args("producer_consumer", "producers and consumers around a bounded queue with condition variables");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  corio::runtime_config cfg;
  cfg.workers = 2;
  return corio::run(main_task(), cfg);
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("producer_consumer", example_main, argc, argv); }
