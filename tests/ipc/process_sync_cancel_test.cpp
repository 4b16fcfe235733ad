// Tests of cancelling every waiter of a process-shared primitive at once (issue 14's "bad
// input and faults"): 32 tasks on 2 workers wait on a process_mutex, a process_event
// (manual and auto reset) or a process_condition_variable, all of them seen asleep in the
// kernel, and one stop_source stops them all. Each must return operation_canceled and take
// nothing (the mutex stays with its holder, the event keeps its state, an auto-reset set
// afterwards releases exactly one new waiter), a condition variable's guards must own the
// mutex again, no wait may be left in the kernel, and the primitive must then work as
// before. Every case runs through the ring and with the blocking-pool fallback forced
// (fallback_mode.hpp), once with only this process's tasks waiting and once with a forked
// child waiting beside them in a thread form, which the cancels must leave waiting and
// whose wait the next unlock, set or notify must still end.
// (process_semaphore's cancel-all case is in process_sync_test.cpp.)
#include <corio/ipc/detail/robust_owner.hpp>
#include <corio/ipc/process_condition_variable.hpp>
#include <corio/ipc/process_event.hpp>
#include <corio/ipc/process_mutex.hpp>

#include <catch2/catch.hpp>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <stop_token>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>

#include "fallback_mode.hpp"
#include "helpers.hpp"
#include "shm_helpers.hpp"

CORIO_SHM_TEST_TSAN_OPTIONS

using namespace std::chrono_literals;
using corio::ipc::event_mode;
using corio::ipc::memory_map;
using corio::ipc::process_condition_variable;
using corio::ipc::process_event;
using corio::ipc::process_mutex;
using corio::ipc::process_mutex_guard;
using corio::ipc::detail::shared_word;
using corio_test::child;
using corio_test::eventually;
using corio_test::sleepers_on;
using corio_test::shared_page;
using corio_test::fallback_mode;

namespace {

constexpr int crowd = 32;  // waiters cancelled at once, on 2 workers
/// The waiters bit of an event's and a condition variable's word (their headers: "set bit
/// (2) | waiters bit (1)", "sequence * 2 + waiters bit"): set while anyone sleeps on it,
/// or the next set() or notify wakes nobody.
constexpr std::uint32_t waiters_bit = 1;

template <class R>
std::error_code error_of(const R& r) {
  return r ? std::error_code{} : r.error();
}

/// `wait`, then one more in *returned.
corio::task<std::error_code> counted(corio::task<std::error_code> wait, std::atomic<int>* returned) {
  auto e = co_await std::move(wait);
  returned->fetch_add(1);
  co_return e;
}

/// What one cancel-all run saw (filled in by a task, checked on the main thread).
struct cancel_report {
  bool all_asleep = false;    ///< every waiter (and every other process's) slept before the stop
  int asleep_before = -1;     ///< the last count of sleepers before the stop
  bool all_returned = false;  ///< every waiter returned after the stop (else `unblock` freed them)
  int cancelled = 0;          ///< waiters that returned operation_canceled
  std::error_code other;      ///< another result, if any
  bool settled = false;       ///< only the other processes' waits were left in the kernel
  int asleep_after = -1;      ///< the last count of sleepers once every waiter returned
};

/// Spawns `crowd` waiters (make_wait(token) each: a task yielding its error), waits until
/// all of them and `others` waits of other processes sleep on `word`, stops them all with
/// one request_stop(), and reports. Where a broken cancellation left waiters waiting,
/// `unblock()` (called until all have returned) frees them, so that the test fails instead
/// of hanging.
template <class MakeWait, class Unblock>
corio::task<cancel_report> cancel_every_waiter(const shared_word* word, int others, MakeWait make_wait, Unblock unblock) {
  cancel_report r;
  std::stop_source stop;
  std::atomic<int> returned{0};
  std::vector<corio::join_handle<std::error_code>> hs;
  for (int i = 0; i < crowd; ++i) {
    hs.push_back(corio::spawn(counted(make_wait(stop.get_token()), &returned)));
  }
  r.all_asleep = co_await eventually([&] { return (r.asleep_before = sleepers_on(*word)) == crowd + others; });
  stop.request_stop();
  r.all_returned = co_await eventually([&] { return returned.load() == crowd; });
  if (!r.all_returned) {
    (void)co_await eventually([&] {
      unblock();
      return returned.load() == crowd;
    });
  }
  for (auto& h : hs) {
    auto e = co_await std::move(h);
    if (e == std::errc::operation_canceled) {
      ++r.cancelled;
    } else {
      r.other = e;
    }
  }
  r.settled = co_await eventually([&] { return (r.asleep_after = sleepers_on(*word)) == others; });
  co_return r;
}

/// The main thread's checks of a cancel_report.
void check(const cancel_report& r, int others) {
  INFO("sleepers before the stop: " << r.asleep_before << ", after: " << r.asleep_after << "; another result: "
                                    << r.other.message());
  CHECK(r.all_asleep);
  CHECK(r.all_returned);
  CHECK(r.cancelled == crowd);
  CHECK(r.settled);
  CHECK(r.asleep_after == others);
}

/// `tasks` new waiters (make_wait() each, no token) and `others` waits of other processes
/// sleep on `word`, then `release()` runs once; returns how many tasks returned success,
/// or -1 if they never all slept.
template <class MakeWait, class Release>
corio::task<int> wake_new_waiters(const shared_word* word, int tasks, int others, MakeWait make_wait, Release release) {
  std::atomic<int> returned{0};
  std::vector<corio::join_handle<std::error_code>> hs;
  for (int i = 0; i < tasks; ++i) {
    hs.push_back(corio::spawn(counted(make_wait(), &returned)));
  }
  const bool asleep = co_await eventually([&] { return sleepers_on(*word) == tasks + others; });
  co_await release();
  int ok = 0;
  for (auto& h : hs) {
    auto e = co_await std::move(h);
    if (!e) {
      ++ok;
    }
  }
  co_return asleep ? ok : -1;
}

/// A forked child (or none, for `others` 0) that runs `wait` (a thread form without a
/// limit, returning success) and then stores in `flag` 1 (success) or 2 (an error).
template <class Wait>
std::unique_ptr<child> fork_waiter(int others, std::atomic<std::uint32_t>& flag, Wait wait) {
  if (others == 0) {
    return nullptr;
  }
  return std::make_unique<child>([&flag, wait] {
    const bool ok = wait();
    flag.store(ok ? 1 : 2);
    return ok ? 0 : 1;
  });
}

/// On the main thread: whether the forked waiter's wait ended with success and it exited.
/// The bound only turns a lost wake-up (a child left asleep) into a failure instead of a
/// hang; the child is killed then.
bool waiter_succeeded(child& c, const std::atomic<std::uint32_t>& flag) {
  const auto end = std::chrono::steady_clock::now() + 30s;
  while (flag.load() == 0 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(200us);
  }
  if (flag.load() == 0) {
    c.kill9();
    return false;
  }
  return flag.load() == 1 && c.wait_status() == 0;
}

// ---- mutex ----

corio::task<std::error_code> lock_waiter(process_mutex m, std::stop_token t) {
  auto g = co_await m.lock(std::move(t));
  co_return error_of(g);
}

/// Waiters cancelled while `held` keeps the mutex (unblock: its unlock).
corio::task<cancel_report> cancel_locks(process_mutex m, const shared_word* word, int others, process_mutex_guard* held) {
  auto wait = [m](std::stop_token t) { return lock_waiter(m, std::move(t)); };
  auto unblock = [held] { held->unlock(); };
  co_return co_await cancel_every_waiter(word, others, wait, unblock);
}

/// After the cancel: a new waiter sleeps on a held mutex, gets it at the unlock.
corio::task<int> lock_after_cancel(process_mutex m, const shared_word* word) {
  auto g = m.try_lock();
  if (!g) {
    co_return -2;
  }
  process_mutex_guard held = std::move(*g);
  auto wait = [m] { return lock_waiter(m, {}); };
  auto release = [&held]() -> corio::task<void> {
    held.unlock();
    co_return;
  };
  co_return co_await wake_new_waiters(word, 1, 0, wait, release);
}

}  // namespace

TEST_CASE("process_mutex: cancelling every waiting lock at once takes nothing", "[ipc][process_mutex][cancel]") {
  const bool fallback = GENERATE(false, true);
  const int others = GENERATE(0, 1);  // a forked child waiting beside the tasks
  fallback_mode mode(fallback);
  shared_page page;
  auto m = process_mutex::construct(page.bytes(), 0);
  REQUIRE(m);
  const shared_word* word = &page.state_at<corio::ipc::detail::mutex_state>(0).lock.word;
  auto held = m->try_lock();
  REQUIRE(held);
  auto& child_done = page.flag(0);
  auto waiter = fork_waiter(others, child_done, [&] {
    auto g = m->lock_blocking();
    return g && g->owns_lock();
  });
  corio::runtime rt(corio_test::workers(2));
  check(rt.block_on(cancel_locks(*m, word, others, &*held)), others);
  // Nothing taken: the mutex is still ours, the child still waits for it, and its wake-up
  // is still due (the waiters bit, which the next unlock looks at, is still set).
  const auto me = corio::ipc::detail::process_owner_id();
  REQUIRE(me);
  CHECK(held->owns_lock());
  CHECK((word->load() & corio::ipc::detail::owner_mask) == *me);
  CHECK(child_done.load() == 0);
  if (waiter) {
    CHECK((word->load() & corio::ipc::detail::owner_waiters) != 0);
  }
  held->unlock();
  if (waiter) {
    CHECK(waiter_succeeded(*waiter, child_done));  // our unlock woke it
  }
  CHECK_FALSE(m->is_locked());
  CHECK(rt.block_on(lock_after_cancel(*m, word)) == 1);
  CHECK_FALSE(m->is_locked());
}

// ---- event ----

namespace {

corio::task<std::error_code> event_waiter(process_event e, std::stop_token t) {
  auto w = co_await e.wait(std::move(t));
  co_return error_of(w);
}

/// Waiters of an unset event cancelled (unblock: set it, again once it is taken).
corio::task<cancel_report> cancel_event_waits(process_event e, const shared_word* word, int others) {
  auto wait = [e](std::stop_token t) { return event_waiter(e, std::move(t)); };
  auto unblock = [e] { e.set(); };
  co_return co_await cancel_every_waiter(word, others, wait, unblock);
}

/// Auto reset, after the cancel: two new tasks and `others` forked waiters (*child_took
/// is 1 once the child took one) sleep; each set() must release exactly one of them: one
/// more has it, the event is taken and the rest are seen asleep again. Returns how many
/// sets did so, or -1 if a new task's wait failed.
corio::task<int> one_per_set(process_event e, const shared_word* word, int others, std::atomic<std::uint32_t>* child_took) {
  constexpr int tasks = 2;
  const int total = tasks + others;
  std::atomic<int> returned{0};
  std::vector<corio::join_handle<std::error_code>> hs;
  for (int i = 0; i < tasks; ++i) {
    hs.push_back(corio::spawn(counted(event_waiter(e, {}), &returned)));
  }
  int exact = 0;
  const bool asleep = co_await eventually([&] { return sleepers_on(*word) == total; });
  if (asleep) {
    for (int k = 1; k <= total; ++k) {
      e.set();
      const bool one = co_await eventually([&] {
        return returned.load() + static_cast<int>(child_took->load()) == k && !e.is_set() &&
               sleepers_on(*word) == total - k;
      });
      exact += one ? 1 : 0;
    }
  }
  // Waits left over after a failure above: one more set each, so that the test fails
  // instead of hanging.
  (void)co_await eventually([&] {
    if (returned.load() == tasks) {
      return true;
    }
    e.set();
    return false;
  });
  for (auto& h : hs) {
    auto err = co_await std::move(h);
    if (err) {
      exact = -1;
    }
  }
  co_return exact;
}

/// Manual reset, after the cancel: one set() releases two new tasks and `others` forked
/// waiters; returns how many tasks returned success.
corio::task<int> set_releases_all(process_event e, const shared_word* word, int others) {
  auto wait = [e] { return event_waiter(e, {}); };
  auto release = [e]() -> corio::task<void> {
    e.set();
    co_return;
  };
  co_return co_await wake_new_waiters(word, 2, others, wait, release);
}

}  // namespace

TEST_CASE("process_event: cancelling every waiter at once leaves the event as it was", "[ipc][process_event][cancel]") {
  const bool fallback = GENERATE(false, true);
  const int others = GENERATE(0, 1);  // a forked child waiting beside the tasks
  const auto kind = GENERATE(event_mode::manual_reset, event_mode::auto_reset);
  fallback_mode mode(fallback);
  shared_page page;
  auto e = process_event::construct(page.bytes(), 0, kind);
  REQUIRE(e);
  const shared_word* word = &page.state_at<corio::ipc::detail::event_state>(0).word;
  auto& child_took = page.flag(0);
  auto waiter = fork_waiter(others, child_took, [&] { return e->wait_blocking().has_value(); });
  corio::runtime rt(corio_test::workers(2));
  check(rt.block_on(cancel_event_waits(*e, word, others)), others);
  CHECK_FALSE(e->is_set());
  CHECK(child_took.load() == 0);  // the child still waits
  if (waiter) {
    CHECK((word->load() & waiters_bit) != 0);  // and the next set() will wake it
  }
  if (kind == event_mode::manual_reset) {
    CHECK(rt.block_on(set_releases_all(*e, word, others)) == 2);
    CHECK(e->is_set());
  } else {
    CHECK(rt.block_on(one_per_set(*e, word, others, &child_took)) == 2 + others);
    CHECK_FALSE(e->is_set());
  }
  if (waiter) {
    CHECK(waiter_succeeded(*waiter, child_took));
  }
}

// ---- condition variable ----

namespace {

/// A mutex, a condition variable and its predicate's flag in one shared page.
struct cv_page {
  shared_page page;
  process_mutex m = *process_mutex::construct(page.bytes(), 0);
  process_condition_variable cv = *process_condition_variable::construct(page.bytes(), 64);
  const shared_word* word() { return &page.state_at<corio::ipc::detail::condition_state>(64).word; }
  std::uint32_t mutex_owner() {
    return page.state_at<corio::ipc::detail::mutex_state>(0).lock.word.load() & corio::ipc::detail::owner_mask;
  }
  std::atomic<std::uint32_t>& ready() { return page.flag(0); }  // the predicate, under the mutex
};

/// Locks, waits (with `t`) for ready(), and counts in *lost a return whose guard does not
/// own the mutex again (or finds it held by another process).
corio::task<std::error_code> cv_waiter(cv_page* p, std::stop_token t, std::atomic<int>* lost) {
  auto g = co_await p->m.lock();
  if (!g) {
    co_return g.error();
  }
  auto w = co_await p->cv.wait(*g, [p] { return p->ready().load() == 1; }, std::move(t));
  const auto me = corio::ipc::detail::process_owner_id();
  if (!g->owns_lock() || !me || p->mutex_owner() != *me) {
    lost->fetch_add(1);
  }
  co_return error_of(w);
}

/// Makes the predicate true under the mutex and notifies every waiter.
corio::task<void> make_ready(cv_page* p) {
  auto g = co_await p->m.lock();
  p->ready().store(1);
  p->cv.notify_all();
}

/// Waiters of a false predicate cancelled (unblock: make it true and notify, when the
/// mutex is free).
corio::task<cancel_report> cancel_cv_waits(cv_page* p, int others, std::atomic<int>* lost) {
  auto wait = [p, lost](std::stop_token t) { return cv_waiter(p, std::move(t), lost); };
  auto unblock = [p] {
    if (auto g = p->m.try_lock()) {
      p->ready().store(1);
      p->cv.notify_all();
    }
  };
  co_return co_await cancel_every_waiter(p->word(), others, wait, unblock);
}

/// After the cancel: two new tasks and `others` forked waiters wait for ready(); one
/// notify_all() releases them; returns how many tasks returned success.
corio::task<int> notify_after_cancel(cv_page* p, int others, std::atomic<int>* lost) {
  auto wait = [p, lost] { return cv_waiter(p, {}, lost); };
  auto release = [p] { return make_ready(p); };
  co_return co_await wake_new_waiters(p->word(), 2, others, wait, release);
}

}  // namespace

TEST_CASE("process_condition_variable: cancelling every waiter at once re-locks each guard",
          "[ipc][process_condition_variable][cancel]") {
  const bool fallback = GENERATE(false, true);
  const int others = GENERATE(0, 1);  // a forked child waiting beside the tasks
  fallback_mode mode(fallback);
  cv_page p;
  auto& child_done = p.page.flag(1);
  auto waiter = fork_waiter(others, child_done, [&] {
    auto g = p.m.lock_blocking();
    return g && p.cv.wait_blocking(*g, [&] { return p.ready().load() == 1; }) && g->owns_lock();
  });
  std::atomic<int> lost{0};
  corio::runtime rt(corio_test::workers(2));
  check(rt.block_on(cancel_cv_waits(&p, others, &lost)), others);
  CHECK(lost.load() == 0);  // every cancelled wait returned with its guard owning the mutex
  CHECK_FALSE(p.m.is_locked());
  CHECK(child_done.load() == 0);  // the child still waits
  if (waiter) {
    CHECK((p.word()->load() & waiters_bit) != 0);  // and the next notify will wake it
  }
  CHECK(rt.block_on(notify_after_cancel(&p, others, &lost)) == 2);
  CHECK(lost.load() == 0);
  if (waiter) {
    CHECK(waiter_succeeded(*waiter, child_done));
  }
  CHECK_FALSE(p.m.is_locked());
}
