// spawn when the spawned task's join state cannot be allocated: std::bad_alloc reaches the
// spawner and the task's frame is destroyed, with its parameters. This program replaces
// the global operator new (replaced_new.hpp; its own executable: tests/meson.build,
// separate_tests): while a thread has armed it, its n-th allocation of more than 1 KiB
// fails. The tasks here yield a 2 KiB value, so both their frames and their join states
// are larger than 1 KiB and come from operator new (the frame allocator serves blocks up
// to 1 KiB itself; under ASan and TSan it bypasses its slab and every block comes from
// operator new, the small ones not counted here). A task made before the arming leaves
// the join state as spawn's only large allocation; spawn(callable, args...) makes the
// frame that holds the arguments first, then the join state: the second one fails, as in
// a task_group's spawn (its wrapper frame, then the join state).
#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include "helpers.hpp"
#include "replaced_new.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>

namespace {

thread_local int t_fail_nth = 0;  // > 0: the t_fail_nth-th large allocation from now fails
std::atomic<int> g_failed{0};     // allocations failed (relaxed: a count read after the fact)

void* checked_malloc(std::size_t n) noexcept {
  if (t_fail_nth > 0 && n > 1024 && --t_fail_nth == 0) {
    g_failed.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  return std::malloc(n == 0 ? 1 : n);
}

}  // namespace

// Not inlined: g++ 12 at -O3 would see malloc() under operator new in this file's own
// code and warn (-Wmismatched-new-delete), though operator delete frees with free().
[[gnu::noinline]] void* corio_test_allocate(std::size_t n) noexcept { return checked_malloc(n); }  // replaced_new.hpp

namespace {

using big = std::array<char, 2048>;

// A parameter that records its destruction (a moved-from one records nothing).
struct witness {
  bool* destroyed;
  explicit witness(bool* d) noexcept : destroyed(d) {}
  witness(witness&& o) noexcept : destroyed(std::exchange(o.destroyed, nullptr)) {}
  witness& operator=(witness&&) = delete;
  ~witness() {
    if (destroyed != nullptr) {
      *destroyed = true;
    }
  }
};

corio::task<big> body(witness) { co_return big{}; }

// What a spawn that failed left behind.
struct outcome {
  bool threw = false;      // std::bad_alloc reached the spawner
  bool destroyed = false;  // the task's parameter was destroyed
};

// Calls `spawn` with this thread's `nth` large allocation failing from then on.
template <class F>
void spawn_failing(int nth, outcome& out, F spawn) {
  const int failed_before = g_failed.load(std::memory_order_relaxed);
  t_fail_nth = nth;
  try {
    spawn();
  } catch (const std::bad_alloc&) {
    out.threw = true;
  }
  t_fail_nth = 0;
  CHECK(g_failed.load(std::memory_order_relaxed) == failed_before + 1);
}

corio::task<void> spawn_inside(outcome* out, bool abortable) {
  auto t = body(witness(&out->destroyed));  // made before the arming
  spawn_failing(1, *out, [&t, abortable] {
    if (abortable) {
      corio::spawn(corio::abortable, std::move(t)).detach();
    } else {
      corio::spawn(std::move(t)).detach();
    }
  });
  co_return;
}

// A group of one slot: the spawn that fails frees its slot (the wrapper frame's
// task_group_exit does), so a later spawn gets it.
corio::task<void> spawn_into_group(outcome* out, bool* later_spawned) {
  corio::task_group<big> g({.max_running = 1});
  auto t = body(witness(&out->destroyed));
  spawn_failing(2, *out, [&g, &t] { (void)g.try_spawn(std::move(t)); });  // the wrapper's frame, then the state
  *later_spawned = g.try_spawn(body(witness(nullptr)));
  (void)co_await g.join_all();
}

corio::task<void> spawn_callable_inside(outcome* out) {
  spawn_failing(2, *out, [out] { corio::spawn(body, witness(&out->destroyed)).detach(); });
  co_return;
}

}  // namespace

// Before, spawn released the frame from its task and then allocated the join state: the
// frame was never destroyed, nor its parameters (nothing else held it).
TEST_CASE("spawn: a join state that cannot be allocated destroys the task", "[spawn_alloc]") {
  const bool abortable = GENERATE(false, true);
  INFO((abortable ? "corio::spawn(corio::abortable, task)" : "corio::spawn(task)"));
  outcome out;
  {
    corio::runtime rt(corio_test::workers(1));
    rt.block_on(spawn_inside(&out, abortable));
  }
  CHECK(out.threw);
  CHECK(out.destroyed);
}

TEST_CASE("spawn: a callable whose join state cannot be allocated is destroyed with its arguments",
          "[spawn_alloc]") {
  outcome out;
  {
    corio::runtime rt(corio_test::workers(1));
    rt.block_on(spawn_callable_inside(&out));
  }
  CHECK(out.threw);
  CHECK(out.destroyed);
}

// Before, the wrapper frame holding the group's exit leaked too: the slot was never freed.
TEST_CASE("task_group: a spawn whose join state cannot be allocated destroys the task and frees its slot",
          "[spawn_alloc]") {
  outcome out;
  bool later_spawned = false;
  {
    corio::runtime rt(corio_test::workers(1));
    rt.block_on(spawn_into_group(&out, &later_spawned));
  }
  CHECK(out.threw);
  CHECK(out.destroyed);
  CHECK(later_spawned);
}

TEST_CASE("runtime::spawn: a join state that cannot be allocated destroys the task", "[spawn_alloc]") {
  outcome out;
  {
    corio::runtime rt(corio_test::workers(1));
    auto t = body(witness(&out.destroyed));
    spawn_failing(1, out, [&rt, &t] {
      auto h = rt.spawn(std::move(t));
      if (h) {
        h->detach();
      }
    });
  }
  CHECK(out.threw);
  CHECK(out.destroyed);
}
