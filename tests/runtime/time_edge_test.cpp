// Edge cases of runtime/time.hpp, runtime/timeout.hpp and the timer metrics: counts seen
// right after arming, coarse time points, and the value/timer race of timeout().
#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stop_token>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace std::chrono_literals;

namespace {

std::uint64_t timers_pending(const corio::runtime& rt) {
  std::uint64_t n = 0;
  for (const auto& w : rt.metrics().workers) {
    n += w.timers_pending;
  }
  return n;
}

}  // namespace

TEST_CASE("time edge: metrics count a timer as pending as soon as it is armed, before any fires",
          "[runtime][time][metrics]") {
  corio::runtime rt(corio_test::workers(1));
  std::stop_source stop;
  auto body = [&]() -> corio::task<std::uint64_t> {
    auto sleeper = [](std::stop_token t) -> corio::task<void> { (void)co_await corio::sleep_for(1h, t); };
    std::vector<corio::join_handle<void>> hs;
    for (int i = 0; i < 10; ++i) {
      hs.push_back(corio::spawn(sleeper(stop.get_token())));
    }
    // One worker: the sleepers arm when we yield to them; no timer fires or is disarmed
    // meanwhile (the count used to change only then, and read 0 here).
    std::uint64_t pending = 0;
    for (int i = 0; i < 1000 && pending < 10; ++i) {
      co_await corio::yield_now();
      pending = timers_pending(rt);
    }
    stop.request_stop();
    for (auto& h : hs) {
      co_await h;
    }
    co_return pending;
  };
  CHECK(rt.block_on(body()) == 10);
  CHECK(timers_pending(rt) == 0);
}

TEST_CASE("time edge: sleep_until a coarse time point past the clock's range sleeps on", "[runtime][time]") {
  corio::runtime rt(corio_test::workers(1));
  auto body = []() -> corio::task<bool> {
    // 3,000,000 hours after boot: fits in hours, not in clock::time_point (ns); the
    // conversion used to overflow into the past and fire at once.
    auto far = std::chrono::time_point<corio::clock, std::chrono::hours>(std::chrono::hours(3'000'000));
    auto r = co_await corio::timeout(corio::sleep_until(far), 30ms);
    auto never = std::chrono::time_point<corio::clock, std::chrono::hours>::max();
    auto r2 = co_await corio::timeout(corio::sleep_until(never), 1ms);
    co_return !r && r.error() == std::errc::timed_out && !r2 && r2.error() == std::errc::timed_out;
  };
  CHECK(rt.block_on(body()));
}

TEST_CASE("time edge: timeout_at and interval::starting_at saturate coarse time points",
          "[runtime][time][timeout]") {
  corio::runtime rt(corio_test::workers(1));
  using seconds_point = std::chrono::time_point<corio::clock, std::chrono::seconds>;
  auto body = []() -> corio::task<bool> {
    auto r = co_await corio::timeout_at(corio::sleep_for(10ms), seconds_point::max());
    auto iv = corio::interval::starting_at(seconds_point::max(), 1ms);
    if (!r || !iv || iv->next_tick() != corio::clock::time_point::max()) {
      co_return false;
    }
    auto t = co_await corio::timeout(iv->tick(), 1ms);
    co_return !t && t.error() == std::errc::timed_out;
  };
  CHECK(rt.block_on(body()));
  CHECK(corio::saturating_time_point(seconds_point::min()).get() == corio::clock::time_point::min());
  CHECK(corio::saturating_time_point(seconds_point(std::chrono::seconds(5))).get().time_since_epoch() == 5s);
}

namespace {

// A value whose second move (out of the task's promise, the value as the timeout's
// awaited side gets it) blocks in its destructor, once moved from, until the timer stops
// the awaited side or our deadline + 300 ms has passed (sleeping 1 ms at a time: the
// worker is blocked, and the timer is taken over by the other one). timeout() used to
// move it once more and decide the race only after that destructor: the timer fired,
// won, and the value was dropped. Now the value has won before; the timer stops nothing,
// and the destructor waits out the 300 ms. The deadline is 2 s away, so that a loaded
// machine (sanitizers, two tests at once) still produces the value before it.
std::stop_token g_race_token;
corio::clock::time_point g_race_deadline;

struct slow_shell {
  int gen = 0;
  bool moved_from = false;
  slow_shell() = default;
  slow_shell(slow_shell&& o) noexcept : gen(o.gen + 1) { o.moved_from = true; }
  slow_shell& operator=(slow_shell&& o) noexcept {
    gen = o.gen + 1;
    o.moved_from = true;
    return *this;
  }
  ~slow_shell() {
    if (moved_from && gen == 2) {
      while (!g_race_token.stop_requested() && corio::clock::now() < g_race_deadline + 300ms) {
        std::this_thread::sleep_for(1ms);
      }
    }
  }
};

corio::task<slow_shell> shell_after_a_yield() {
  g_race_token = co_await corio::get_stop_token();
  co_await corio::yield_now();  // the timer arms meanwhile
  co_return slow_shell{};
}

}  // namespace

TEST_CASE("time edge: timeout keeps a plain value that came before the timer fired", "[runtime][time][timeout]") {
  corio::runtime_config c = corio_test::workers(2);
  c.timer_takeover_delay = std::chrono::microseconds(0);
  corio::runtime rt(c);
  auto body = []() -> corio::task<bool> {
    g_race_deadline = corio::clock::now() + 2s;
    auto r = co_await corio::timeout_at(shell_after_a_yield(), g_race_deadline);
    co_return r.has_value();
  };
  CHECK(rt.block_on(body()));
}
