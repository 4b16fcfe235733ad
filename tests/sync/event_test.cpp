// Tests of sync/event.hpp.
#include <corio/sync/event.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <cstdlib>
#include <chrono>
#include <stop_token>
#include <thread>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/timeout.hpp>
#include <corio/sync/barrier.hpp>
#include <corio/sync/detail/wait_operation.hpp>
#include <corio/sync/waiter_list.hpp>
#include <corio/sync/latch.hpp>

#include "sync_helpers.hpp"

using namespace std::chrono_literals;

namespace {
// Spawns `n` tasks that each wait on `ev` and count into `passed` when the wait succeeds.
std::vector<corio::join_handle<void>> spawn_counting_waiters(corio::event& ev, std::atomic<int>& passed, int n) {
  std::vector<corio::join_handle<void>> hs;
  for (int i = 0; i < n; ++i) {
    hs.push_back(corio::spawn([](corio::event& ev, std::atomic<int>& passed) -> corio::task<void> {
      if (co_await ev.wait()) {
        passed.fetch_add(1);
      }
    }(ev, passed)));
  }
  return hs;
}
}  // namespace

TEST_CASE("event: a manual-reset event releases every waiter and stays set", "[sync][event]") {
  corio::runtime rt(corio_test::sync_config());
  corio::event ev;
  std::atomic<int> passed{0};
  bool still_set = false;
  rt.block_on([](corio::event& ev, std::atomic<int>& passed, bool& still_set) -> corio::task<void> {
    std::vector<corio::join_handle<void>> hs = spawn_counting_waiters(ev, passed, 10);
    (void)co_await corio::sleep_for(5ms);
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
    std::vector<corio::join_handle<void>> hs = spawn_counting_waiters(ev, passed, 3);
    (void)co_await corio::sleep_for(5ms);
    ev.set();
    (void)co_await corio::sleep_for(5ms);
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
    (void)co_await corio::sleep_for(2ms);
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

TEST_CASE("barrier: a cancelled arrive_and_wait takes its arrival back", "[sync][barrier]") {
  corio::runtime rt(corio_test::sync_config());
  corio::barrier bar(2);
  std::error_code waiting_stopped;
  std::error_code pre_stopped;
  std::error_code lone;
  bool pair_ok = false;
  std::uint64_t phase_after = 99;
  rt.block_on([](corio::barrier& bar, std::error_code& ws, std::error_code& ps, std::error_code& lone,
                 bool& pair_ok) -> corio::task<void> {
    // A waiting arrival that is stopped.
    std::stop_source src;
    auto w = corio::spawn([](corio::barrier& bar, std::stop_token t, std::error_code& ec) -> corio::task<void> {
      auto r = co_await bar.arrive_and_wait(t);
      ec = r ? std::error_code{} : r.error();
    }(bar, src.get_token(), ws));
    (void)co_await corio::sleep_for(3ms);
    src.request_stop();
    co_await w;
    // An arrival whose token is already stopped (cancelled before it queues).
    auto r = co_await bar.arrive_and_wait(src.get_token());
    ps = r ? std::error_code{} : r.error();
    // Neither counted: one arrival alone does not complete the phase (timed out, and the
    // timed-out arrival is taken back too)...
    auto t = co_await corio::timeout(bar.arrive_and_wait(), 5ms);
    lone = t ? std::error_code{} : t.error();
    // ... two do.
    auto other = corio::spawn([](corio::barrier& bar) -> corio::task<corio::result<void>> {
      co_return co_await bar.arrive_and_wait();
    }(bar));
    auto mine = co_await bar.arrive_and_wait();
    auto theirs = co_await other;
    pair_ok = mine.has_value() && theirs.has_value();
  }(bar, waiting_stopped, pre_stopped, lone, pair_ok));
  phase_after = bar.phase();
  REQUIRE(waiting_stopped == std::errc::operation_canceled);
  REQUIRE(pre_stopped == std::errc::operation_canceled);
  REQUIRE(lone == std::errc::timed_out);
  REQUIRE(pair_ok);
  REQUIRE(phase_after == 1);
}

TEST_CASE("barrier: phase() counts a phase only once its completion function has run", "[sync][barrier]") {
  corio::runtime rt(corio_test::sync_config());
  std::uint64_t seen_in_completion = 99;
  corio::barrier* self = nullptr;
  corio::barrier bar(2, [&] { seen_in_completion = self->phase(); });
  self = &bar;
  std::uint64_t seen_by_waiter = 99;
  rt.block_on([](corio::barrier& bar, std::uint64_t& seen_by_waiter) -> corio::task<void> {
    auto w = corio::spawn([](corio::barrier& bar, std::uint64_t& seen) -> corio::task<void> {
      (void)co_await bar.arrive_and_wait();
      seen = bar.phase();
    }(bar, seen_by_waiter));
    (void)co_await corio::sleep_for(2ms);
    (void)co_await bar.arrive_and_wait();
    co_await w;
  }(bar, seen_by_waiter));
  REQUIRE(seen_in_completion == 0);
  REQUIRE(seen_by_waiter == 1);
  REQUIRE(bar.phase() == 1);
}

namespace {

/// A bare wait on a raw waiter_list, for the detach test.
class probe_wait : public corio::detail::wait_operation<probe_wait> {
 public:
  using wait_operation::wait_operation;
  bool try_now(corio::detail::wake_batch&) noexcept { return false; }
  using wait_operation::block;
};

}  // namespace

TEST_CASE("waiter_list: a waiter detached from a destroyed list can still be stopped and destroyed", "[sync][detach]") {
  // What a release build does when a primitive dies under its waiters (and any build at
  // runtime shutdown): the waiters are detached, never resumed. A later stop request or
  // the waiter's destruction must not touch the dead list (it used to be set to null:
  // the stop callback dereferenced it).
  corio::detail::sync_spin_lock lock;
  auto* list = new corio::detail::waiter_list(lock);
  std::stop_source src;
  probe_wait op(*list, src.get_token());
  std::thread t([&] { op.block(); });
  for (;;) {
    lock.lock();
    const bool queued = op.status == corio::detail::wait_status::queued;
    lock.unlock();
    if (queued) {
      break;
    }
    std::this_thread::yield();
  }
  const bool was_bug = list->detach_all();  // a plain thread waited: not a shutdown
  delete list;                               // empty now: no debug abort
  src.request_stop();                        // runs op.cancel() on the detached node
  const bool still_cancelled = op.status == corio::detail::wait_status::cancelled;
  const bool on_dead_list = op.list == &corio::detail::waiter_list::dead_list();
  op.parker->notify();  // detached waiters are never resumed: let the test thread go
  t.join();
  REQUIRE(was_bug);
  REQUIRE(still_cancelled);
  REQUIRE(on_dead_list);
}

TEST_CASE("latch: counting below zero aborts in debug builds and opens the latch in release builds", "[sync][latch][misuse]") {
  auto out = corio_test::run_in_child([] {
    corio::latch l(1);
    l.count_down(2);
    if (!l.try_wait()) {
      std::_Exit(3);
    }
    l.count_down();  // further misuse changes nothing visible
    if (!l.try_wait()) {
      std::_Exit(4);
    }
  });
  corio_test::require_misuse_outcome(out, "corio::latch::count_down: below zero");
}

TEST_CASE("latch: a negative count_down aborts in debug builds and is ignored in release builds", "[sync][latch][misuse]") {
  // It used to raise the count: latch(1), count_down(-1), count_down() left it closed.
  auto out = corio_test::run_in_child([] {
    corio::latch l(1);
    l.count_down(-1);
    if (l.try_wait()) {
      std::_Exit(3);
    }
    l.count_down();  // the one count-down the latch was made for opens it
    if (!l.try_wait()) {
      std::_Exit(4);
    }
  });
  corio_test::require_misuse_outcome(out, "corio::latch::count_down: negative n");
}

TEST_CASE("event: reset() and set() from two threads leave every reader agreeing with the last one", "[sync][event]") {
  // The flag is changed under the lock and published by the unlock: after both threads
  // are done, is_set() (lock-free), try_wait() and a wait agree with whichever call came
  // last, and a manual event never reports set to one reader and clear to the next.
  for (int round = 0; round < 200; ++round) {
    corio::event ev(corio::event_reset::manual);
    std::atomic<bool> go{false};
    std::thread setter([&] {
      while (!go.load()) {
      }
      ev.set();
    });
    go.store(true);
    ev.reset();
    setter.join();
    const bool set = ev.is_set();
    REQUIRE(ev.try_wait() == set);
    ev.reset();
    REQUIRE_FALSE(ev.is_set());
    REQUIRE_FALSE(ev.try_wait());
  }
}
