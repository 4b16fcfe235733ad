// Tests for runtime/runtime.hpp and runtime/spawn.hpp: spawning from inside and outside,
// join handles, fairness, configuration errors, hostile environments, shutdown, metrics.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/runtime/port.hpp>
#include <corio/sync/event.hpp>

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace std::chrono_literals;

namespace {

using corio_test::workers;

corio::task<int> square(int x) { co_return x * x; }

corio::task<long> spawn_and_sum(int n) {
  std::vector<corio::join_handle<int>> handles;
  for (int i = 0; i < n; ++i) {
    handles.push_back(corio::spawn(square(i)));
  }
  long sum = 0;
  for (auto& h : handles) {
    sum += co_await h;
  }
  co_return sum;
}

std::string config_error(const corio::runtime_config& c) {
  try {
    corio::runtime rt(c);
  } catch (const std::system_error& e) {
    CHECK(e.code() == corio::errc::invalid_config);
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("runtime: spawned tasks return their values through join handles", "[runtime]") {
  corio::runtime rt(workers(2));
  long expected = 0;
  for (long i = 0; i < 1000; ++i) {
    expected += i * i;
  }
  CHECK(rt.block_on(spawn_and_sum(1000)) == expected);
}

TEST_CASE("runtime: spawn from a foreign thread and await the handle there", "[runtime]") {
  corio::runtime rt(workers(2));
  auto handle = rt.spawn(square(9));
  REQUIRE(handle.has_value());
  auto waiter = [](corio::join_handle<int> h) -> corio::task<int> { co_return co_await h; };
  CHECK(rt.block_on(waiter(std::move(*handle))) == 81);
}

TEST_CASE("runtime: a dropped join handle detaches and the task still runs", "[runtime]") {
  corio::runtime rt(workers(2));
  std::atomic<int> ran{0};
  auto body = [&]() -> corio::task<void> {
    (void)co_await corio::sleep_for(1ms);
    ran.fetch_add(1);
  };
  auto spawner = [&]() -> corio::task<void> {
    for (int i = 0; i < 100; ++i) {
      corio::spawn(body()).detach();
    }
    (void)co_await corio::sleep_for(50ms);
  };
  rt.block_on(spawner());
  for (int i = 0; i < 200 && ran.load() < 100; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  CHECK(ran.load() == 100);
}

TEST_CASE("runtime: exceptions of spawned tasks are rethrown by the join handle", "[runtime]") {
  corio::runtime rt(workers(2));
  auto failing = []() -> corio::task<int> {
    throw std::out_of_range("nope");
    co_return 0;
  };
  auto outer = [&]() -> corio::task<std::string> {
    auto h = corio::spawn(failing());
    try {
      co_await h;
    } catch (const std::out_of_range& e) {
      co_return e.what();
    }
    co_return "no exception";
  };
  CHECK(rt.block_on(outer()) == "nope");
}

TEST_CASE("runtime: corio::spawn outside a runtime is a clear logic error", "[runtime]") {
  CHECK_THROWS_WITH(corio::spawn(square(1)), Catch::Contains("outside a corio runtime"));
}

TEST_CASE("runtime: block_on on a worker thread is refused", "[runtime]") {
  corio::runtime rt(workers(1));
  auto inner = [&]() -> corio::task<std::string> {
    try {
      rt.block_on(square(2));
    } catch (const std::logic_error& e) {
      co_return e.what();
    }
    co_return "accepted";
  };
  CHECK_THAT(rt.block_on(inner()), Catch::Contains("worker thread"));
}

TEST_CASE("runtime: yield_now lets other tasks run on a single worker", "[runtime]") {
  corio::runtime rt(workers(1));
  std::vector<int> order;
  auto a = [&]() -> corio::task<void> {
    for (int i = 0; i < 3; ++i) {
      order.push_back(1);
      co_await corio::yield_now{};
    }
  };
  auto b = [&]() -> corio::task<void> {
    for (int i = 0; i < 3; ++i) {
      order.push_back(2);
      co_await corio::yield_now{};
    }
  };
  auto both = [&]() -> corio::task<void> {
    auto ha = corio::spawn(a());
    auto hb = corio::spawn(b());
    co_await ha;
    co_await hb;
  };
  rt.block_on(both());
  REQUIRE(order.size() == 6);
  // Interleaved, not 1,1,1,2,2,2.
  int switches = 0;
  for (std::size_t i = 1; i < order.size(); ++i) {
    switches += order[i] != order[i - 1] ? 1 : 0;
  }
  CHECK(switches >= 3);
}

namespace {
// A minimal single-worker baton: the holder passes it by waking the other task through
// the scheduler (which uses the LIFO slot), exactly as a lock or channel hand-off does.
struct baton {
  std::coroutine_handle<> waiter{};
  bool signalled = false;
  void signal() {
    if (waiter) {
      corio::port::wake(std::exchange(waiter, {}), corio::port::current_runtime());
    } else {
      signalled = true;
    }
  }
  auto wait() {
    struct aw {
      baton* b;
      bool await_ready() { return std::exchange(b->signalled, false); }
      void await_suspend(std::coroutine_handle<> h) { b->waiter = h; }
      void await_resume() {}
    };
    return aw{this};
  }
};
}  // namespace

namespace {
corio::task<void> ping_player(baton* mine, baton* other, const bool* stop, long* rounds) {
  while (!*stop && *rounds < 10'000'000) {
    other->signal();
    co_await mine->wait();
    ++*rounds;
  }
  other->signal();
}
corio::task<void> mark_ran(bool* flag, long* rounds_seen, const long* rounds) {
  *rounds_seen = *rounds;
  *flag = true;
  co_return;
}
corio::task<void> lifo_game(baton* ping, baton* pong, bool* third_ran, long* rounds, long* rounds_when_third_ran) {
  auto a = corio::spawn(ping_player(ping, pong, third_ran, rounds));
  auto b = corio::spawn(ping_player(pong, ping, third_ran, rounds));
  // Let the ping-pong get going, then queue a third task behind it (a yield puts us at
  // the back of the queue; the players keep handing the worker to each other through
  // the LIFO slot).
  co_await corio::yield_now{};
  co_await corio::yield_now{};
  auto c = corio::spawn(mark_ran(third_ran, rounds_when_third_ran, rounds));
  co_await c;
  co_await a;
  co_await b;
}
}  // namespace

TEST_CASE("runtime: two tasks ping-ponging through the LIFO slot do not starve a third", "[runtime]") {
  corio::runtime rt(workers(1));
  baton ping;
  baton pong;
  bool third_ran = false;
  long rounds = 0;
  long rounds_when_third_ran = -1;
  rt.block_on(lifo_game(&ping, &pong, &third_ran, &rounds, &rounds_when_third_ran));
  CHECK(third_ran);
  INFO("rounds before the third task ran: " << rounds_when_third_ran);
  CHECK(rounds_when_third_ran > 0);     // the ping-pong was running when it was queued
  CHECK(rounds_when_third_ran < 100);   // ...and it got the worker within a few rounds
}

namespace {
corio::task<void> event_player(corio::event* mine, corio::event* other, const std::atomic<bool>* stop,
                               std::atomic<long>* rounds) {
  while (!stop->load(std::memory_order_relaxed)) {
    other->set();
    (void)co_await mine->wait();
    rounds->fetch_add(1, std::memory_order_relaxed);
  }
  other->set();
}
// Sleeps, then hogs its worker (no co_await) until the ping-pong has gone on by 100
// rounds elsewhere — or gives up after 30 s and counts a stall (the bound only turns a
// hang into a failure; 100 rounds take microseconds).
corio::task<int> timer_then_hog(const std::atomic<long>* rounds) {
  int stalls = 0;
  for (int burst = 0; burst < 20 && stalls == 0; ++burst) {
    (void)co_await corio::sleep_for(2ms);
    const long start = rounds->load(std::memory_order_relaxed);
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    while (rounds->load(std::memory_order_relaxed) < start + 100) {
      if (std::chrono::steady_clock::now() > give_up) {
        ++stalls;
        break;
      }
    }
  }
  co_return stalls;
}
corio::task<int> pingpong_beside_a_hog() {
  corio::event ping(corio::event_reset::automatic);
  corio::event pong(corio::event_reset::automatic);
  std::atomic<bool> stop{false};
  std::atomic<long> rounds{0};
  auto a = corio::spawn(event_player(&ping, &pong, &stop, &rounds));
  auto b = corio::spawn(event_player(&pong, &ping, &stop, &rounds));
  int stalls = co_await corio::spawn(timer_then_hog(&rounds));
  stop.store(true, std::memory_order_relaxed);
  co_await a;
  co_await b;
  co_return stalls;
}
}  // namespace

// A task leaving the LIFO slot at the cap wakes no thief when this worker runs it next
// anyway; but a due timer's task runs before the queue, and if it hogs the worker, the
// moved task must be stealable by a woken worker (found by review: it sat behind the hog
// while the other worker slept).
TEST_CASE("runtime: a LIFO task moved behind a due timer's long task is stolen, not stranded", "[runtime]") {
  corio::runtime rt(workers(2));
  // Where the three tasks land is up to the scheduler. With the bug, two runs in three of
  // three attempts stalled; five attempts catch it more often; a correct scheduler never
  // stalls.
  for (int attempt = 0; attempt < 5; ++attempt) {
    CHECK(rt.block_on(pingpong_beside_a_hog()) == 0);
  }
}

TEST_CASE("runtime: invalid configurations are refused with the field named", "[runtime][config]") {
  auto c = workers(0);
  CHECK_THAT(config_error(c), Catch::Contains("workers = 0"));
  c = workers(1);
  c.ring_entries = 1u << 20;
  CHECK_THAT(config_error(c), Catch::Contains("ring_entries"));
  c = workers(1);
  c.ring_entries = 3;
  CHECK_THAT(config_error(c), Catch::Contains("power of two"));
  c = workers(1);
  c.local_queue_capacity = 2;
  CHECK_THAT(config_error(c), Catch::Contains("local_queue_capacity"));
  c = workers(1);
  c.global_queue_interval = 0;
  CHECK_THAT(config_error(c), Catch::Contains("global_queue_interval"));
  c = workers(1);
  c.max_blocking_threads = 0;
  CHECK_THAT(config_error(c), Catch::Contains("max_blocking_threads"));
  c = workers(1);
  c.timer_takeover_delay = std::chrono::microseconds(-1);
  CHECK_THAT(config_error(c), Catch::Contains("timer_takeover_delay"));
}

namespace {
// Runs `body` in a forked child with io_uring_setup refused by a seccomp filter returning
// `err`; returns the child's exit status (0 = the runtime reported the refusal cleanly).
int in_child_with_io_uring_refused(int err) {
  pid_t pid = ::fork();
  if (pid == 0) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
      ::_exit(3);
    }
    try {
      corio::runtime rt(workers(2));
      ::_exit(4);  // should have thrown
    } catch (const std::system_error& e) {
      // The reason, before the error code's own message (which names a seccomp filter
      // whatever the cause), names the causes: ENOSYS is not only a kernel without io_uring.
      const char* causes = err == EPERM ? "(a seccomp filter, a container policy or the kernel.io_uring_disabled"
                                        : "(a kernel built without io_uring, or a seccomp filter that hides it)";
      bool named = std::strstr(e.what(), "io_uring_setup: ") != nullptr && std::strstr(e.what(), causes) != nullptr;
      bool code = e.code() == corio::errc::io_uring_refused;
      ::_exit(named && code ? 0 : 5);
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}
}  // namespace

TEST_CASE("runtime: io_uring refused by a seccomp filter is a clear error, not a crash", "[runtime][config]") {
  CHECK(in_child_with_io_uring_refused(EPERM) == 0);
  CHECK(in_child_with_io_uring_refused(ENOSYS) == 0);
}

TEST_CASE("runtime: spawn after shutdown returns errc::shut_down", "[runtime][shutdown]") {
  corio::runtime rt(workers(2));
  rt.shutdown();
  auto h = rt.spawn(square(3));
  REQUIRE_FALSE(h.has_value());
  CHECK(h.error() == corio::errc::shut_down);
  CHECK_THROWS_AS(rt.block_on(square(3)), std::system_error);
  rt.shutdown();  // idempotent
}

TEST_CASE("runtime: shutdown destroys pending tasks and their locals", "[runtime][shutdown]") {
  std::atomic<int> destroyed{0};
  struct guard {
    std::atomic<int>* counter;
    ~guard() { counter->fetch_add(1); }
  };
  auto forever = [&]() -> corio::task<void> {
    guard g{&destroyed};
    (void)co_await corio::sleep_for(1h);
  };
  corio::join_handle<void> kept;
  {
    corio::runtime rt(workers(2));
    for (int i = 0; i < 100; ++i) {
      auto h = rt.spawn(forever());
      REQUIRE(h);
      if (i == 0) {
        kept = std::move(*h);
      }
    }
    std::this_thread::sleep_for(20ms);
    CHECK(rt.metrics().live_tasks == 100);
  }
  CHECK(destroyed.load() == 100);
  // The handle outlives the runtime and reports the shutdown.
  CHECK(kept.is_finished());
}

TEST_CASE("runtime: block_on returns errc::shut_down when the runtime stops under it", "[runtime][shutdown]") {
  corio::runtime rt(workers(1));
  std::thread stopper([&] {
    std::this_thread::sleep_for(50ms);
    rt.shutdown();
  });
  auto forever = []() -> corio::task<void> { (void)co_await corio::sleep_for(1h); };
  try {
    rt.block_on(forever());
    FAIL("block_on returned normally");
  } catch (const std::system_error& e) {
    CHECK(e.code() == corio::errc::shut_down);
  }
  stopper.join();
}

TEST_CASE("runtime: creating and destroying a runtime leaves no file descriptors behind", "[runtime][shutdown]") {
  std::size_t before = corio_test::open_fd_count();
  for (int i = 0; i < 20; ++i) {
    corio::runtime rt(workers(2));
    CHECK(rt.block_on(square(i)) == i * i);
  }
  CHECK(corio_test::open_fd_count() == before);
}

TEST_CASE("runtime: metrics count tasks, parks, SQEs, CQEs and kernel entries per worker", "[runtime][metrics]") {
  corio::runtime rt(workers(2));
  auto work = []() -> corio::task<void> {
    for (int i = 0; i < 10; ++i) {
      (void)co_await corio::io::nop();
    }
    (void)co_await corio::sleep_for(5ms);
  };
  rt.block_on(work());
  auto m = rt.metrics();
  REQUIRE(m.workers.size() == 2);
  std::uint64_t tasks = 0, sqes = 0, cqes = 0, parks = 0, enters = 0;
  for (auto& w : m.workers) {
    tasks += w.tasks_run;
    sqes += w.sqes_submitted;
    cqes += w.cqes_reaped;
    parks += w.parks;
    enters += w.ring_enters;
  }
  CHECK(tasks >= 11);
  CHECK(sqes >= 10);
  CHECK(cqes >= 10);
  CHECK(parks >= 1);
  CHECK(enters >= parks);  // every park is an enter
}

TEST_CASE("runtime: an idle runtime uses no measurable CPU", "[runtime]") {
  corio::runtime rt(workers(2));
  rt.block_on(square(1));
  auto usec = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1'000'000L + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
  };
  // The least of three 500 ms windows: a runtime that wakes while idle does so in every
  // window, while one hiccup of a loaded VM (once 10 ms in a CI run, against 0.15-0.45
  // ms usually) lands in one.
  long least = LONG_MAX;
  for (int window = 0; window < 3 && least >= 5'000; ++window) {
    rusage before{};
    ::getrusage(RUSAGE_SELF, &before);
    std::this_thread::sleep_for(500ms);
    rusage after{};
    ::getrusage(RUSAGE_SELF, &after);
    const long used = usec(after) - usec(before);
    UNSCOPED_INFO("CPU used while idle for 500 ms (window " << window << "): " << used << " us");
    least = std::min(least, used);
  }
  CHECK(least < 5'000);  // < 1% of 500 ms
}

TEST_CASE("runtime: the eventfd wake fallback works like the futex wake", "[runtime]") {
  auto c = workers(2);
  c.wake = corio::wake_mechanism::eventfd;
  std::size_t before = corio_test::open_fd_count();
  {
    corio::runtime rt(c);
    CHECK(rt.block_on(spawn_and_sum(2000)) > 0);
    auto sleeper = []() -> corio::task<int> {
      (void)co_await corio::sleep_for(2ms);
      co_return 5;
    };
    CHECK(rt.block_on(sleeper()) == 5);
  }
  CHECK(corio_test::open_fd_count() == before);
}

TEST_CASE("runtime: rings without DEFER_TASKRUN behave the same", "[runtime]") {
  auto c = workers(2);
  c.defer_taskrun = false;
  corio::runtime rt(c);
  CHECK(rt.block_on(spawn_and_sum(2000)) > 0);
  auto io = []() -> corio::task<bool> {
    auto r = co_await corio::io::nop();
    co_return r.has_value();
  };
  CHECK(rt.block_on(io()));
}

namespace {
corio::task<int> slow_value(std::chrono::milliseconds d, int v) {
  (void)co_await corio::sleep_for(d);
  co_return v;
}
corio::task<std::error_code> cancelled_join_wait(corio::join_handle<int>* h) {
  auto r = co_await corio::timeout(h->wait({}), 10ms);  // stops the wait, not the task
  co_return r ? std::error_code{} : r.error();
}
corio::task<int> join_again(corio::join_handle<int>* h) { co_return co_await *h; }
}  // namespace

TEST_CASE("runtime: a join wait can be cancelled and the handle awaited again", "[runtime][cancel]") {
  corio::runtime rt(workers(2));
  auto h = rt.spawn(slow_value(80ms, 9));
  REQUIRE(h);
  CHECK(rt.block_on(cancelled_join_wait(&*h)) == std::errc::timed_out);
  CHECK_FALSE(h->is_finished());
  CHECK(rt.block_on(join_again(&*h)) == 9);
}

namespace {
corio::task<int> await_foreign(corio::join_handle<int>* h) {
  try {
    co_return co_await *h;
  } catch (const std::system_error& e) {
    co_return e.code() == corio::errc::shut_down ? -1 : -2;
  }
}
corio::task<int> never_returns() {
  (void)co_await corio::sleep_for(1h);
  co_return 0;
}
}  // namespace

TEST_CASE("runtime: a task awaiting a handle of a runtime that shuts down is woken", "[runtime][shutdown]") {
  corio::runtime waiter_rt(workers(1));
  auto a = std::make_unique<corio::runtime>(workers(1));
  auto h = a->spawn(never_returns());
  REQUIRE(h);
  auto waiting = waiter_rt.spawn(await_foreign(&*h));
  REQUIRE(waiting);
  std::this_thread::sleep_for(20ms);
  a.reset();  // destroys the awaited task: the waiter in the other runtime must wake
  auto join = [](corio::join_handle<int> j) -> corio::task<int> { co_return co_await j; };
  CHECK(waiter_rt.block_on(join(std::move(*waiting))) == -1);
}

TEST_CASE("runtime: a waiter destroyed by its runtime's shutdown is not woken later", "[runtime][shutdown]") {
  corio::runtime awaited_rt(workers(1));
  auto h = awaited_rt.spawn(slow_value(50ms, 3));
  REQUIRE(h);
  {
    corio::runtime waiter_rt(workers(1));
    REQUIRE(waiter_rt.spawn(await_foreign(&*h)));
    std::this_thread::sleep_for(10ms);
  }  // the waiting frame is destroyed while suspended on the handle
  std::this_thread::sleep_for(80ms);  // the task finishes: it must not wake the dead frame
  CHECK(h->is_finished());
}

namespace {
corio::task<bool> sees_inherited_stop() {
  auto inner = []() -> corio::task<bool> {
    std::stop_token t = co_await corio::get_stop_token();
    (void)co_await corio::sleep_for(1h);  // cancelled by the timeout below
    co_return t.stop_requested();
  };
  auto r = co_await corio::timeout(inner(), 10ms);
  co_return !r && r.error() == std::errc::timed_out;
}
}  // namespace

TEST_CASE("runtime: get_stop_token yields the token inherited from timeout", "[runtime][cancel]") {
  corio::runtime rt(workers(1));
  CHECK(rt.block_on(sees_inherited_stop()));
}

namespace {
// Sets an environment variable for one scope, restoring the former value after.
class env_guard {
 public:
  env_guard(const char* name, const char* value) : m_name(name) {
    if (const char* old = std::getenv(name)) {
      m_old = old;
      m_had = true;
    }
    ::setenv(name, value, 1);
  }
  env_guard(const env_guard&) = delete;
  env_guard& operator=(const env_guard&) = delete;
  ~env_guard() {
    if (m_had) {
      ::setenv(m_name, m_old.c_str(), 1);
    } else {
      ::unsetenv(m_name);
    }
  }

 private:
  const char* m_name;
  std::string m_old;
  bool m_had = false;
};
}  // namespace

TEST_CASE("runtime: CORIO_WORKERS sets the default worker count", "[runtime][config]") {
  env_guard env("CORIO_WORKERS", "3");
  corio::runtime_config c;
  CHECK(c.workers == 3);
  corio::runtime rt(c);
  CHECK(rt.worker_count() == 3);
}

TEST_CASE("runtime: a CORIO_WORKERS that is not a number in 1..1024 is refused with the variable named",
          "[runtime][config]") {
  for (const char* bad : {"abc", "0", "1025", "5000", "-1", "3x", " 2", "99999999999999999999"}) {
    env_guard env("CORIO_WORKERS", bad);
    INFO("CORIO_WORKERS=" << bad);
    CHECK_THAT(config_error(corio::runtime_config{}), Catch::Contains("CORIO_WORKERS"));
  }
  env_guard env("CORIO_WORKERS", "abc");
  corio::runtime rt(workers(2));  // a count set in the configuration wins
  CHECK(rt.worker_count() == 2);
}
