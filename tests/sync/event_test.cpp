#include <corio/sync/event.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stop_token>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>
#include <corio/sync/barrier.hpp>
#include <corio/sync/latch.hpp>

#include "sync_helpers.hpp"

using namespace std::chrono_literals;

TEST_CASE("event: a manual-reset event releases every waiter and stays set", "[sync][event]") {
  corio::runtime rt(corio_test::sync_config());
  corio::event ev;
  std::atomic<int> passed{0};
  bool still_set = false;
  rt.block_on([](corio::event& ev, std::atomic<int>& passed, bool& still_set) -> corio::task<void> {
    std::vector<corio::join_handle<void>> hs;
    for (int i = 0; i < 10; ++i) {
      hs.push_back(corio::spawn([](corio::event& ev, std::atomic<int>& passed) -> corio::task<void> {
        if (co_await ev.wait()) {
          passed.fetch_add(1);
        }
      }(ev, passed)));
    }
    co_await corio::sleep_for(5ms);
    ev.set();
    for (auto& h : hs) {
      co_await h;
    }
    still_set = ev.is_set() && (co_await ev.wait()).has_value();
  }(ev, passed, still_set));
  REQUIRE(passed.load() == 10);
  REQUIRE(still_set);
  ev.reset();
  REQUIRE_FALSE(ev.is_set());
}

TEST_CASE("event: an auto-reset event lets exactly one waiter through per set", "[sync][event]") {
  corio::runtime rt(corio_test::sync_config());
  corio::event ev(corio::event_reset::automatic);
  std::atomic<int> passed{0};
  int after_one = -1;
  bool consumed = false;
  rt.block_on([](corio::event& ev, std::atomic<int>& passed, int& after_one, bool& consumed) -> corio::task<void> {
    std::vector<corio::join_handle<void>> hs;
    for (int i = 0; i < 3; ++i) {
      hs.push_back(corio::spawn([](corio::event& ev, std::atomic<int>& passed) -> corio::task<void> {
        if (co_await ev.wait()) {
          passed.fetch_add(1);
        }
      }(ev, passed)));
    }
    co_await corio::sleep_for(5ms);
    ev.set();
    co_await corio::sleep_for(5ms);
    after_one = passed.load();
    ev.set();
    ev.set();
    for (auto& h : hs) {
      co_await h;
    }
    ev.set();  // nobody waits: stays set for one try_wait
    consumed = ev.try_wait() && !ev.try_wait();
  }(ev, passed, after_one, consumed));
  REQUIRE(after_one == 1);
  REQUIRE(passed.load() == 3);
  REQUIRE(consumed);
}

TEST_CASE("event: a stopped wait returns operation_canceled", "[sync][event]") {
  corio::runtime rt(corio_test::sync_config());
  corio::event ev;
  std::error_code ec;
  rt.block_on([](corio::event& ev, std::error_code& ec) -> corio::task<void> {
    std::stop_source src;
    auto h = corio::spawn([](corio::event& ev, std::stop_token t, std::error_code& ec) -> corio::task<void> {
      auto r = co_await ev.wait(t);
      ec = r ? std::error_code{} : r.error();
    }(ev, src.get_token(), ec));
    co_await corio::sleep_for(2ms);
    src.request_stop();
    co_await h;
  }(ev, ec));
  REQUIRE(ec == std::errc::operation_canceled);
}

TEST_CASE("latch: waiters are released when the count reaches zero", "[sync][latch]") {
  corio::runtime rt(corio_test::sync_config());
  corio::latch done(8);
  std::atomic<int> workers_done{0};
  int seen_by_waiter = -1;
  rt.block_on([](corio::latch& done, std::atomic<int>& wd, int& seen) -> corio::task<void> {
    for (int i = 0; i < 8; ++i) {
      corio::spawn([](corio::latch& done, std::atomic<int>& wd) -> corio::task<void> {
        co_await corio::yield_now{};
        wd.fetch_add(1);
        done.count_down();
      }(done, wd)).detach();
    }
    (void)co_await done.wait();
    seen = wd.load();
  }(done, workers_done, seen_by_waiter));
  REQUIRE(seen_by_waiter == 8);
  REQUIRE(done.try_wait());
}

TEST_CASE("barrier: each phase completes once every participant arrived, running the completion first", "[sync][barrier]") {
  corio::runtime rt(corio_test::sync_config());
  constexpr int kTasks = 4;
  constexpr int kPhases = 50;
  std::atomic<int> completions{0};
  std::atomic<int> arrivals{0};
  std::atomic<bool> bad{false};
  corio::barrier bar(kTasks, [&] {
    // Every participant of this phase has arrived, none of the next.
    if (arrivals.load() != (completions.load() + 1) * kTasks) {
      bad = true;
    }
    completions.fetch_add(1);
  });
  rt.block_on([](corio::barrier& bar, std::atomic<int>& arrivals, std::atomic<int>& completions,
                 std::atomic<bool>& bad) -> corio::task<void> {
    std::vector<corio::join_handle<void>> hs;
    for (int t = 0; t < kTasks; ++t) {
      hs.push_back(corio::spawn([](corio::barrier& bar, std::atomic<int>& arrivals, std::atomic<int>& completions,
                                   std::atomic<bool>& bad) -> corio::task<void> {
        for (int p = 0; p < kPhases; ++p) {
          arrivals.fetch_add(1);
          (void)co_await bar.arrive_and_wait();
          if (completions.load() < p + 1) {
            bad = true;  // released before the phase's completion ran
          }
        }
      }(bar, arrivals, completions, bad)));
    }
    for (auto& h : hs) {
      co_await h;
    }
  }(bar, arrivals, completions, bad));
  REQUIRE(completions.load() == kPhases);
  REQUIRE(bar.phase() == kPhases);
  REQUIRE_FALSE(bad.load());
}

TEST_CASE("barrier: arrive_and_drop lowers the count of later phases", "[sync][barrier]") {
  corio::runtime rt(corio_test::sync_config());
  corio::barrier bar(2);
  bool ok = false;
  rt.block_on([](corio::barrier& bar, bool& ok) -> corio::task<void> {
    bar.arrive_and_drop();          // phase 0 needs one more arrival; later phases one
    auto r1 = co_await bar.arrive_and_wait();  // completes phase 0
    auto r2 = co_await bar.arrive_and_wait();  // alone completes phase 1
    ok = r1.has_value() && r2.has_value() && bar.phase() == 2;
  }(bar, ok));
  REQUIRE(ok);
}
