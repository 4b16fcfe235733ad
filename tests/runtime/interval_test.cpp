// Tests for runtime/interval.hpp: the first tick, the three missed-tick behaviours after a
// stall of five periods, cancellation, bad and huge periods. Every check holds by
// construction: the stall is a busy loop on the ticking task's own worker that ends only
// once the clock has passed five and a half periods, and each assertion compares the due
// instants the interval reports with instants measured around the ticks.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/runtime/interval.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <stop_token>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace std::chrono_literals;
using steady = corio::clock;
using corio::first_tick;
using corio::interval;
using corio::missed_tick_behavior;

namespace {

using corio_test::workers;

constexpr steady::duration kPeriod = 20ms;

/// Blocks the calling worker (no co_await) until `until` has passed; returns the instant.
steady::time_point block_until(steady::time_point until) {
  steady::time_point now = steady::now();
  while (now < until) {
    now = steady::now();
  }
  return now;
}

/// Counts its turns on the worker until `stop` is set: while the count does not change,
/// no other task ran in between.
corio::task<void> count_turns(std::atomic<long>* turns, std::atomic<bool>* stop) {
  while (!stop->load()) {
    turns->fetch_add(1);
    co_await corio::yield_now{};
  }
}

/// What a test of skip or delay sees around a stall of five and a half periods.
struct after_stall {
  steady::time_point start;      ///< the first tick (immediate)
  steady::time_point stalled;    ///< the end of the stall
  steady::time_point late_done;  ///< when the late tick had completed
  steady::time_point next;       ///< the tick after the late one
};

/// Takes `iv`'s first tick, stalls its worker for five and a half periods, then takes the
/// late tick, which must be the first missed one (tick 1: it fires once, whatever the
/// behaviour), and the tick after it, which must not come before it is due.
corio::task<after_stall> stall_then_two_ticks(interval& iv) {
  auto start = co_await iv.tick();
  REQUIRE(start);
  steady::time_point stalled = block_until(*start + 5 * kPeriod + kPeriod / 2);
  auto late = co_await iv.tick();
  steady::time_point late_done = steady::now();
  REQUIRE(late);
  CHECK(*late == *start + kPeriod);
  auto next = co_await iv.tick();
  REQUIRE(next);
  CHECK(steady::now() >= *next);
  co_return after_stall{*start, stalled, late_done, *next};
}

}  // namespace

TEST_CASE("interval: a period of zero, a negative one or NaN is invalid_argument", "[runtime][interval]") {
  CHECK(interval::every(0ms).error() == std::errc::invalid_argument);
  CHECK(interval::every(-1s).error() == std::errc::invalid_argument);
  CHECK(interval::starting_at(steady::now(), 0ns).error() == std::errc::invalid_argument);
  std::chrono::duration<double> nan(std::numeric_limits<double>::quiet_NaN());
  CHECK(interval::every(nan).error() == std::errc::invalid_argument);
  CHECK(interval::every(1ns).has_value());
}

TEST_CASE("interval: the first tick is immediate by default and one period later with after_period",
          "[runtime][interval]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<void> {
    steady::time_point before = steady::now();
    auto now_iv = interval::every(kPeriod);
    REQUIRE(now_iv);
    steady::time_point made = steady::now();
    auto first = co_await now_iv->tick();
    REQUIRE(first);
    CHECK(*first >= before);
    CHECK(*first <= made);
    CHECK(now_iv->next_tick() == *first + kPeriod);

    before = steady::now();
    auto later_iv = interval::every(kPeriod, first_tick::after_period);
    REQUIRE(later_iv);
    auto due = co_await later_iv->tick();
    steady::time_point done = steady::now();
    REQUIRE(due);
    CHECK(*due >= before + kPeriod);
    CHECK(done >= *due);
    auto second = co_await later_iv->tick();
    REQUIRE(second);
    CHECK(*second == *due + kPeriod);
    CHECK(steady::now() >= *second);
  };
  rt.block_on(body());
}

TEST_CASE("interval: burst fires the ticks missed during a stall back to back on the grid", "[runtime][interval]") {
  corio::runtime rt(workers(1));
  std::atomic<long> turns{0};
  std::atomic<bool> stop{false};
  auto body = [&]() -> corio::task<void> {
    auto iv = interval::every(kPeriod, first_tick::immediately, missed_tick_behavior::burst);
    REQUIRE(iv);
    auto start = co_await iv->tick();
    REQUIRE(start);
    auto other = corio::spawn(count_turns(&turns, &stop));
    co_await corio::yield_now{};  // the counter runs at least once
    steady::time_point stalled = block_until(*start + 5 * kPeriod + kPeriod / 2);
    // Ticks 1..5 were due during the stall: each comes at once, with no other task between.
    long turns_before = turns.load();
    std::vector<steady::time_point> missed;
    for (int k = 1; k <= 5; ++k) {
      auto due = co_await iv->tick();
      REQUIRE(due);
      missed.push_back(*due);
    }
    CHECK(turns.load() == turns_before);
    for (int k = 1; k <= 5; ++k) {
      CHECK(missed[k - 1] == *start + k * kPeriod);
      CHECK(missed[k - 1] < stalled);
    }
    // The grid stays: the next tick is tick 6, whenever it comes.
    auto sixth = co_await iv->tick();
    REQUIRE(sixth);
    CHECK(*sixth == *start + 6 * kPeriod);
    CHECK(steady::now() >= *sixth);
    stop = true;
    co_await std::move(other);
  };
  rt.block_on(body());
}

TEST_CASE("interval: skip fires one late tick, then the next point of the grid after it", "[runtime][interval]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<void> {
    auto iv = interval::every(kPeriod, first_tick::immediately, missed_tick_behavior::skip);
    REQUIRE(iv);
    after_stall t = co_await stall_then_two_ticks(*iv);
    // The missed ticks 2..5 are dropped: the next is on the grid, after the late tick
    // completed (so after the stall), and no whole period after it.
    CHECK((t.next - t.start) % kPeriod == steady::duration::zero());
    CHECK(t.next > t.stalled);
    CHECK(t.next - kPeriod <= t.late_done);
    auto after = co_await iv->tick();
    REQUIRE(after);
    CHECK((*after - t.start) % kPeriod == steady::duration::zero());
    CHECK(*after > t.next);
  };
  rt.block_on(body());
}

TEST_CASE("interval: delay restarts the period from the late tick", "[runtime][interval]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<void> {
    auto iv = interval::every(kPeriod, first_tick::immediately, missed_tick_behavior::delay);
    REQUIRE(iv);
    after_stall t = co_await stall_then_two_ticks(*iv);
    // One period after the late tick completed (the interval read the clock between the
    // end of the stall and our reading).
    CHECK(t.next >= t.stalled + kPeriod);
    CHECK(t.next <= t.late_done + kPeriod);
    auto after = co_await iv->tick();
    REQUIRE(after);
    CHECK(*after >= t.next + kPeriod);
  };
  rt.block_on(body());
}

TEST_CASE("interval: a stopped tick yields operation_canceled and is not consumed", "[runtime][interval][cancel]") {
  corio::runtime rt(workers(2));
  auto iv = interval::every(1h, first_tick::after_period);
  REQUIRE(iv);
  steady::time_point due = iv->next_tick();
  std::stop_source stop;
  std::atomic<bool> waiting{false};
  auto body = [&]() -> corio::task<std::error_code> {
    auto waiter = iv->tick(stop.get_token());
    waiting = true;
    auto r = co_await std::move(waiter);
    co_return r ? std::error_code{} : r.error();
  };
  auto h = rt.spawn(body());
  REQUIRE(h);
  while (!waiting) {
    std::this_thread::yield();
  }
  stop.request_stop();  // before or during the wait: either way the tick is cancelled
  auto join = [](corio::join_handle<std::error_code> j) -> corio::task<std::error_code> { co_return co_await j; };
  CHECK(rt.block_on(join(std::move(*h))) == std::errc::operation_canceled);
  CHECK(iv->next_tick() == due);
}

TEST_CASE("interval: a timeout around a tick cancels it through the inherited token", "[runtime][interval][cancel]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<void> {
    auto iv = interval::every(1h, first_tick::after_period);
    REQUIRE(iv);
    steady::time_point due = iv->next_tick();
    auto r = co_await corio::timeout(iv->tick(), 5ms);
    REQUIRE_FALSE(r);
    CHECK(r.error() == std::errc::timed_out);
    CHECK(iv->next_tick() == due);
  };
  rt.block_on(body());
}

TEST_CASE("interval: a huge period saturates to a tick that never comes", "[runtime][interval]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<void> {
    auto iv = interval::every(std::chrono::hours::max(), first_tick::after_period);
    REQUIRE(iv);
    CHECK(iv->next_tick() == steady::time_point::max());
    auto r = co_await corio::timeout(iv->tick(), 5ms);
    CHECK_FALSE(r);
    auto burst = interval::every(std::chrono::seconds::max());
    REQUIRE(burst);
    auto first = co_await burst->tick();
    REQUIRE(first);
    CHECK(burst->next_tick() == steady::time_point::max());
  };
  rt.block_on(body());
}
