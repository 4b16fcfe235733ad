// The large scenarios (suite stress): exact counts at scale, random
// cancellation under contention, randomized interleavings.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <stop_token>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/timeout.hpp>
#include <corio/sync/channel.hpp>
#include <corio/sync/condition_variable.hpp>
#include <corio/sync/mutex.hpp>
#include <corio/sync/semaphore.hpp>

#include "sync_helpers.hpp"

using namespace std::chrono_literals;

namespace {

corio::task<void> increment(corio::mutex& m, std::int64_t& counter) {
  auto g = co_await m.lock();
  if (g) {
    ++counter;
  }
}

std::int64_t race(corio::runtime& rt, std::int64_t tasks) {
  corio::mutex m;
  std::int64_t counter = 0;
  rt.block_on([](corio::mutex& m, std::int64_t& counter, std::int64_t n) -> corio::task<void> {
    std::vector<corio::join_handle<void>> hs;
    hs.reserve(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      hs.push_back(corio::spawn(increment(m, counter)));
    }
    for (auto& h : hs) {
      co_await h;
    }
  }(m, counter, tasks));
  return counter;
}

}  // namespace

TEST_CASE("mutex: the tutorial's race, 32,000 then 1,000,000 tasks, ends with the exact count", "[sync][mutex][stress]") {
  corio::runtime rt(corio_test::sync_config());
  REQUIRE(race(rt, 32000) == 32000);
  REQUIRE(race(rt, 1000000) == 1000000);
}

TEST_CASE("mutex: random cancellation of waiters under contention loses no hand-off", "[sync][mutex][stress]") {
  corio::runtime rt(corio_test::sync_config());
  for (int round = 0; round < 20; ++round) {
    corio::mutex m;
    std::int64_t counter = 0;
    std::atomic<std::int64_t> granted{0};
    std::atomic<std::int64_t> cancelled{0};
    std::atomic<bool> hung{false};
    rt.block_on([](corio::mutex& m, std::int64_t& counter, std::atomic<std::int64_t>& granted,
                   std::atomic<std::int64_t>& cancelled, std::atomic<bool>& hung, int round) -> corio::task<void> {
      constexpr int kTasks = 2000;
      std::vector<std::unique_ptr<std::stop_source>> sources;
      std::vector<corio::join_handle<void>> hs;
      for (int i = 0; i < kTasks; ++i) {
        sources.push_back(std::make_unique<std::stop_source>());
        hs.push_back(corio::spawn([](corio::mutex& m, std::int64_t& counter, std::atomic<std::int64_t>& granted,
                                     std::atomic<std::int64_t>& cancelled, std::stop_token t,
                                     int i) -> corio::task<void> {
          // Every third waiter also races a short timeout (the inherited-token path).
          // (No co_await inside ?: — g++ 12 miscompiles temporaries there.)
          corio::result<corio::mutex_guard> g;
          if (i % 3 == 0) {
            g = co_await corio::timeout(m.lock(t), 50us);
          } else {
            g = co_await m.lock(t);
          }
          if (!g) {
            cancelled.fetch_add(1);
            co_return;
          }
          std::int64_t v = counter;
          if (i % 5 == 0) {
            co_await corio::yield_now{};
          }
          counter = v + 1;
          granted.fetch_add(1);
        }(m, counter, granted, cancelled, sources.back()->get_token(), i)));
      }
      corio_test::xorshift rng(static_cast<std::uint64_t>(round) + 1);
      for (int i = 0; i < kTasks / 2; ++i) {
        sources[rng.below(kTasks)]->request_stop();
        if (i % 16 == 0) {
          co_await corio::yield_now{};
        }
      }
      // Watchdog: a lost hand-off leaves a waiter suspended forever (or the mutex held by
      // nobody). Give the whole phase 60 s; on expiry record the failure and stop every
      // waiter so the test ends (and fails) instead of hanging until meson's timeout.
      std::size_t joined = 0;
      auto all = co_await corio::timeout(corio_test::join_all(hs, joined), 60s);
      if (!all) {
        hung.store(true);
        for (auto& s : sources) {
          s->request_stop();
        }
        (void)co_await corio::timeout(corio_test::join_all(hs, joined), 10s);
        co_return;  // (tasks still stuck are destroyed with the runtime)
      }
      // A lost hand-off would leave the mutex held forever: this would time out.
      auto last = co_await corio::timeout(m.lock(), 5s);
      if (last) {
        ++counter;
        granted.fetch_add(1);
      } else {
        hung.store(true);
      }
    }(m, counter, granted, cancelled, hung, round));
    REQUIRE_FALSE(hung.load());
    REQUIRE(counter == granted.load());
    REQUIRE(granted.load() + cancelled.load() == 2001);
    REQUIRE_FALSE(m.is_locked());
  }
}

TEST_CASE("semaphore: random cancellation never over-admits or leaks permits", "[sync][semaphore][stress]") {
  corio::runtime rt(corio_test::sync_config());
  corio::semaphore sem(3);
  std::atomic<std::int64_t> high{0};
  rt.block_on([](corio::semaphore& sem, std::atomic<std::int64_t>& high) -> corio::task<void> {
    std::atomic<std::int64_t> inside{0};
    std::vector<corio::join_handle<void>> hs;
    for (int i = 0; i < 10000; ++i) {
      hs.push_back(corio::spawn([](corio::semaphore& sem, std::atomic<std::int64_t>& inside,
                                   std::atomic<std::int64_t>& high, int i) -> corio::task<void> {
        std::size_t n = 1 + static_cast<std::size_t>(i % 2);
        corio::result<corio::semaphore_permit> r;
        if (i % 4 == 0) {
          r = co_await corio::timeout(sem.acquire(n), 20us);
        } else {
          r = co_await sem.acquire(n);
        }
        if (!r) {
          co_return;
        }
        corio_test::raise_max(high, inside.fetch_add(static_cast<std::int64_t>(n)) + static_cast<std::int64_t>(n));
        co_await corio::yield_now{};
        inside.fetch_sub(static_cast<std::int64_t>(n));
        r->release();
      }(sem, inside, high, i)));
    }
    for (auto& h : hs) {
      co_await h;
    }
  }(sem, high));
  REQUIRE(high.load() <= 3);
  REQUIRE(sem.available() == 3);
}

namespace {

constexpr int kProducers = 10;
constexpr int kConsumers = 10;
constexpr std::int64_t kItems = 1000000;

struct cv_queue {
  corio::mutex m;
  corio::condition_variable not_empty;
  corio::condition_variable not_full;
  std::deque<std::int64_t> q;
  int producers_left = kProducers;
  static constexpr std::size_t kCap = 256;
};

}  // namespace

TEST_CASE("condition_variable: 10 producers and 10 consumers pass 1,000,000 items, each received once", "[sync][condition_variable][stress]") {
  corio::runtime rt(corio_test::sync_config());
  cv_queue cq;
  std::vector<std::uint8_t> seen(kItems, 0);
  rt.block_on([](cv_queue& cq, std::vector<std::uint8_t>& seen) -> corio::task<void> {
    std::vector<corio::join_handle<void>> hs;
    for (int p = 0; p < kProducers; ++p) {
      hs.push_back(corio::spawn([](cv_queue& cq, int p) -> corio::task<void> {
        const std::int64_t per = kItems / kProducers;
        for (std::int64_t i = p * per; i < (p + 1) * per; ++i) {
          auto g = co_await cq.m.lock_uncancellable();
          (void)co_await cq.not_full.wait(g, [&] { return cq.q.size() < cv_queue::kCap; });
          cq.q.push_back(i);
          g.unlock();
          cq.not_empty.notify_one();
        }
        auto g = co_await cq.m.lock_uncancellable();
        if (--cq.producers_left == 0) {
          cq.not_empty.notify_all();
        }
      }(cq, p)));
    }
    for (int c = 0; c < kConsumers; ++c) {
      hs.push_back(corio::spawn([](cv_queue& cq, std::vector<std::uint8_t>& seen) -> corio::task<void> {
        for (;;) {
          auto g = co_await cq.m.lock_uncancellable();
          (void)co_await cq.not_empty.wait(g, [&] { return !cq.q.empty() || cq.producers_left == 0; });
          if (cq.q.empty()) {
            co_return;
          }
          std::int64_t v = cq.q.front();
          cq.q.pop_front();
          ++seen[static_cast<std::size_t>(v)];  // under the mutex
          g.unlock();
          cq.not_full.notify_one();
        }
      }(cq, seen)));
    }
    for (auto& h : hs) {
      co_await h;
    }
  }(cq, seen));
  std::int64_t once = 0;
  for (auto s : seen) {
    once += (s == 1);
  }
  REQUIRE(once == kItems);
}

TEST_CASE("channel: 10 producers and 10 consumers pass 1,000,000 items, each received once", "[sync][channel][stress]") {
  corio::runtime rt(corio_test::sync_config());
  corio::channel<std::int64_t> ch(1024);
  std::vector<std::atomic<std::uint8_t>> seen(kItems);
  rt.block_on([](corio::channel<std::int64_t>& ch, std::vector<std::atomic<std::uint8_t>>& seen) -> corio::task<void> {
    std::vector<corio::join_handle<void>> producers;
    std::vector<corio::join_handle<void>> consumers;
    for (int c = 0; c < kConsumers; ++c) {
      consumers.push_back(corio::spawn([](corio::channel<std::int64_t>& ch,
                                          std::vector<std::atomic<std::uint8_t>>& seen) -> corio::task<void> {
        while (auto v = co_await ch.recv()) {
          seen[static_cast<std::size_t>(*v)].fetch_add(1, std::memory_order_relaxed);
        }
      }(ch, seen)));
    }
    for (int p = 0; p < kProducers; ++p) {
      producers.push_back(corio::spawn([](corio::channel<std::int64_t>& ch, int p) -> corio::task<void> {
        const std::int64_t per = kItems / kProducers;
        for (std::int64_t i = p * per; i < (p + 1) * per; ++i) {
          (void)co_await ch.send(i);
        }
      }(ch, p)));
    }
    for (auto& h : producers) {
      co_await h;
    }
    ch.close();
    for (auto& h : consumers) {
      co_await h;
    }
  }(ch, seen));
  std::int64_t once = 0;
  for (auto& s : seen) {
    once += (s.load() == 1);
  }
  REQUIRE(once == kItems);
}

TEST_CASE("sync: randomized interleavings with random yields keep every invariant", "[sync][stress]") {
  corio::runtime rt(corio_test::sync_config());
  for (int round = 0; round < 200; ++round) {
    corio::mutex m;
    corio::semaphore sem(2);
    corio::channel<int> ch(3);
    std::int64_t counter = 0;
    std::atomic<std::int64_t> in_sem{0};
    std::atomic<std::int64_t> sem_high{0};
    std::atomic<std::int64_t> received{0};
    std::atomic<std::int64_t> mutex_ops{0};
    std::atomic<std::int64_t> sends{0};
    rt.block_on([](corio::mutex& m, corio::semaphore& sem, corio::channel<int>& ch, std::int64_t& counter,
                   std::atomic<std::int64_t>& in_sem, std::atomic<std::int64_t>& sem_high,
                   std::atomic<std::int64_t>& received, std::atomic<std::int64_t>& mutex_ops,
                   std::atomic<std::int64_t>& sends, int round) -> corio::task<void> {
      constexpr int kTasks = 16;
      constexpr int kOps = 40;
      auto consumer = corio::spawn([](corio::channel<int>& ch, std::atomic<std::int64_t>& received) -> corio::task<void> {
        while (auto v = co_await ch.recv()) {
          received.fetch_add(*v);
        }
      }(ch, received));
      std::vector<corio::join_handle<void>> hs;
      for (int t = 0; t < kTasks; ++t) {
        hs.push_back(corio::spawn([](corio::mutex& m, corio::semaphore& sem, corio::channel<int>& ch,
                                     std::int64_t& counter, std::atomic<std::int64_t>& in_sem,
                                     std::atomic<std::int64_t>& sem_high, std::atomic<std::int64_t>& mutex_ops,
                                     std::atomic<std::int64_t>& sends, std::uint64_t seed) -> corio::task<void> {
          corio_test::xorshift rng(seed);
          for (int i = 0; i < kOps; ++i) {
            switch (rng.below(3)) {
              case 0: {
                auto g = co_await m.lock_uncancellable();
                std::int64_t v = counter;
                if (rng.below(2) == 0) {
                  co_await corio::yield_now{};
                }
                counter = v + 1;
                mutex_ops.fetch_add(1);
                break;
              }
              case 1: {
                auto permit = co_await sem.acquire();
                corio_test::raise_max(sem_high, in_sem.fetch_add(1) + 1);
                if (rng.below(2) == 0) {
                  co_await corio::yield_now{};
                }
                in_sem.fetch_sub(1);
                break;
              }
              default:
                if (co_await ch.send(1)) {
                  sends.fetch_add(1);
                }
                break;
            }
            if (rng.below(3) == 0) {
              co_await corio::yield_now{};
            }
          }
        }(m, sem, ch, counter, in_sem, sem_high, mutex_ops, sends, static_cast<std::uint64_t>(round * 100 + t))));
      }
      for (auto& h : hs) {
        co_await h;
      }
      ch.close();
      co_await consumer;
    }(m, sem, ch, counter, in_sem, sem_high, received, mutex_ops, sends, round));
    REQUIRE(counter == mutex_ops.load());
    REQUIRE(received.load() == sends.load());
    REQUIRE(sem_high.load() <= 2);
    REQUIRE(sem.available() == 2);
    REQUIRE_FALSE(m.is_locked());
  }
}

TEST_CASE("channel: random cancellation of senders and receivers delivers every item exactly once", "[sync][channel][stress]") {
  // Senders and receivers race timeouts (inherited token) and explicit tokens that a
  // chaos task stops at random; a cancelled send is retried with the same item, a
  // cancelled recv is retried. Every item must be received exactly once, with no hang
  // (a watchdog turns a hang into a failure).
  constexpr int kSenders = 4;
  constexpr int kReceivers = 4;
  constexpr int kPerSender = 5000;
  constexpr int kTotal = kSenders * kPerSender;
  constexpr int kSources = 256;
  corio::runtime rt(corio_test::sync_config());
  for (std::size_t capacity : {std::size_t{0}, std::size_t{4}}) {
    corio::channel<int> ch(capacity);
    std::vector<std::atomic<std::uint8_t>> seen(kTotal);
    std::vector<std::unique_ptr<std::stop_source>> sources;
    for (int i = 0; i < kSources; ++i) {
      sources.push_back(std::make_unique<std::stop_source>());
    }
    std::atomic<bool> hung{false};
    std::atomic<std::int64_t> cancels{0};
    rt.block_on([](corio::channel<int>& ch, std::vector<std::atomic<std::uint8_t>>& seen,
                   std::vector<std::unique_ptr<std::stop_source>>& sources, std::atomic<bool>& hung,
                   std::atomic<std::int64_t>& cancels) -> corio::task<void> {
      std::vector<corio::join_handle<void>> senders;
      std::vector<corio::join_handle<void>> receivers;
      for (int r = 0; r < kReceivers; ++r) {
        receivers.push_back(corio::spawn([](corio::channel<int>& ch, std::vector<std::atomic<std::uint8_t>>& seen,
                                            std::vector<std::unique_ptr<std::stop_source>>& sources,
                                            std::atomic<std::int64_t>& cancels, int r) -> corio::task<void> {
          corio_test::xorshift rng(static_cast<std::uint64_t>(100 + r));
          for (;;) {
            corio::result<int> v;
            switch (rng.below(3)) {
              case 0: v = co_await corio::timeout(ch.recv(), std::chrono::microseconds(rng.below(40))); break;
              case 1: v = co_await ch.recv(sources[rng.below(kSources)]->get_token()); break;
              default: v = co_await ch.recv(); break;
            }
            if (v) {
              seen[static_cast<std::size_t>(*v)].fetch_add(1, std::memory_order_relaxed);
            } else if (v.error() == corio::errc::closed) {
              co_return;
            } else {
              cancels.fetch_add(1, std::memory_order_relaxed);
            }
          }
        }(ch, seen, sources, cancels, r)));
      }
      for (int s = 0; s < kSenders; ++s) {
        senders.push_back(corio::spawn([](corio::channel<int>& ch, std::vector<std::unique_ptr<std::stop_source>>& sources,
                                          std::atomic<std::int64_t>& cancels, int s) -> corio::task<void> {
          corio_test::xorshift rng(static_cast<std::uint64_t>(200 + s));
          for (int i = s * kPerSender; i < (s + 1) * kPerSender;) {
            corio::result<void> r;
            switch (rng.below(3)) {
              case 0: r = co_await corio::timeout(ch.send(i), std::chrono::microseconds(rng.below(40))); break;
              case 1: r = co_await ch.send(i, sources[rng.below(kSources)]->get_token()); break;
              default: r = co_await ch.send(i); break;
            }
            if (r) {
              ++i;
            } else {
              cancels.fetch_add(1, std::memory_order_relaxed);
            }
          }
        }(ch, sources, cancels, s)));
      }
      auto chaos = corio::spawn([](std::vector<std::unique_ptr<std::stop_source>>& sources) -> corio::task<void> {
        corio_test::xorshift rng(5);
        for (int i = 0; i < kSources; ++i) {
          (void)co_await corio::sleep_for(std::chrono::microseconds(20 + rng.below(100)));
          sources[rng.below(kSources)]->request_stop();
        }
      }(sources));
      std::size_t sent_joined = 0;
      auto sent = co_await corio::timeout(corio_test::join_all(senders, sent_joined), 120s);
      ch.close();  // receivers drain what is buffered, then see closed
      std::size_t recv_joined = 0;
      auto received = co_await corio::timeout(corio_test::join_all(receivers, recv_joined), 60s);
      co_await chaos;
      if (!sent || !received) {
        hung.store(true);
      }
    }(ch, seen, sources, hung, cancels));
    REQUIRE_FALSE(hung.load());
    std::int64_t once = 0;
    for (auto& x : seen) {
      once += (x.load() == 1);
    }
    REQUIRE(once == kTotal);
    REQUIRE(cancels.load() > 0);
  }
}

namespace {

struct cv_cancel_state {
  corio::mutex m;
  corio::condition_variable cv;
  std::deque<int> q;
  bool done = false;  // guarded by m
};

}  // namespace

TEST_CASE("condition_variable: notify racing random cancellation loses no wake-up and no item", "[sync][condition_variable][stress]") {
  // Consumers wait plainly, with timeouts, or with explicit tokens a chaos task stops;
  // producers notify_one per item. A notify granted to a waiter that is being cancelled
  // must still wake it (it then re-checks the predicate), never vanish: the plain waiters
  // would otherwise sleep forever (watchdog). Every item is consumed exactly once.
  constexpr int kProducers = 4;
  constexpr int kConsumers = 6;
  constexpr int kPerProducer = 5000;
  constexpr int kTotal = kProducers * kPerProducer;
  constexpr int kSources = 128;
  corio::runtime rt(corio_test::sync_config());
  cv_cancel_state st;
  std::vector<std::atomic<std::uint8_t>> seen(kTotal);
  std::vector<std::unique_ptr<std::stop_source>> sources;
  for (int i = 0; i < kSources; ++i) {
    sources.push_back(std::make_unique<std::stop_source>());
  }
  std::atomic<bool> hung{false};
  rt.block_on([](cv_cancel_state& st, std::vector<std::atomic<std::uint8_t>>& seen,
                 std::vector<std::unique_ptr<std::stop_source>>& sources, std::atomic<bool>& hung) -> corio::task<void> {
    std::vector<corio::join_handle<void>> producers;
    std::vector<corio::join_handle<void>> consumers;
    for (int c = 0; c < kConsumers; ++c) {
      consumers.push_back(corio::spawn([](cv_cancel_state& st, std::vector<std::atomic<std::uint8_t>>& seen,
                                          std::vector<std::unique_ptr<std::stop_source>>& sources,
                                          int c) -> corio::task<void> {
        corio_test::xorshift rng(static_cast<std::uint64_t>(300 + c));
        auto ready = [&] { return !st.q.empty() || st.done; };
        for (;;) {
          auto g = co_await st.m.lock_uncancellable();
          if (c % 3 == 0) {
            (void)co_await st.cv.wait(g, ready);  // never cancelled
          } else if (c % 3 == 1) {
            (void)co_await st.cv.wait_for(g, std::chrono::microseconds(rng.below(50)), ready);
          } else {
            (void)co_await st.cv.wait(g, ready, sources[rng.below(kSources)]->get_token());
          }
          if (!st.q.empty()) {
            seen[static_cast<std::size_t>(st.q.front())].fetch_add(1, std::memory_order_relaxed);
            st.q.pop_front();
          } else if (st.done) {
            co_return;
          }
        }
      }(st, seen, sources, c)));
    }
    for (int p = 0; p < kProducers; ++p) {
      producers.push_back(corio::spawn([](cv_cancel_state& st, int p) -> corio::task<void> {
        for (int i = p * kPerProducer; i < (p + 1) * kPerProducer; ++i) {
          {
            auto g = co_await st.m.lock_uncancellable();
            st.q.push_back(i);
          }
          st.cv.notify_one();
          if (i % 7 == 0) {
            co_await corio::yield_now{};
          }
        }
      }(st, p)));
    }
    auto chaos = corio::spawn([](std::vector<std::unique_ptr<std::stop_source>>& sources) -> corio::task<void> {
      corio_test::xorshift rng(9);
      for (int i = 0; i < kSources; ++i) {
        (void)co_await corio::sleep_for(std::chrono::microseconds(20 + rng.below(100)));
        sources[rng.below(kSources)]->request_stop();
      }
    }(sources));
    std::size_t pj = 0;
    auto produced = co_await corio::timeout(corio_test::join_all(producers, pj), 120s);
    {
      auto g = co_await st.m.lock_uncancellable();
      st.done = true;
    }
    st.cv.notify_all();
    std::size_t cj = 0;
    auto consumed = co_await corio::timeout(corio_test::join_all(consumers, cj), 60s);
    co_await chaos;
    if (!produced || !consumed) {
      hung.store(true);
    }
  }(st, seen, sources, hung));
  REQUIRE_FALSE(hung.load());
  std::int64_t once = 0;
  for (auto& x : seen) {
    once += (x.load() == 1);
  }
  REQUIRE(once == kTotal);
}
