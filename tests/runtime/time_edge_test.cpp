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
