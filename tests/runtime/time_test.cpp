// Tests for runtime/time.hpp and runtime/timeout.hpp.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
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
  CHECK(ms >= 20.0);
  CHECK(ms < 1000.0);
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
  auto sleeper = [&](int i, steady::time_point deadline) -> corio::task<void> {
    (void)co_await corio::sleep_until(deadline);
    CHECK(steady::now() >= deadline);
    fired.push_back(i);
  };
  auto body = [&]() -> corio::task<void> {
    // Far enough ahead that every timer is armed before the first one is due (a timer
    // armed after an earlier deadline already fired cannot fire before it).
    auto base = steady::now() + 1500ms;
    std::vector<corio::task<void>> all;
    all.reserve(kSleeps);
    for (int i = 0; i < kSleeps; ++i) {
      all.push_back(sleeper(i, base + std::chrono::microseconds(delay_us[i])));
    }
    co_await corio::when_all(std::move(all));
  };
  rt.block_on(body());
  REQUIRE(fired.size() == kSleeps);
  bool ordered = true;
  for (std::size_t k = 1; k < fired.size(); ++k) {
    if (delay_us[fired[k]] < delay_us[fired[k - 1]]) {
      ordered = false;
    }
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
    auto t0 = steady::now();
    auto r = co_await corio::timeout(corio::sleep_for(10s), 20ms);
    CHECK(steady::now() - t0 < 5s);
    co_return r ? std::error_code{} : r.error();
  };
  CHECK(rt.block_on(body()) == std::errc::timed_out);
}

TEST_CASE("time: timeout passes the value through when in time", "[runtime][time][timeout]") {
  corio::runtime rt(workers(2));
  auto quick = []() -> corio::task<int> {
    co_await corio::sleep_for(1ms);
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
  co_await corio::spawn_blocking([] { std::this_thread::sleep_for(30ms); });
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
