// Tests for runtime/blocking.hpp (spawn_blocking).
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/runtime/internal/test_hooks.hpp>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <system_error>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "refuse_threads.hpp"

using namespace std::chrono_literals;

using corio_test::workers;

TEST_CASE("spawn_blocking: runs off the worker and returns the value", "[runtime][blocking]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<bool> {
    auto worker_id = std::this_thread::get_id();
    auto r = co_await corio::spawn_blocking([] { return std::this_thread::get_id(); });
    REQUIRE(r);
    co_return *r != worker_id;
  };
  CHECK(rt.block_on(body()));
}

TEST_CASE("spawn_blocking: a blocking job does not stall the worker", "[runtime][blocking]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<int> {
    auto slow = []() -> corio::task<int> {
      auto r = co_await corio::spawn_blocking([] {
        std::this_thread::sleep_for(100ms);
        return 1;
      });
      co_return *r;
    };
    auto fast = []() -> corio::task<int> {
      (void)co_await corio::sleep_for(5ms);
      co_return 2;
    };
    // With one worker, the fast task finishes first only if the worker is free.
    auto first = co_await corio::when_any(slow(), fast());
    co_return static_cast<int>(first.index());
  };
  CHECK(rt.block_on(body()) == 1);
}

TEST_CASE("spawn_blocking: exceptions are rethrown in the awaiter", "[runtime][blocking]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<void> {
    (void)co_await corio::spawn_blocking([]() -> int { throw std::runtime_error("blocking boom"); });
  };
  CHECK_THROWS_WITH(rt.block_on(body()), "blocking boom");
}

namespace {
// Coroutine lambdas must not capture: the closure is a temporary, the frame outlives it.
corio::task<void> hog_the_pool(std::atomic<bool>* release) {
  (void)co_await corio::spawn_blocking([release] {
    while (!release->load()) {
      std::this_thread::sleep_for(1ms);
    }
  });
}
corio::task<void> stop_after(std::stop_source* stop, std::chrono::milliseconds d) {
  (void)co_await corio::sleep_for(d);
  stop->request_stop();
}
corio::task<std::error_code> withdrawn_job(std::atomic<bool>* release, std::atomic<int>* second_ran) {
  auto hog = corio::spawn(hog_the_pool(release));  // occupies the only blocking thread
  (void)co_await corio::sleep_for(10ms);
  std::stop_source stop;
  auto canceller = corio::spawn(stop_after(&stop, 10ms));
  auto r = co_await corio::spawn_blocking([second_ran] { second_ran->store(1); }, stop.get_token());
  release->store(true);
  co_await hog;
  co_await canceller;
  co_return r ? std::error_code{} : r.error();
}
}  // namespace

TEST_CASE("spawn_blocking: a queued job is withdrawn by its stop token", "[runtime][blocking]") {
  corio::runtime rt(workers(1, 1));
  std::atomic<bool> release{false};
  std::atomic<int> second_ran{0};
  CHECK(rt.block_on(withdrawn_job(&release, &second_ran)) == std::errc::operation_canceled);
  CHECK(second_ran.load() == 0);
}

namespace {
std::stop_source* g_stop_in_submit = nullptr;
void stop_in_submit() noexcept { g_stop_in_submit->request_stop(); }

struct submit_hook_guard {
  explicit submit_hook_guard(std::stop_source* stop) {
    g_stop_in_submit = stop;
    corio::detail::set_blocking_submit_test_hook(stop_in_submit);
  }
  ~submit_hook_guard() {
    corio::detail::set_blocking_submit_test_hook(nullptr);
    g_stop_in_submit = nullptr;
  }
  submit_hook_guard(const submit_hook_guard&) = delete;
  submit_hook_guard& operator=(const submit_hook_guard&) = delete;
};
}  // namespace

// A stop requested after the await's last look at its token and before the job was
// queued found nothing to withdraw, and the job ran as if no stop had come.
TEST_CASE("spawn_blocking: a stop just before the job is queued withdraws it", "[runtime][blocking]") {
  corio::runtime rt(workers(1, 1));
  std::stop_source stop;
  std::atomic<int> ran{0};  // set on a pool thread if the job runs; seq_cst, nothing subtle
  std::error_code error;
  {
    submit_hook_guard hook(&stop);
    auto body = [](std::stop_token token, std::atomic<int>* ran_flag) -> corio::task<std::error_code> {
      auto job = [ran_flag] { ran_flag->store(1); };
      auto r = co_await corio::spawn_blocking(std::move(job), std::move(token));
      co_return r ? std::error_code{} : r.error();
    };
    error = rt.block_on(body(stop.get_token(), &ran));
  }
  CHECK(stop.stop_requested());  // the hook ran, in the window
  CHECK(error == std::errc::operation_canceled);
  CHECK(ran.load() == 0);
  // The pool still runs jobs.
  auto again = []() -> corio::task<int> {
    auto r = co_await corio::spawn_blocking([] { return 7; });
    co_return r ? *r : -1;
  };
  CHECK(rt.block_on(again()) == 7);
}

namespace {
std::atomic<int> g_running{0};
std::atomic<int> g_high_water{0};
int concurrent_job(int v) {
  int now = g_running.fetch_add(1) + 1;
  int high = g_high_water.load();
  while (now > high && !g_high_water.compare_exchange_weak(high, now)) {
  }
  std::this_thread::sleep_for(50ms);
  g_running.fetch_sub(1);
  return v;
}
corio::task<int> blocking_job(int v) {
  auto r = co_await corio::spawn_blocking([v] { return concurrent_job(v); });
  co_return *r;
}
}  // namespace

TEST_CASE("spawn_blocking: the pool grows for concurrent jobs", "[runtime][blocking]") {
  corio::runtime rt(workers(2, 16));
  auto body = []() -> corio::task<long> {
    std::vector<corio::task<int>> jobs;
    for (int i = 0; i < 16; ++i) {
      jobs.push_back(blocking_job(i));
    }
    auto values = co_await corio::when_all(std::move(jobs));
    long sum = 0;
    for (int v : values) {
      sum += v;
    }
    co_return sum;
  };
  CHECK(rt.block_on(body()) == 120);
  CHECK(g_high_water.load() >= 2);  // jobs ran at the same time, on several threads
  CHECK(rt.metrics().blocking_threads >= 2);
}

namespace {
/// A rendezvous of `parties` blocking jobs: each arrives and waits for all (at most 30 s,
/// so a job that never starts fails the test instead of hanging it).
struct rendezvous {
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  int parties = 0;
  bool arrive_and_wait() {
    std::unique_lock lock(m);
    if (++arrived == parties) {
      cv.notify_all();
    }
    return cv.wait_for(lock, 30s, [&] { return arrived >= parties; });
  }
};
corio::task<bool> meet(rendezvous* r) {
  auto met = co_await corio::spawn_blocking([r] { return r->arrive_and_wait(); });
  co_return met && *met;
}
corio::task<int> rounds_of_rendezvous(int rounds) {
  int failed = 0;
  for (int round = 0; round < rounds; ++round) {
    rendezvous r;
    r.parties = 2 + round % 4;
    std::vector<corio::task<bool>> parties;
    for (int i = 0; i < r.parties; ++i) {
      parties.push_back(meet(&r));
    }
    for (bool met : co_await corio::when_all(std::move(parties))) {
      failed += met ? 0 : 1;
    }
  }
  co_return failed;
}
}  // namespace

// The pool once counted an idle thread woken for a queued job as still free: jobs queued
// back to back before it woke started no new thread and waited behind each other, so jobs
// that wait for each other (a futex waiter and its waker on the fallback path) never met.
// Each round here finds the previous round's threads idle.
TEST_CASE("spawn_blocking: jobs queued back to back each get a thread, even while idle threads are waking",
          "[runtime][blocking]") {
  corio::runtime rt(workers(1, 16));
  CHECK(rt.block_on(rounds_of_rendezvous(60)) == 0);
}

TEST_CASE("spawn_blocking: a blocking_keep_alive of milliseconds::max() keeps the idle thread instead of overflowing",
          "[runtime][blocking]") {
  corio::runtime_config c = workers(1);
  c.blocking_keep_alive = std::chrono::milliseconds::max();
  corio::runtime rt(c);
  auto body = []() -> corio::task<bool> {
    auto r = co_await corio::spawn_blocking([] { return 1; });
    co_return r.has_value();
  };
  REQUIRE(rt.block_on(body()));
  // An overflowed keep-alive is a deadline in the past: the idle thread would exit at
  // once. Give it time to do so (the wait only lets a failure show; it cannot fail a
  // correct runtime).
  std::this_thread::sleep_for(50ms);
  CHECK(rt.metrics().blocking_threads == 1);
}

namespace {
// A job the test releases: it waits on `open` for 30 s at most, so a shutdown that wrongly
// waited for it still ends (then with the wrong answer: true, and the job ended).
struct job_gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  std::atomic<bool> started{false};
  std::atomic<bool> ended{false};
  std::atomic<bool> task_destroyed{false};

  void release() {
    {
      std::lock_guard lock(m);
      open = true;
    }
    cv.notify_all();
  }
};

corio::task<void> await_gated_job(job_gate* g) {
  struct mark_destroyed {
    job_gate* g;
    ~mark_destroyed() { g->task_destroyed.store(true); }
  } mark{g};
  // A heap-owning capture, so that a job whose awaiter (in this frame) were freed under
  // it would read freed memory: ASan reports that.
  std::vector<int> payload(1000, 7);
  auto job = corio::spawn_blocking([g, payload] {
    g->started.store(true);
    std::unique_lock lock(g->m);
    g->cv.wait_for(lock, 30s, [g] { return g->open; });
    g->ended.store(payload[999] == 7);
  });
  (void)co_await std::move(job);
}

void wait_until_set(const std::atomic<bool>& flag) {
  while (!flag.load()) {
    std::this_thread::sleep_for(1ms);
  }
}
}  // namespace

TEST_CASE("runtime: shutdown(limit) gives up on a running spawn_blocking job, which ends later unharmed",
          "[runtime][blocking][shutdown]") {
  job_gate g;
  auto rt = std::make_unique<corio::runtime>(workers(1));
  REQUIRE(rt->spawn(await_gated_job(&g)));
  wait_until_set(g.started);
  CHECK_FALSE(rt->shutdown(50ms));
  CHECK_FALSE(g.ended.load());  // it returned while the job still waited on the gate
  CHECK(rt->spawn(await_gated_job(&g)).error() == corio::errc::shut_down);
  CHECK(rt->shutdown(0ms) == false);  // a second call with no time left: still running
  rt.reset();  // the runtime goes while its job runs; the destructor does not wait
  CHECK_FALSE(g.task_destroyed.load());  // the task awaiting the job waits for it
  g.release();
  // The job ends, and then corio's helper thread destroys the task.
  wait_until_set(g.task_destroyed);
  CHECK(g.ended.load());
}

TEST_CASE("runtime: shutdown() after a shutdown(limit) that gave up waits for the job and the tasks",
          "[runtime][blocking][shutdown]") {
  job_gate g;
  corio::runtime rt(workers(2));
  REQUIRE(rt.spawn(await_gated_job(&g)));
  wait_until_set(g.started);
  CHECK_FALSE(rt.shutdown(1ms));
  g.release();
  rt.shutdown();  // waits for the job, then for the task's destruction
  CHECK(g.ended.load());
  CHECK(g.task_destroyed.load());
  CHECK(rt.shutdown(0ms));  // everything has stopped
}

TEST_CASE("runtime: shutdown(limit) with every job done in time stops everything and returns true",
          "[runtime][blocking][shutdown]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<int> {
    auto r = co_await corio::spawn_blocking([] { return 3; });
    co_return r ? *r : 0;
  };
  CHECK(rt.block_on(body()) == 3);
  CHECK(rt.shutdown(std::chrono::hours::max()));  // saturates: no overflow into the past
  CHECK(rt.shutdown(0ms));
}

namespace {
std::atomic<int> g_tracked{0};  // `tracked` objects alive: constructed minus destroyed

// Owns heap memory and counts its live copies: a second destruction of one copy is a
// double free under ASan and a negative count in any build.
struct tracked {
  std::vector<int> data;
  explicit tracked(std::size_t n) : data(n, 1) { g_tracked.fetch_add(1); }
  tracked(const tracked& o) : data(o.data) { g_tracked.fetch_add(1); }
  tracked(tracked&& o) noexcept : data(std::move(o.data)) { g_tracked.fetch_add(1); }
  ~tracked() { g_tracked.fetch_sub(1); }
};

// Awaits a job whose function object owns memory. The job is named before the co_await:
// g++ 12 destroys the captures of a lambda written inside a co_await expression twice
// (README, "Known compiler bugs"); corio's awaiter destroys the job it holds once.
// The job returns once the runtime shuts down (if `until_shutdown`), so the task is still
// suspended on it when shutdown starts.
corio::task<std::size_t> await_owning_job(std::atomic<bool>* started, bool until_shutdown) {
  tracked owned(3);
  auto* home = corio::port::current_runtime();
  auto job = [owned, home, started, until_shutdown] {
    started->store(true);
    while (until_shutdown && !corio::port::stopping(home)) {
      std::this_thread::sleep_for(1ms);
    }
    return owned.data.size();
  };
  auto r = co_await corio::spawn_blocking(std::move(job));
  co_return r ? *r : 0;
}

corio::task<void> until_set(const std::atomic<bool>* flag) {
  while (!flag->load()) {
    (void)co_await corio::sleep_for(1ms);
  }
}
}  // namespace

TEST_CASE("spawn_blocking: the job's function object is destroyed once when the await completes",
          "[runtime][blocking]") {
  g_tracked = 0;
  std::atomic<bool> started{false};
  corio::runtime rt(workers(1));
  CHECK(rt.block_on(await_owning_job(&started, false)) == 3);
  CHECK(started.load());
  CHECK(g_tracked.load() == 0);
}

TEST_CASE("spawn_blocking: when shutdown destroys the awaiting task, the job's function object is destroyed once",
          "[runtime][blocking]") {
  g_tracked = 0;
  std::atomic<bool> started{false};
  {
    corio::runtime rt(workers(1, 1));
    auto awaiting = rt.spawn(await_owning_job(&started, true));
    REQUIRE(awaiting);
    // The job runs (so the task is suspended on it) and only returns after shutdown
    // begins: shutdown waits for it, then destroys the task (or, should a worker still
    // pick up its wake-up, lets it finish). Either way each object goes once.
    rt.block_on(until_set(&started));
    rt.shutdown();
    CHECK(g_tracked.load() == 0);
  }
  CHECK(g_tracked.load() == 0);
}

namespace {
using corio_test::refuse_new_threads;

// A job's answer, -2 for an error of the await, or -1 if the await threw std::system_error.
corio::task<int> seven_or_refused(std::atomic<bool>* submitting) {
  try {
    submitting->store(true);
    auto r = co_await corio::spawn_blocking([] { return 7; });
    co_return r ? *r : -2;
  } catch (const std::system_error&) {
    co_return -1;
  }
}

// With the pool's one thread busy on `g`'s job, a second job is submitted while the
// system refuses new threads; then `g` is released.
corio::task<int> submit_while_threads_are_refused(job_gate* g) {
  auto busy = corio::spawn(await_gated_job(g));
  while (!g->started.load()) {
    (void)co_await corio::sleep_for(1ms);
  }
  std::atomic<bool> submitting{false};
  std::optional<corio::join_handle<int>> second;
  {
    refuse_new_threads refused;
    second.emplace(corio::spawn(seven_or_refused(&submitting)));
    // One worker: once the flag reads true here, the other task has suspended in its
    // await (or thrown), so its submit is over.
    while (!submitting.load()) {
      (void)co_await corio::sleep_for(1ms);
    }
    (void)co_await corio::sleep_for(1ms);
  }
  g->release();
  co_await busy;
  co_return co_await std::move(*second);
}
}  // namespace

// The pool once threw the system's refusal of a new thread at the awaiter whenever no
// thread was idle, even with threads running jobs that would take the new one when done.
TEST_CASE("spawn_blocking: when the system refuses a new thread, a busy pool thread takes the job later",
          "[runtime][blocking]") {
  corio::runtime rt(workers(1, 4));
  job_gate g;
  CHECK(rt.block_on(submit_while_threads_are_refused(&g)) == 7);
  CHECK(g.ended.load());
  CHECK(rt.metrics().blocking_threads == 1);
}

// The refusal once came out of the co_await as a thrown std::system_error, where every
// other failure of a result-returning call is the result's error.
TEST_CASE("spawn_blocking: with no pool thread and none that can start, the await yields the system's error",
          "[runtime][blocking]") {
  corio::runtime rt(workers(1, 4));
  auto body = []() -> corio::task<std::error_code> {
    refuse_new_threads refused;
    auto r = co_await corio::spawn_blocking([] { return 7; });
    co_return r ? std::error_code{} : r.error();
  };
  std::error_code error;
  REQUIRE_NOTHROW(error = rt.block_on(body()));
  // pthread_create's EAGAIN (a sanitizer's interceptor might say ENOMEM: either is the system's refusal).
  CHECK((error == std::errc::resource_unavailable_try_again || error == std::errc::not_enough_memory));
  // The pool still works once threads can start again.
  auto again = []() -> corio::task<int> {
    auto r = co_await corio::spawn_blocking([] { return 7; });
    co_return r ? *r : -1;
  };
  CHECK(rt.block_on(again()) == 7);
}
