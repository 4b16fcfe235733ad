// Tests for runtime/time.hpp and runtime/timeout.hpp.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <random>
#include <stop_token>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {
using corio_test::workers;
}  // namespace

TEST_CASE("time: sleep_for waits at least the duration", "[runtime][time]") {
  corio::runtime rt(workers(2));
  auto body = []() -> corio::task<double> {
    auto t0 = steady::now();
    auto r = co_await corio::sleep_for(20ms);
    REQUIRE(r);
    co_return std::chrono::duration<double, std::milli>(steady::now() - t0).count();
  };
  double ms = rt.block_on(body());
  CHECK(ms >= 20.0);  // no upper bound: a slow or loaded machine may resume it late
}

TEST_CASE("time: sleep_until a past deadline returns promptly", "[runtime][time]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<bool> {
    auto r = co_await corio::sleep_until(steady::now() - 1s);
    co_return r.has_value();
  };
  CHECK(rt.block_on(body()));
}

TEST_CASE("time: 100,000 concurrent sleeps on one worker fire in deadline order", "[runtime][time]") {
  corio::runtime rt(workers(1));
  constexpr int kSleeps = 100'000;
  std::vector<int> fired;
  fired.reserve(kSleeps);
  std::vector<int> delay_us(kSleeps);
  std::mt19937 rng(42);
  for (auto& d : delay_us) {
    d = static_cast<int>(rng() % 50'000);
  }
  // Order holds by construction only among the timers armed before the earliest deadline
  // (no timer can fire before it, and a timer armed later may be due already and fire at
  // once), so the check is limited to those, however slow the machine. The sleepers run
  // one at a time on the one worker: sleeper k+1 starts after sleeper k armed its timer.
  int armed = 0;
  std::vector<int> arm_seq(kSleeps, -1);
  std::vector<steady::time_point> started(kSleeps);
  auto sleeper = [&](int i, steady::time_point deadline) -> corio::task<void> {
    started[armed] = steady::now();
    arm_seq[i] = armed++;
    (void)co_await corio::sleep_until(deadline);
    CHECK(steady::now() >= deadline);
    fired.push_back(i);
  };
  steady::time_point earliest;
  auto body = [&]() -> corio::task<void> {
    // Far enough ahead that on a quiet machine every timer is armed before the first one
    // is due, so the check usually covers them all.
    auto base = steady::now() + 1500ms;
    earliest = base + std::chrono::microseconds(*std::min_element(delay_us.begin(), delay_us.end()));
    std::vector<corio::task<void>> all;
    all.reserve(kSleeps);
    for (int i = 0; i < kSleeps; ++i) {
      all.push_back(sleeper(i, base + std::chrono::microseconds(delay_us[i])));
    }
    co_await corio::when_all(std::move(all));
  };
  rt.block_on(body());
  REQUIRE(fired.size() == kSleeps);
  // Sleeper k (in arm order) surely armed before `earliest` if sleeper k+1 started before it.
  int covered = 0;
  while (covered + 1 < kSleeps && started[covered + 1] < earliest) {
    ++covered;
  }
  INFO(covered << " of " << kSleeps << " timers were surely armed before the earliest deadline");
  int last = -1;
  bool ordered = true;
  for (int i : fired) {
    if (arm_seq[i] >= covered) {
      continue;
    }
    if (last >= 0 && delay_us[i] < delay_us[last]) {
      ordered = false;
    }
    last = i;
  }
  CHECK(ordered);
}

TEST_CASE("time: a stop token cancels a sleep from another thread", "[runtime][time][cancel]") {
  corio::runtime rt(workers(2));
  std::stop_source stop;
  auto body = [&]() -> corio::task<std::error_code> {
    auto r = co_await corio::sleep_for(1h, stop.get_token());
    co_return r ? std::error_code{} : r.error();
  };
  auto h = rt.spawn(body());
  REQUIRE(h);
  std::this_thread::sleep_for(10ms);
  stop.request_stop();
  auto join = [](corio::join_handle<std::error_code> j) -> corio::task<std::error_code> { co_return co_await j; };
  CHECK(rt.block_on(join(std::move(*h))) == std::errc::operation_canceled);
}

TEST_CASE("time: timeout returns timed_out when the awaitable is too slow", "[runtime][time][timeout]") {
  corio::runtime rt(workers(2));
  auto body = []() -> corio::task<std::error_code> {
    // The sleep would outlast the test's time limit: only the timeout can end it.
    auto r = co_await corio::timeout(corio::sleep_for(24h), 20ms);
    co_return r ? std::error_code{} : r.error();
  };
  auto ec = rt.block_on(body());
  CHECK(ec == corio::errc::timed_out);  // corio's own code, not the OS's ETIMEDOUT
  CHECK(ec == std::errc::timed_out);    // which it still compares equal to
  CHECK(ec.message() == "operation timed out");
}

TEST_CASE("errc::timed_out: says 'operation timed out' and compares equal to std::errc::timed_out only",
          "[runtime][time][timeout]") {
  std::error_code ec = corio::errc::timed_out;
  CHECK(ec.message() == "operation timed out");
  CHECK(std::string(ec.category().name()) == "corio");
  CHECK(ec == std::errc::timed_out);
  CHECK(std::errc::timed_out == ec);
  CHECK(ec.default_error_condition() == std::errc::timed_out);
  CHECK(ec != std::errc::operation_canceled);
  CHECK(ec != std::make_error_code(std::errc::timed_out));  // a different code: the kernel's ETIMEDOUT
  // The kernel's ETIMEDOUT (a socket's) is not corio's deadline.
  CHECK(std::error_code(ETIMEDOUT, std::system_category()) != corio::errc::timed_out);
}

TEST_CASE("time: timeout passes the value through when in time", "[runtime][time][timeout]") {
  corio::runtime rt(workers(2));
  auto quick = []() -> corio::task<int> {
    (void)co_await corio::sleep_for(1ms);
    co_return 17;
  };
  auto body = [&]() -> corio::task<int> {
    auto r = co_await corio::timeout(quick(), 5s);
    co_return r ? *r : -1;
  };
  CHECK(rt.block_on(body()) == 17);
}

TEST_CASE("time: timeout cancels an in-flight io_uring read", "[runtime][time][timeout]") {
  corio::runtime rt(workers(2));
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  auto body = [&]() -> corio::task<std::error_code> {
    std::array<std::byte, 8> buf{};
    auto r = co_await corio::timeout(corio::io::read(fds[0], buf), 20ms);
    co_return r ? std::error_code{} : r.error();
  };
  CHECK(rt.block_on(body()) == std::errc::timed_out);
  ::close(fds[0]);
  ::close(fds[1]);
}

namespace {
corio::task<corio::result<int>> ignores_cancellation() {
  (void)co_await corio::sleep_for(30ms);  // cancelled at once by the timeout: ignored
  (void)co_await corio::spawn_blocking([] { std::this_thread::sleep_for(30ms); });
  co_return 7;  // a value produced after the deadline
}
}  // namespace

TEST_CASE("time: timeout returns a value that arrived after the deadline instead of dropping it",
          "[runtime][time][timeout]") {
  corio::runtime rt(workers(2));
  auto body = []() -> corio::task<int> {
    auto r = co_await corio::timeout(ignores_cancellation(), 5ms);
    co_return r ? *r : -1;
  };
  CHECK(rt.block_on(body()) == 7);
}

TEST_CASE("time: saturating_cast and deadline_after clamp durations the clock cannot hold", "[runtime][time]") {
  using corio::clock;
  using corio::deadline_after;
  using corio::saturating_cast;
  using std::chrono::nanoseconds;
  STATIC_REQUIRE(saturating_cast(std::chrono::seconds(5)) == 5s);
  STATIC_REQUIRE(saturating_cast(std::chrono::microseconds(-7)) == -7us);
  STATIC_REQUIRE(saturating_cast(nanoseconds::max()) == clock::duration::max());
  STATIC_REQUIRE(saturating_cast(std::chrono::seconds::max()) == clock::duration::max());
  STATIC_REQUIRE(saturating_cast(std::chrono::seconds::min()) == clock::duration::min());
  STATIC_REQUIRE(saturating_cast(std::chrono::hours(1'000'000'000)) == clock::duration::max());
  STATIC_REQUIRE(saturating_cast(std::chrono::duration<std::uint64_t>(~std::uint64_t{0})) == clock::duration::max());
  STATIC_REQUIRE(saturating_cast(std::chrono::duration<double>(1e300)) == clock::duration::max());
  STATIC_REQUIRE(saturating_cast(std::chrono::duration<double>(-1e300)) == clock::duration::min());
  STATIC_REQUIRE(saturating_cast(std::chrono::duration<double, std::milli>(1.5)) == 1500us);
  CHECK(saturating_cast(std::chrono::duration<double>(std::numeric_limits<double>::infinity())) ==
        clock::duration::max());
  CHECK(saturating_cast(std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN())) ==
        clock::duration::zero());

  const auto now = clock::now();
  CHECK(deadline_after(nanoseconds::max(), now) == clock::time_point::max());
  CHECK(deadline_after(std::chrono::hours::max(), now) == clock::time_point::max());
  CHECK(deadline_after(clock::duration::max() - (now.time_since_epoch() - 1ns), now) == clock::time_point::max());
  CHECK(deadline_after(std::chrono::hours::min(), now) < now);
  CHECK(deadline_after(std::chrono::hours::min(), clock::time_point::min() + 1h) == clock::time_point::min());
  CHECK(deadline_after(std::chrono::hours::min(), clock::time_point::max()) < now);
  CHECK(deadline_after(250ms, now) == now + 250ms);
  STATIC_REQUIRE(deadline_after(1s, clock::time_point::max()) == clock::time_point::max());
}

namespace {
// Races a sleep of `huge` against a 20 ms sleep: yields the winner (1 when the huge one
// rightly never fires; 0 if it fired at once, as an overflowed deadline in the past does).
template <class D>
corio::task<std::size_t> race_huge_sleep(D huge) {
  auto sleep_huge = [](D d) -> corio::task<corio::result<void>> { co_return co_await corio::sleep_for(d); };
  auto sleep_short = []() -> corio::task<corio::result<void>> { co_return co_await corio::sleep_for(20ms); };
  auto winner = co_await corio::when_any(sleep_huge(huge), sleep_short());
  co_return winner.index();
}
}  // namespace

TEST_CASE("time: a sleep for nanoseconds::max(), seconds::max() or a billion hours never fires",
          "[runtime][time]") {
  corio::runtime rt(workers(2));
  CHECK(rt.block_on(race_huge_sleep(std::chrono::nanoseconds::max())) == 1);
  CHECK(rt.block_on(race_huge_sleep(std::chrono::seconds::max())) == 1);
  CHECK(rt.block_on(race_huge_sleep(std::chrono::hours(1'000'000'000))) == 1);
  CHECK(rt.block_on(race_huge_sleep(std::chrono::hours::max())) == 1);
  CHECK(rt.block_on(race_huge_sleep(std::chrono::duration<double>(std::numeric_limits<double>::infinity()))) == 1);
  auto until_max = []() -> corio::task<std::size_t> {
    auto sleep_huge = []() -> corio::task<corio::result<void>> {
      co_return co_await corio::sleep_until(corio::clock::time_point::max());
    };
    auto sleep_short = []() -> corio::task<corio::result<void>> { co_return co_await corio::sleep_for(20ms); };
    auto winner = co_await corio::when_any(sleep_huge(), sleep_short());
    co_return winner.index();
  };
  CHECK(rt.block_on(until_max()) == 1);
}

TEST_CASE("time: a sleep for a negative duration, even hours::min(), returns at once", "[runtime][time]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<bool> {
    auto a = co_await corio::sleep_for(-5s);
    auto b = co_await corio::sleep_for(std::chrono::hours::min());
    co_return a.has_value() && b.has_value();
  };
  CHECK(rt.block_on(body()));
}

namespace {
template <class D>
corio::task<std::error_code> quick_sleep_under_timeout(D limit) {
  auto r = co_await corio::timeout(corio::sleep_for(20ms), limit);
  co_return r ? std::error_code{} : r.error();
}
}  // namespace

TEST_CASE("time: timeout with nanoseconds::max(), seconds::max() or a billion hours never times out",
          "[runtime][time][timeout]") {
  corio::runtime rt(workers(2));
  CHECK(rt.block_on(quick_sleep_under_timeout(std::chrono::nanoseconds::max())) == std::error_code{});
  CHECK(rt.block_on(quick_sleep_under_timeout(std::chrono::seconds::max())) == std::error_code{});
  CHECK(rt.block_on(quick_sleep_under_timeout(std::chrono::hours(1'000'000'000))) == std::error_code{});
  CHECK(rt.block_on(quick_sleep_under_timeout(std::chrono::hours::max())) == std::error_code{});
  CHECK(rt.block_on(quick_sleep_under_timeout(std::chrono::duration<double>(1e300))) == std::error_code{});
}

TEST_CASE("time: timeout_at gives up at its deadline and passes a value that came first", "[runtime][time][timeout]") {
  corio::runtime rt(workers(2));
  auto body = []() -> corio::task<bool> {
    auto late = co_await corio::timeout_at(corio::sleep_for(1h), corio::clock::now() + 20ms);
    auto never = co_await corio::timeout_at(corio::sleep_for(5ms), corio::clock::time_point::max());
    co_return !late && late.error() == std::errc::timed_out && never.has_value();
  };
  CHECK(rt.block_on(body()));
}
