// Tests for runtime/when_all.hpp and runtime/when_any.hpp.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "helpers.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {
using corio_test::workers;
corio::task<int> after(std::chrono::milliseconds d, int v) {
  (void)co_await corio::sleep_for(d);
  co_return v;
}
corio::task<void> nothing() { co_return; }
corio::task<std::string> text() { co_return "t"; }
}  // namespace

namespace {
corio::task<int> after_recording(std::chrono::milliseconds d, int v, std::vector<int>* finish_order) {
  (void)co_await corio::sleep_for(d);
  finish_order->push_back(v);  // one worker: no data race
  co_return v;
}
}  // namespace

TEST_CASE("when_all: waits for every task and keeps their order", "[runtime][when_all]") {
  corio::runtime rt(workers(1));
  std::vector<int> finish_order;
  auto body = [&]() -> corio::task<bool> {
    auto t0 = steady::now();
    auto [a, b, c, d] = co_await corio::when_all(after_recording(30ms, 1, &finish_order),
                                                 after_recording(10ms, 2, &finish_order), nothing(), text());
    CHECK(steady::now() - t0 >= 30ms);
    (void)c;
    co_return a == 1 && b == 2 && d == "t";
  };
  CHECK(rt.block_on(body()));
  // The tasks ran concurrently: the 10 ms one finished first although it was second.
  CHECK(finish_order == std::vector<int>{2, 1});
}

TEST_CASE("when_all: a range of tasks", "[runtime][when_all]") {
  corio::runtime rt(workers(2));
  auto body = []() -> corio::task<int> {
    std::vector<corio::task<int>> tasks;
    for (int i = 0; i < 100; ++i) {
      tasks.push_back(after(std::chrono::milliseconds(i % 5), i));
    }
    auto values = co_await corio::when_all(std::move(tasks));
    int sum = 0;
    for (std::size_t i = 0; i < values.size(); ++i) {
      CHECK(values[i] == static_cast<int>(i));
      sum += values[i];
    }
    co_return sum;
  };
  CHECK(rt.block_on(body()) == 4950);
}

TEST_CASE("when_all: an exception is rethrown after all tasks finished", "[runtime][when_all]") {
  corio::runtime rt(workers(2));
  std::atomic<bool> slow_done{false};
  auto slow = [&]() -> corio::task<int> {
    (void)co_await corio::sleep_for(20ms);
    slow_done = true;
    co_return 1;
  };
  auto bad = []() -> corio::task<int> {
    throw std::logic_error("bad");
    co_return 0;
  };
  auto body = [&]() -> corio::task<std::string> {
    try {
      co_await corio::when_all(slow(), bad());
    } catch (const std::logic_error& e) {
      co_return e.what();
    }
    co_return "none";
  };
  CHECK(rt.block_on(body()) == "bad");
  CHECK(slow_done.load());
}

TEST_CASE("when_any: the first finisher wins and the losers are cancelled", "[runtime][when_any]") {
  corio::runtime rt(workers(2));
  std::atomic<int> loser_result{0};
  auto loser = [&]() -> corio::task<int> {
    auto r = co_await corio::sleep_for(24h);  // outlasts the test: only a cancel ends it
    loser_result = r ? 1 : 2;  // 2: cancelled
    co_return -1;
  };
  auto body = [&]() -> corio::task<int> {
    auto winner = co_await corio::when_any(loser(), after(5ms, 7));
    CHECK(winner.index() == 1);
    co_return std::get<1>(winner);
  };
  CHECK(rt.block_on(body()) == 7);
  CHECK(loser_result.load() == 2);
}

TEST_CASE("when_any: range form returns the winner's index and value", "[runtime][when_any]") {
  corio::runtime rt(workers(2));
  auto body = []() -> corio::task<std::pair<std::size_t, int>> {
    std::vector<corio::task<int>> tasks;
    // The others outlast the test: index 1 wins however slowly the timers are armed.
    tasks.push_back(after(24h, 0));
    tasks.push_back(after(1ms, 1));
    tasks.push_back(after(24h, 2));
    co_return co_await corio::when_any(std::move(tasks));
  };
  auto [index, value] = rt.block_on(body());
  CHECK(index == 1);
  CHECK(value == 1);
}

TEST_CASE("when_any: cancellation of the parent reaches the children", "[runtime][when_any]") {
  corio::runtime rt(workers(2));
  auto body = []() -> corio::task<std::error_code> {
    // The outer timeout cancels the inner when_any, whose children are sleeps.
    auto inner = []() -> corio::task<int> {
      // Both outlast the test: only the cancel can end them.
      auto r = co_await corio::when_any(after(24h, 1), after(48h, 2));
      co_return static_cast<int>(r.index());
    };
    auto r = co_await corio::timeout(inner(), 10ms);
    co_return r ? std::error_code{} : r.error();
  };
  CHECK(rt.block_on(body()) == std::errc::timed_out);
}

TEST_CASE("when_any: an empty range is rejected", "[runtime][when_any]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<int> {
    auto r = co_await corio::when_any(std::vector<corio::task<int>>{});
    co_return r.second;
  };
  CHECK_THROWS_AS(rt.block_on(body()), std::invalid_argument);
}
