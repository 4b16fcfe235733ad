// Tests for runtime/internal/local_queue.hpp: FIFO order, capacity, overflow halves, and
// concurrent stealing that loses and duplicates nothing.
#include <catch2/catch.hpp>

#include <corio/runtime/internal/local_queue.hpp>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

using corio::detail::local_queue;

namespace {
void* item(std::uintptr_t i) { return reinterpret_cast<void*>(i << 4); }
std::uintptr_t value(void* p) { return reinterpret_cast<std::uintptr_t>(p) >> 4; }
}  // namespace

TEST_CASE("local_queue: pops in FIFO order and reports full at capacity", "[runtime][local_queue]") {
  local_queue q(8);
  for (std::uintptr_t i = 1; i <= 8; ++i) {
    REQUIRE(q.try_push(item(i)));
  }
  CHECK_FALSE(q.try_push(item(9)));
  CHECK(q.size() == 8);
  for (std::uintptr_t i = 1; i <= 8; ++i) {
    CHECK(value(q.pop()) == i);
  }
  CHECK(q.pop() == nullptr);
}

TEST_CASE("local_queue: overflow takes the oldest half", "[runtime][local_queue]") {
  local_queue q(8);
  for (std::uintptr_t i = 1; i <= 8; ++i) {
    REQUIRE(q.try_push(item(i)));
  }
  std::vector<void*> out;
  REQUIRE(q.take_half_for_overflow(out));
  REQUIRE(out.size() == 4);
  for (std::uintptr_t i = 0; i < 4; ++i) {
    CHECK(value(out[i]) == i + 1);
  }
  CHECK(q.size() == 4);
  CHECK(value(q.pop()) == 5);
}

TEST_CASE("local_queue: a thief takes half and returns one to run", "[runtime][local_queue]") {
  local_queue victim(16);
  local_queue thief(16);
  for (std::uintptr_t i = 1; i <= 10; ++i) {
    REQUIRE(victim.try_push(item(i)));
  }
  void* run_now = victim.steal_into(thief);
  REQUIRE(run_now != nullptr);
  CHECK(value(run_now) == 5);       // the last of the stolen half [1..5]
  CHECK(thief.size() == 4);         // 1..4 queued in the thief
  CHECK(victim.size() == 5);        // 6..10 remain
  CHECK(value(victim.pop()) == 6);
  CHECK(value(thief.pop()) == 1);
}

TEST_CASE("local_queue: concurrent pops and steals see every item exactly once", "[runtime][local_queue]") {
  constexpr std::uintptr_t kItems = 200'000;
  local_queue owner(64);
  std::vector<std::atomic<int>> seen(kItems + 1);
  std::atomic<bool> done{false};
  std::atomic<std::uintptr_t> taken{0};

  auto thief_fn = [&] {
    local_queue mine(64);
    while (!done.load(std::memory_order_acquire) || owner.size() != 0) {
      if (void* p = owner.steal_into(mine)) {
        seen[value(p)].fetch_add(1, std::memory_order_relaxed);
        taken.fetch_add(1, std::memory_order_relaxed);
        while (void* q = mine.pop()) {
          seen[value(q)].fetch_add(1, std::memory_order_relaxed);
          taken.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
  };
  std::thread t1(thief_fn);
  std::thread t2(thief_fn);
  for (std::uintptr_t i = 1; i <= kItems; ++i) {
    while (!owner.try_push(item(i))) {
      if (void* p = owner.pop()) {
        seen[value(p)].fetch_add(1, std::memory_order_relaxed);
        taken.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if ((i % 3) == 0) {
      if (void* p = owner.pop()) {
        seen[value(p)].fetch_add(1, std::memory_order_relaxed);
        taken.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  while (void* p = owner.pop()) {
    seen[value(p)].fetch_add(1, std::memory_order_relaxed);
    taken.fetch_add(1, std::memory_order_relaxed);
  }
  done.store(true, std::memory_order_release);
  t1.join();
  t2.join();
  CHECK(taken.load() == kItems);
  std::uintptr_t wrong = 0;
  for (std::uintptr_t i = 1; i <= kItems; ++i) {
    wrong += seen[i].load() != 1 ? 1 : 0;
  }
  CHECK(wrong == 0);
}

TEST_CASE("local_queue: overflow after steals never hands out consumed slots", "[runtime][local_queue]") {
  // The owner sees the queue full, thieves then take tasks, then the owner overflows:
  // it must not take half of a queue that is no longer full.
  local_queue q(8);
  local_queue thief(8);
  for (std::uintptr_t i = 1; i <= 8; ++i) {
    REQUIRE(q.try_push(item(i)));
  }
  REQUIRE_FALSE(q.try_push(item(9)));
  REQUIRE(q.steal_into(thief) != nullptr);  // takes 1..4
  while (thief.pop() != nullptr) {
  }
  std::vector<void*> out;
  CHECK_FALSE(q.take_half_for_overflow(out));
  CHECK(out.empty());
  CHECK(q.size() == 4);
  for (std::uintptr_t i = 5; i <= 8; ++i) {
    CHECK(value(q.pop()) == i);
  }
  CHECK(q.pop() == nullptr);
}

TEST_CASE("local_queue: concurrent overflow and steals lose and duplicate nothing", "[runtime][local_queue]") {
  constexpr std::uintptr_t kItems = 300'000;
  local_queue owner(16);
  std::vector<std::atomic<int>> seen(kItems + 1);
  std::vector<void*> overflowed;
  std::atomic<bool> done{false};
  auto thief_fn = [&] {
    local_queue mine(16);
    while (!done.load(std::memory_order_acquire) || owner.size() != 0) {
      if (void* p = owner.steal_into(mine)) {
        seen[value(p)].fetch_add(1, std::memory_order_relaxed);
        while (void* q = mine.pop()) {
          seen[value(q)].fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
  };
  std::thread t1(thief_fn);
  std::thread t2(thief_fn);
  for (std::uintptr_t i = 1; i <= kItems; ++i) {
    if (!owner.try_push(item(i))) {
      std::vector<void*> half;
      if (owner.take_half_for_overflow(half)) {
        overflowed.insert(overflowed.end(), half.begin(), half.end());
      }
      if (!owner.try_push(item(i))) {
        overflowed.push_back(item(i));
      }
    }
  }
  while (void* p = owner.pop()) {
    seen[value(p)].fetch_add(1, std::memory_order_relaxed);
  }
  done.store(true, std::memory_order_release);
  t1.join();
  t2.join();
  for (void* p : overflowed) {
    seen[value(p)].fetch_add(1, std::memory_order_relaxed);
  }
  std::uintptr_t wrong = 0;
  for (std::uintptr_t i = 1; i <= kItems; ++i) {
    wrong += seen[i].load() != 1 ? 1 : 0;
  }
  CHECK(wrong == 0);
}
