// Tests for ipc/process/process_pool.hpp: typed and byte jobs, order, unordered results,
// batched maps, exceptions, a worker crashing mid-job, shutdown.
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "pool_helpers.hpp"
#include "process_helpers.hpp"

using namespace std::chrono_literals;
using corio::ipc::pool_errc;
using corio::ipc::process_pool;
using corio_test::run_with_pool;

namespace {

long square(long x) { return x * x; }
std::string shout(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](char c) { return static_cast<char>(std::toupper(c)); });
  return s + "!";
}
int crash_on_13(int x) {
  if (x == 13) {
    ::raise(SIGKILL);  // the worker dies mid-job
  }
  return x + 1;
}
int throw_on_7(int x) {
  if (x == 7) {
    throw std::runtime_error("seven");
  }
  return x;
}
pid_t my_pid(int) { return ::getpid(); }
void reverse_bytes(std::span<const std::byte> in, std::vector<std::byte>& out) {
  out.insert(out.end(), in.rbegin(), in.rend());
}

/// 0: returns at once. Otherwise: blocks SIGUSR1 on this thread, sends it to the
/// process and takes it with sigtimedwait (5 s at most); returns the signal taken (-1:
/// none). A thread of the worker that did not block it would take it instead, and its
/// default action would end the worker.
int take_own_signal(int x) {
  if (x == 0) {
    return 0;
  }
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
  ::kill(::getpid(), SIGUSR1);
  const timespec limit{5, 0};
  int got = ::sigtimedwait(&usr1, nullptr, &limit);
  ::pthread_sigmask(SIG_UNBLOCK, &usr1, nullptr);
  return got;
}

corio::task<std::vector<corio::result<int>>> signal_after_quick_jobs(process_pool& p) {
  std::vector<int> xs(21, 0);
  xs[20] = 1;  // after 20 quick jobs read with it: the worker's writing thread is there
  co_return co_await p.map<&take_own_signal>(std::move(xs));
}

struct basics {
  std::vector<corio::result<long>> squares;
  std::vector<corio::result<std::string>> shouts;
  corio::result<std::vector<long>> batched;
  std::vector<std::pair<std::size_t, corio::result<std::vector<std::byte>>>> unordered;
  corio::result<std::vector<std::byte>> one;
  corio::result<int> single;
  std::size_t distinct_pids = 0;
};

corio::task<basics> pool_basics(process_pool& p) {
  basics b;
  std::vector<long> xs(1000);
  for (long i = 0; i < 1000; ++i) {
    xs[static_cast<std::size_t>(i)] = i;
  }
  b.squares = co_await p.map<&square>(xs);
  std::vector<std::string> words;
  words.emplace_back("a");
  words.emplace_back("bc");
  words.emplace_back("");
  b.shouts = co_await p.map<&shout>(std::move(words));
  b.batched = co_await p.map_batched<&square>(xs, 64);
  std::vector<std::vector<std::byte>> jobs;
  for (int i = 0; i < 10; ++i) {
    jobs.push_back(std::vector<std::byte>(static_cast<std::size_t>(i), std::byte{static_cast<unsigned char>(i)}));
  }
  b.unordered = co_await p.map_unordered(&reverse_bytes, std::move(jobs));
  std::vector<std::byte> three(3);
  three[0] = std::byte{1};
  three[1] = std::byte{2};
  three[2] = std::byte{3};
  b.one = co_await p.submit(&reverse_bytes, std::move(three));
  b.single = co_await p.call<&throw_on_7>(3);
  auto pids = co_await p.map<&my_pid>(std::vector<int>(200, 0));
  std::vector<pid_t> seen;
  for (auto& r : pids) {
    if (r) {
      seen.push_back(*r);
    }
  }
  std::sort(seen.begin(), seen.end());
  b.distinct_pids = static_cast<std::size_t>(std::unique(seen.begin(), seen.end()) - seen.begin());
  co_return b;
}

}  // namespace

TEST_CASE("process_pool: typed, batched, unordered and byte jobs give the right results", "[process][pool]") {
  auto b = run_with_pool({.workers = 2}, &pool_basics);
  REQUIRE(b.squares.size() == 1000);
  bool all = true;
  for (std::size_t i = 0; i < 1000; ++i) {
    all = all && b.squares[i] && *b.squares[i] == static_cast<long>(i * i);
  }
  CHECK(all);
  REQUIRE(b.shouts.size() == 3);
  CHECK(*b.shouts[0] == "A!");
  CHECK(*b.shouts[1] == "BC!");
  CHECK(*b.shouts[2] == "!");
  REQUIRE(b.batched);
  REQUIRE(b.batched->size() == 1000);
  CHECK((*b.batched)[999] == 999L * 999L);
  REQUIRE(b.unordered.size() == 10);
  std::vector<std::size_t> idx;
  for (auto& [i, r] : b.unordered) {
    idx.push_back(i);
    CHECK(r);
    CHECK(r->size() == i);
  }
  std::sort(idx.begin(), idx.end());
  CHECK(idx == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  REQUIRE(b.one);
  CHECK((*b.one == std::vector<std::byte>{std::byte{3}, std::byte{2}, std::byte{1}}));
  REQUIRE(b.single);
  CHECK(*b.single == 3);
  CHECK(b.distinct_pids == 2);
}

namespace {
struct crash_seen {
  std::vector<corio::result<int>> results;
  std::vector<corio::result<int>> after;
  std::vector<corio::result<int>> thrown;
  std::size_t replaced = 0;
};
corio::task<crash_seen> pool_crash(process_pool& p) {
  crash_seen s;
  std::vector<int> xs(100);
  for (int i = 0; i < 100; ++i) {
    xs[static_cast<std::size_t>(i)] = i;
  }
  s.results = co_await p.map<&crash_on_13>(xs);
  std::vector<int> small(3);
  small[0] = 1;
  small[1] = 2;
  small[2] = 3;
  s.after = co_await p.map<&crash_on_13>(small);
  small[0] = 6;
  small[1] = 7;
  small[2] = 8;
  s.thrown = co_await p.map<&throw_on_7>(small);
  s.replaced = p.replaced();
  co_return s;
}
}  // namespace

TEST_CASE("process_pool: a worker crashing mid-job fails that job only and is replaced", "[process][pool]") {
  auto s = run_with_pool({.workers = 2, .window = 8}, &pool_crash);
  REQUIRE(s.results.size() == 100);
  int failed = 0;
  bool others_ok = true;
  for (int i = 0; i < 100; ++i) {
    auto& r = s.results[static_cast<std::size_t>(i)];
    if (i == 13) {
      failed += !r && r.error() == pool_errc::worker_crashed;
    } else {
      others_ok = others_ok && r && *r == i + 1;
    }
  }
  CHECK(failed == 1);
  CHECK(others_ok);
  CHECK(s.replaced == 1);
  REQUIRE(s.after.size() == 3);
  CHECK((s.after[0] && *s.after[0] == 2 && s.after[2] && *s.after[2] == 4));
  REQUIRE(s.thrown.size() == 3);
  CHECK(s.thrown[0]);
  CHECK((!s.thrown[1] && s.thrown[1].error() == pool_errc::job_threw));
  CHECK(s.thrown[2]);
  CHECK(corio_test::zombies_after_settle(2000ms) == 0);
}

namespace {
int exit_5_on_0(int x) {
  if (x == 0) {
    ::_exit(5);  // the worker exits mid-job
  }
  return x;
}

struct death_seen {
  corio::ipc::pool_result<int> killed;
  corio::ipc::pool_result<int> exited;
  std::vector<pid_t> pids;
  std::size_t replaced_after_killed = 0;
  std::size_t replaced_after_exited = 0;
};
corio::task<death_seen> pool_deaths(process_pool& p) {
  death_seen s;
  s.pids = p.worker_pids();
  s.killed = co_await p.call<&crash_on_13>(13);
  s.replaced_after_killed = p.replaced();  // at once: no wait for the replacement's fork
  s.exited = co_await p.call<&exit_5_on_0>(0);
  s.replaced_after_exited = p.replaced();
  co_return s;
}

corio::task<std::error_code> start_error(std::size_t workers) {
  auto pool = co_await process_pool::start(workers);
  co_return pool ? std::error_code{} : pool.error();
}
}  // namespace

TEST_CASE("process_pool: a job whose worker died says which signal or exit status ended it, and replaced() counts it at once",
          "[process][pool]") {
  auto s = run_with_pool({.workers = 1}, &pool_deaths);
  REQUIRE(s.pids.size() == 1);
  REQUIRE_FALSE(s.killed);
  CHECK(s.killed.error() == pool_errc::worker_crashed);
  CHECK(s.killed.detail() == "worker " + std::to_string(s.pids[0]) + " ended with signal 9 (Killed)");
  CHECK(s.killed.error_message().find(": worker ") != std::string::npos);
  CHECK(s.killed.exception_message().empty());
  REQUIRE_FALSE(s.exited);
  CHECK(s.exited.error() == pool_errc::worker_crashed);
  CHECK(s.exited.detail().find(" ended with exit code 5") != std::string::npos);
  CHECK(s.replaced_after_killed == 1);
  CHECK(s.replaced_after_exited == 2);
}

// A job that sends a signal to its own process and waits for it on its thread gets it:
// the worker's result-writing thread blocks every signal. (Before, the signal went to
// that thread, whose default action ended the worker: the job failed as crashed.)
TEST_CASE("process_pool: a signal a job sends its own process reaches the job's thread", "[process][pool]") {
  auto results = run_with_pool({.workers = 1}, &signal_after_quick_jobs);
  REQUIRE(results.size() == 21);
  for (std::size_t i = 0; i < 20; ++i) {
    CHECK(results[i]);
  }
  REQUIRE(results[20]);
  CHECK(*results[20] == SIGUSR1);
}

TEST_CASE("process_pool: start(0) is invalid_argument, not a pool of one", "[process][pool]") {
  REQUIRE(corio_test::fork_server_started);
  corio::runtime rt(corio_test::workers(2));
  CHECK(rt.block_on(start_error(0)) == std::errc::invalid_argument);
  CHECK(rt.block_on(start_error(1)) == std::error_code{});
}

namespace {

// Writes a result frame for a job that does not exist onto the worker's socket (the only
// socket in a worker), then runs on: the parent must treat it as a protocol error.
int corrupt_stream(int x) {
  for (int fd = 3; fd < 1024; ++fd) {
    struct stat st{};
    if (::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
      corio::ipc::detail::result_header h{0, 0, 0xdeadbeefULL};
      (void)!::write(fd, &h, sizeof h);
    }
  }
  std::this_thread::sleep_for(std::chrono::seconds(10));
  return x;
}
int sleep_long(int x) {
  std::this_thread::sleep_for(std::chrono::seconds(10));
  return x;
}
int sleep_50ms(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return x;
}
int die_slowly_on_0(int x) {
  if (x == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::raise(SIGKILL);
  }
  return x + 1;
}

struct protocol_seen {
  std::vector<corio::result<int>> bad;
  std::vector<corio::result<long>> after;
};
corio::task<protocol_seen> pool_protocol_error(process_pool& p) {
  protocol_seen s;
  std::vector<int> one(1, 1);
  s.bad = co_await p.map<&corrupt_stream>(std::move(one));
  std::vector<long> two(2, 3);
  two[1] = 4;
  s.after = co_await p.map<&square>(std::move(two));
  co_return s;
}

corio::task<std::vector<corio::result<int>>> map_sleepers(process_pool* p, std::vector<int> xs) {
  co_return co_await p->map<&sleep_50ms>(std::move(xs));
}
corio::task<std::vector<corio::result<int>>> map_sleep_long(process_pool* p) {
  std::vector<int> one(1, 1);
  co_return co_await p->map<&sleep_long>(std::move(one));
}

struct concurrent_shutdown_seen {
  bool finished = false;
  int ok = 0;
  std::size_t size_before = 0;  // size() and worker_pids() before and after the shutdown
  std::size_t pids_before = 0;
  std::size_t size_after = 9;
  std::size_t pids_after = 9;
};
corio::task<concurrent_shutdown_seen> pool_concurrent_shutdown(process_pool& pool) {
  concurrent_shutdown_seen s;
  process_pool* p = &pool;
  s.size_before = p->size();
  s.pids_before = p->worker_pids().size();
  std::vector<int> four(4, 1);
  auto jobs = corio::spawn(map_sleepers(p, std::move(four)));
  (void)co_await corio::sleep_for(20ms);  // the jobs are in flight
  auto all = co_await corio::timeout(corio::when_all(p->shutdown(), p->shutdown(), p->shutdown()), 10s);
  s.finished = all.has_value();
  auto r = co_await jobs;
  for (auto& x : r) {
    s.ok += x.has_value();
  }
  co_await p->shutdown();  // idempotent, after the fact too
  s.size_after = p->size();
  s.pids_after = p->worker_pids().size();
  co_return s;
}

struct late_call_seen {
  corio::result<long> late = 0;               // a call made while shutdown() waits for a job
  std::vector<corio::result<int>> running;    // the job it waits for
  bool finished = false;                      // shutdown() then ended (within 10 s)
};
corio::task<late_call_seen> pool_call_after_shutdown_began(process_pool& pool) {
  late_call_seen s;
  process_pool* p = &pool;
  auto job = corio::spawn(map_sleepers(p, std::vector<int>(1, 1)));
  (void)co_await corio::sleep_for(20ms);  // the job is in flight (it sleeps 50 ms)
  // Begins the shutdown and stops waiting for it after 1 ms; the shutdown goes on.
  (void)co_await corio::timeout(p->shutdown(), 1ms);
  s.late = co_await corio::timeout(p->call<&square>(3), 10s);
  s.running = co_await job;
  s.finished = (co_await corio::timeout(p->shutdown(), 10s)).has_value();
  co_return s;
}

struct drop_seen {
  pid_t worker = -1;
  std::vector<corio::result<int>> r;
};
corio::task<drop_seen> pool_dropped_mid_job() {
  drop_seen s;
  auto pool = co_await process_pool::start(1);
  if (!pool) {
    co_return s;
  }
  s.worker = (*pool)->worker_pids().front();
  auto j = corio::spawn(map_sleep_long(pool->get()));
  (void)co_await corio::sleep_for(100ms);  // the job is running in the worker
  pool->reset();                            // no shutdown(): the destructor
  s.r = co_await j;
  co_return s;
}

struct stopped_server_seen {
  std::vector<corio::result<int>> r;
  bool started = false;
};
corio::task<stopped_server_seen> pool_crash_without_replacement() {
  stopped_server_seen s;
  auto pool = co_await process_pool::start(2);
  if (!pool) {
    co_return s;
  }
  s.started = true;
  corio::ipc::fork_server::stop();  // no replacement can be forked
  std::vector<int> xs(10);
  for (int i = 0; i < 10; ++i) {
    xs[static_cast<std::size_t>(i)] = i;
  }
  s.r = co_await (*pool)->map<&die_slowly_on_0>(xs);
  co_await (*pool)->shutdown();
  co_return s;
}

struct workerless_seen {
  bool started = false;
  bool replaced = false;    // replaced() counted the killed worker
  std::size_t size = 9;     // size() and worker_pids() once its replacement failed
  std::size_t pids = 9;
  std::error_code call;     // how the call made afterwards ended (within 3 s)
  bool shut_down = false;   // shutdown() then ended (within 3 s)
};
corio::task<workerless_seen> pool_without_workers() {
  workerless_seen s;
  auto pool = co_await process_pool::start(1);
  if (!pool) {
    co_return s;
  }
  s.started = true;
  corio::ipc::fork_server::stop();  // no replacement can be forked
  ::kill((*pool)->worker_pids().front(), SIGKILL);
  for (int i = 0; i < 5000 && (*pool)->replaced() == 0; ++i) {
    (void)co_await corio::sleep_for(1ms);
  }
  s.replaced = (*pool)->replaced() == 1;
  (void)co_await corio::sleep_for(200ms);  // the replacement's fork has failed by now
  s.size = (*pool)->size();
  s.pids = (*pool)->worker_pids().size();
  auto r = co_await corio::timeout((*pool)->call<&square>(4), 3s);
  s.call = r ? std::error_code{} : r.error();  // (a hang: the timeout's error)
  auto done = co_await corio::timeout((*pool)->shutdown(), 3s);
  s.shut_down = done.has_value();
  co_return s;
}

}  // namespace

TEST_CASE("process_pool: a result frame for no job in flight is a protocol error, recovered as a crash",
          "[process][pool]") {
  auto s = run_with_pool({.workers = 1}, &pool_protocol_error);
  REQUIRE(s.bad.size() == 1);
  CHECK((!s.bad[0] && s.bad[0].error() == pool_errc::worker_crashed));
  REQUIRE(s.after.size() == 2);
  CHECK((s.after[0] && *s.after[0] == 9 && s.after[1] && *s.after[1] == 16));
}

TEST_CASE("process_pool: concurrent shutdown() calls all complete", "[process][pool]") {
  auto s = run_with_pool({.workers = 2}, &pool_concurrent_shutdown);
  CHECK(s.finished);
  CHECK(s.ok == 4);
  CHECK((s.size_before == 2 && s.pids_before == 2));
  CHECK((s.size_after == 0 && s.pids_after == 0));  // reaped: nothing left to count or signal
  CHECK(corio_test::zombies_after_settle(2000ms) == 0);
}

TEST_CASE("process_pool: a call made after shutdown() began fails with shut_down; the jobs before it finish",
          "[process][pool]") {
  // It used to be accepted and run: shutdown() waited for it too, so calls that kept
  // coming kept the shutdown from ever ending.
  auto s = run_with_pool({.workers = 1}, &pool_call_after_shutdown_began);
  CHECK((!s.late && s.late.error() == pool_errc::shut_down));
  REQUIRE(s.running.size() == 1);
  CHECK((s.running[0] && *s.running[0] == 1));
  CHECK(s.finished);
}

TEST_CASE("process_pool: destroying the pool SIGKILLs workers mid-job", "[process][pool]") {
  REQUIRE(corio_test::fork_server_started);
  drop_seen s;
  {
    corio::runtime rt(corio_test::workers(2));
    s = rt.block_on(pool_dropped_mid_job());
  }
  REQUIRE(s.worker > 0);
  REQUIRE(s.r.size() == 1);
  CHECK((!s.r[0] && s.r[0].error() == pool_errc::shut_down));
  // The job sleeps 10 s: only a SIGKILL makes the worker go this soon.
  CHECK(corio_test::pid_gone_within(s.worker, 3000ms));
}

// Keep last: it stops the process-wide fork server (restarted at the end).
TEST_CASE("process_pool: a crash with no replacement possible hands the jobs to the survivors", "[process][pool]") {
  REQUIRE(corio_test::fork_server_started);
  stopped_server_seen s;
  {
    corio::runtime rt(corio_test::workers(2));
    s = rt.block_on(pool_crash_without_replacement());
  }
  (void)corio::ipc::fork_server::start();  // single-threaded again (the runtime is gone)
  REQUIRE(s.started);
  REQUIRE(s.r.size() == 10);
  CHECK((!s.r[0] && s.r[0].error() == pool_errc::worker_crashed));
  bool others_ok = true;
  for (int i = 1; i < 10; ++i) {
    auto& r = s.r[static_cast<std::size_t>(i)];
    others_ok = others_ok && r && *r == i + 1;
  }
  CHECK(others_ok);
}

// Also stops the fork server: keep after the others.
TEST_CASE("process_pool: a call with no worker alive and none startable fails with no_workers and shutdown() ends",
          "[process][pool]") {
  REQUIRE(corio_test::fork_server_started);
  workerless_seen s;
  {
    corio::runtime rt(corio_test::workers(2));
    s = rt.block_on(pool_without_workers());
  }
  (void)corio::ipc::fork_server::start();  // single-threaded again (the runtime is gone)
  REQUIRE(s.started);
  CHECK(s.replaced);
  // The dead worker is neither counted nor listed (its pid was reaped; it may be reused).
  CHECK(s.size == 0);
  CHECK(s.pids == 0);
  CHECK(s.call == pool_errc::no_workers);
  CHECK(s.shut_down);
}
