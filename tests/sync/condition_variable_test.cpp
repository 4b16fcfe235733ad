#include <corio/sync/condition_variable.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <stop_token>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>
#include <corio/sync/mutex.hpp>

#include "sync_helpers.hpp"

using namespace std::chrono_literals;

namespace {

struct box {
  corio::mutex m;
  corio::condition_variable cv;
  int value = 0;
  bool ready = false;
};

}  // namespace

TEST_CASE("condition_variable: wait with a predicate returns once a notifier made it true", "[sync][condition_variable]") {
  corio::runtime rt(corio_test::sync_config());
  box b;
  int seen = -1;
  bool relocked = false;
  rt.block_on([](box& b, int& seen, bool& relocked) -> corio::task<void> {
    auto waiter = corio::spawn([](box& b, int& seen, bool& relocked) -> corio::task<void> {
      auto g = co_await b.m.scoped_lock();
      auto r = co_await b.cv.wait(g, [&] { return b.ready; });
      relocked = r.has_value() && g.owns_lock() && b.m.is_locked();
      seen = b.value;
    }(b, seen, relocked));
    co_await corio::sleep_for(2ms);
    {
      auto g = co_await b.m.scoped_lock();
      b.value = 42;
      b.ready = true;
    }
    b.cv.notify_one();
    co_await waiter;
  }(b, seen, relocked));
  REQUIRE(seen == 42);
  REQUIRE(relocked);
  REQUIRE_FALSE(b.m.is_locked());
}

TEST_CASE("condition_variable: notify_all wakes every waiter, notify_one exactly one", "[sync][condition_variable]") {
  corio::runtime rt(corio_test::sync_config());
  box b;
  std::atomic<int> woken{0};
  int after_one = -1;
  rt.block_on([](box& b, std::atomic<int>& woken, int& after_one) -> corio::task<void> {
    std::vector<corio::join_handle<void>> hs;
    for (int i = 0; i < 5; ++i) {
      hs.push_back(corio::spawn([](box& b, std::atomic<int>& woken) -> corio::task<void> {
        auto g = co_await b.m.scoped_lock();
        auto r = co_await b.cv.wait(g);
        if (r) {
          woken.fetch_add(1);
        }
      }(b, woken)));
    }
    co_await corio::sleep_for(10ms);  // all five are queued
    b.cv.notify_one();
    co_await corio::sleep_for(10ms);
    after_one = woken.load();
    b.cv.notify_all();
    for (auto& h : hs) {
      co_await h;
    }
  }(b, woken, after_one));
  REQUIRE(after_one == 1);
  REQUIRE(woken.load() == 5);
}

TEST_CASE("condition_variable: wait_for times out with timed_out and holds the mutex again", "[sync][condition_variable]") {
  corio::runtime rt(corio_test::sync_config());
  box b;
  std::error_code ec;
  bool owns = false;
  bool pred_result = true;
  rt.block_on([](box& b, std::error_code& ec, bool& owns, bool& pred_result) -> corio::task<void> {
    auto g = co_await b.m.scoped_lock();
    auto r = co_await b.cv.wait_for(g, 5ms);
    if (!r) {
      ec = r.error();
    }
    owns = g.owns_lock() && b.m.is_locked();
    auto p = co_await b.cv.wait_for(g, 5ms, [&] { return b.ready; });
    pred_result = p.has_value() && *p;
  }(b, ec, owns, pred_result));
  REQUIRE(ec == std::errc::timed_out);
  REQUIRE(owns);
  REQUIRE_FALSE(pred_result);
  REQUIRE_FALSE(b.m.is_locked());
}

TEST_CASE("condition_variable: a stopped wait returns operation_canceled with the mutex held", "[sync][condition_variable]") {
  corio::runtime rt(corio_test::sync_config());
  box b;
  std::error_code ec;
  bool owns = false;
  rt.block_on([](box& b, std::error_code& ec, bool& owns) -> corio::task<void> {
    std::stop_source src;
    auto w = corio::spawn([](box& b, std::stop_token t, std::error_code& ec, bool& owns) -> corio::task<void> {
      auto g = co_await b.m.scoped_lock();
      auto r = co_await b.cv.wait(g, t);
      ec = r ? std::error_code{} : r.error();
      owns = g.owns_lock();
    }(b, src.get_token(), ec, owns));
    co_await corio::sleep_for(5ms);
    src.request_stop();
    co_await w;
  }(b, ec, owns));
  REQUIRE(ec == std::errc::operation_canceled);
  REQUIRE(owns);
  REQUIRE_FALSE(b.m.is_locked());
}

TEST_CASE("condition_variable: a notify between the predicate check and the sleep is not lost", "[sync][condition_variable]") {
  // Many rounds of one waiter and one notifier racing on two workers: the waiter checks
  // the flag under the mutex and waits; the notifier sets it under the mutex and
  // notifies without it. A lost wake-up would hang (caught by the test timeout).
  corio::runtime rt(corio_test::sync_config());
  int rounds_done = 0;
  rt.block_on([](int& rounds_done) -> corio::task<void> {
    for (int round = 0; round < 2000; ++round) {
      box b;
      auto w = corio::spawn([](box& b) -> corio::task<void> {
        auto g = co_await b.m.scoped_lock();
        (void)co_await b.cv.wait(g, [&] { return b.ready; });
      }(b));
      auto n = corio::spawn([](box& b) -> corio::task<void> {
        {
          auto g = co_await b.m.scoped_lock();
          b.ready = true;
        }
        b.cv.notify_one();
      }(b));
      co_await n;
      co_await w;
      ++rounds_done;
    }
  }(rounds_done));
  REQUIRE(rounds_done == 2000);
}
