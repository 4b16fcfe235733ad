// Tests for process_pool's cancellation (explicit and inherited tokens), the exception
// text of a throwing job (pool_result), and map_stream (results as they complete).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>

#include "pool_helpers.hpp"
#include "process_helpers.hpp"

using namespace std::chrono_literals;
using corio::ipc::pool_errc;
using corio::ipc::process_pool;
using corio_test::run_with_pool;

namespace {

using steady = std::chrono::steady_clock;

long square(long x) { return x * x; }
int throw_on_7(int x) {
  if (x == 7) {
    throw std::runtime_error("seven is not allowed");
  }
  return x;
}
int throw_int(int) { throw 42; }
long throw_in_batch(long x) {
  if (x == 500) {
    throw std::invalid_argument("bad item 500");
  }
  return x;
}
/// Sleeps x milliseconds, then yields x.
int sleep_ms(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(x));
  return x;
}

/// A byte job: appends one byte to the file named by the job (how many jobs ran, seen
/// from the parent), then sleeps 100 ms.
void mark_then_sleep(std::span<const std::byte> job, std::vector<std::byte>& out) {
  std::string path(reinterpret_cast<const char*>(job.data()), job.size());
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd >= 0) {
    (void)!::write(fd, "x", 1);
    ::close(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  out.push_back(std::byte{1});
}

/// A byte job that holds its worker until the file named by the job exists (the parent
/// opens the gate), so a test can order "the parent saw X" before "this job ended" by
/// construction instead of by a margin of time. Gives up after 60 s (a broken test must not
/// hang CI).
void wait_for_gate(std::span<const std::byte> job, std::vector<std::byte>& out) {
  std::string path(reinterpret_cast<const char*>(job.data()), job.size());
  struct stat st{};
  for (int i = 0; i < 60'000 && ::stat(path.c_str(), &st) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  out.push_back(std::byte{1});
}
void open_gate(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
  }
}

/// A fresh empty counter file; its size counts the jobs that ran.
std::string counter_file() {
  char path[] = "/tmp/corio-pool-ran-XXXXXX";
  int fd = ::mkstemp(path);
  if (fd >= 0) {
    ::close(fd);
  }
  return path;
}
long jobs_ran(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long>(st.st_size) : -1;
}
std::vector<std::vector<std::byte>> marking_jobs(const std::string& path, int n) {
  std::vector<std::vector<std::byte>> jobs;
  auto* p = reinterpret_cast<const std::byte*>(path.data());
  for (int i = 0; i < n; ++i) {
    jobs.emplace_back(p, p + path.size());
  }
  return jobs;
}

long ms_since(steady::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0).count());
}

corio::task<void> stop_after(std::stop_source* src, std::chrono::milliseconds d) {
  (void)co_await corio::sleep_for(d);
  src->request_stop();
}

struct cancel_seen {
  std::error_code timed;       // timeout(map) of 40 jobs × 100 ms, cut at 250 ms
  long ran_at_timeout = 0;     // how many of the 40 jobs had started when that call returned
  long ran_after_timeout = 0;  // how many of the 40 jobs ran
  std::size_t explicit_ok = 0;
  std::size_t explicit_cancelled = 0;
  long ran_at_explicit = 0;  // started when the explicitly stopped map returned
  long ran_after_explicit = 0;
  bool after_ok = false;  // a map on the same pool afterwards
  bool shut_down = false;
};

// On the default window: jobs are queued in the workers.
corio::task<cancel_seen> pool_cancelled_maps(process_pool& p, std::string path1, std::string path2) {
  cancel_seen s;
  auto timed = co_await corio::timeout(p.map(&mark_then_sleep, marking_jobs(path1, 40)), 250ms);
  s.ran_at_timeout = jobs_ran(path1);
  s.timed = timed ? std::error_code{} : timed.error();
  (void)co_await corio::sleep_for(300ms);  // the jobs that were running end
  s.ran_after_timeout = jobs_ran(path1);

  std::stop_source src;
  auto stopper = corio::spawn(stop_after(&src, 250ms));
  auto r = co_await p.map(&mark_then_sleep, marking_jobs(path2, 40), src.get_token());
  s.ran_at_explicit = jobs_ran(path2);
  co_await stopper;
  for (auto& x : r) {
    s.explicit_ok += x.has_value();
    s.explicit_cancelled += !x && x.error() == std::errc::operation_canceled;
  }
  (void)co_await corio::sleep_for(300ms);
  s.ran_after_explicit = jobs_ran(path2);

  std::vector<long> xs(100, 3);
  auto after = co_await p.map<&square>(xs);
  s.after_ok = after.size() == 100;
  for (auto& x : after) {
    s.after_ok = s.after_ok && x && *x == 9;
  }
  auto done = co_await corio::timeout(p.shutdown(), 5s);
  s.shut_down = done.has_value();
  co_return s;
}

}  // namespace

TEST_CASE("process_pool: a cancelled map returns at once, its unstarted jobs never run, the pool goes on",
          "[process][pool][cancel]") {
  std::string path1 = counter_file();
  std::string path2 = counter_file();
  auto s = run_with_pool({.workers = 2}, &pool_cancelled_maps, path1, path2);
  ::unlink(path1.c_str());
  ::unlink(path2.c_str());
  CHECK(s.timed == std::errc::timed_out);
  // Every job marks the file when it starts: a map that had waited for its jobs would have
  // seen all 40 start (no wall-clock bound: it holds on a slow machine too).
  CHECK(s.ran_at_timeout < 40);
  // 250 ms on 2 workers: about 6 started (2 × 3); generous for a loaded machine.
  CHECK(s.ran_after_timeout >= 2);
  CHECK(s.ran_after_timeout <= 16);
  CHECK(s.ran_at_explicit < 40);
  CHECK(s.explicit_ok + s.explicit_cancelled == 40);
  CHECK(s.explicit_ok >= 2);         // the first two ended at ~100 ms
  CHECK(s.explicit_cancelled >= 24);
  CHECK(s.ran_after_explicit <= 16);
  CHECK(s.after_ok);
  CHECK(s.shut_down);
  CHECK(corio_test::zombies_after_settle(2000ms) == 0);
}

namespace {

struct submit_seen {
  std::error_code timed;
  bool first_done_at_timeout = true;  // had the job holding the worker ended when the timeout did?
  bool first_ok = false;
  long ran = -1;
  std::error_code pre_stopped;
  std::size_t unordered_entries = 0;    // map_unordered of 3 jobs with a stopped token
  std::size_t unordered_cancelled = 0;  // ... each reported as operation_canceled
};

/// Holds the pool's one worker until `gate` is opened; sets *done when its job has ended.
corio::task<bool> hold_worker(process_pool* p, std::string gate, std::atomic<bool>* done) {
  auto* b = reinterpret_cast<const std::byte*>(gate.data());
  auto r = co_await p->submit(&wait_for_gate, std::vector<std::byte>(b, b + gate.size()));
  // release: the flag is read on another worker after the timeout; no data rides on it,
  // but acquire/release keeps the reasoning simple.
  done->store(true, std::memory_order_release);
  co_return r.has_value();
}

corio::task<submit_seen> pool_timed_submit(process_pool& pool, std::string path) {
  submit_seen s;
  process_pool* p = &pool;
  auto jobs = marking_jobs(path, 1);
  std::string gate = path + ".gate";
  std::atomic<bool> first_done{false};
  auto first = corio::spawn(hold_worker(p, gate, &first_done));  // occupies the one worker
  (void)co_await corio::sleep_for(20ms);
  auto timed = co_await corio::timeout(p->submit(&mark_then_sleep, std::move(jobs[0])), 30ms);
  s.first_done_at_timeout = first_done.load(std::memory_order_acquire);
  s.timed = timed ? std::error_code{} : timed.error();
  open_gate(gate);
  s.first_ok = co_await first;
  ::unlink(gate.c_str());
  std::stop_source stopped;
  stopped.request_stop();
  auto pre = co_await p->call<&sleep_ms>(1000, stopped.get_token());
  s.pre_stopped = pre ? std::error_code{} : pre.error();
  auto unordered = co_await p->map_unordered(&mark_then_sleep, marking_jobs(path, 3), stopped.get_token());
  s.unordered_entries = unordered.size();
  for (auto& [index, r] : unordered) {
    s.unordered_cancelled += (index < 3 && !r && r.error() == std::errc::operation_canceled) ? 1 : 0;
  }
  co_await p->shutdown();  // (again after the body: idempotent)
  s.ran = jobs_ran(path);
  co_return s;
}

}  // namespace

TEST_CASE("process_pool: a timeout around submit ends it at once and the queued job never runs",
          "[process][pool][cancel]") {
  std::string path = counter_file();
  auto s = run_with_pool({.workers = 1}, &pool_timed_submit, path);
  ::unlink(path.c_str());
  CHECK(s.timed == std::errc::timed_out);
  // The worker was held until after the timeout returned (the gate opens only then), so the
  // timeout ended the wait itself, not a worker becoming free: by construction, on any machine.
  CHECK_FALSE(s.first_done_at_timeout);
  CHECK(s.first_ok);
  CHECK(s.ran == 0);  // the submitted job was withdrawn from the worker's queue
  CHECK(s.pre_stopped == std::errc::operation_canceled);
  CHECK(s.unordered_entries == 3);
  CHECK(s.unordered_cancelled == 3);
}

namespace {

struct thrown_seen {
  corio::ipc::pool_result<int> seven;
  corio::ipc::pool_result<int> number;
  corio::ipc::pool_result<std::vector<long>> batched;
  std::string mapped_text;
  corio::result<int> plain;  // a pool_result still converts to a result
};

corio::task<thrown_seen> pool_throwing(process_pool& p) {
  thrown_seen s;
  s.seven = co_await p.call<&throw_on_7>(7);
  s.number = co_await p.call<&throw_int>(1);
  std::vector<long> xs(1000);
  for (long i = 0; i < 1000; ++i) {
    xs[static_cast<std::size_t>(i)] = i;
  }
  s.batched = co_await p.map_batched<&throw_in_batch>(xs, 100);
  std::vector<int> three(3, 6);
  three[1] = 7;
  auto mapped = co_await p.map<&throw_on_7>(three);
  s.mapped_text = mapped[1] ? std::string() : mapped[1].exception_message();
  s.plain = co_await p.call<&throw_on_7>(7);
  co_return s;
}

}  // namespace

TEST_CASE("process_pool: a job's exception text comes back with pool_errc::job_threw", "[process][pool]") {
  auto s = run_with_pool({.workers = 2}, &pool_throwing);
  REQUIRE_FALSE(s.seven);
  CHECK(s.seven.error() == pool_errc::job_threw);
  CHECK(s.seven.exception_message() == "seven is not allowed");
  CHECK(s.seven.error_message().find(": seven is not allowed") != std::string::npos);
  REQUIRE_FALSE(s.number);
  CHECK(s.number.error() == pool_errc::job_threw);
  CHECK(s.number.exception_message().find("unknown exception") == 0);
  REQUIRE_FALSE(s.batched);
  CHECK(s.batched.error() == pool_errc::job_threw);
  CHECK(s.batched.exception_message() == "bad item 500");
  CHECK(s.mapped_text == "seven is not allowed");
  REQUIRE_FALSE(s.plain);
  CHECK(s.plain.error() == pool_errc::job_threw);
}

namespace {

struct stream_seen {
  long first_ms = -1;
  std::size_t first_index = 0;
  std::size_t items = 0;
  bool all_ok = true;
  std::vector<bool> seen;
  std::error_code end;
  long total_ms = 0;
  // the cancelled stream
  std::size_t c_ok = 0;
  std::size_t c_cancelled = 0;
  long c_ran = -1;
  std::error_code c_end;
  bool dropped_then_ok = false;
  std::error_code wait_stopped;
};

corio::task<stream_seen> pool_streams(process_pool& p, std::string path) {
  stream_seen s;
  // Job 0 sleeps 800 ms; the other 7 take 10 ms each on the other worker.
  std::vector<int> ms(8, 10);
  ms[0] = 800;
  s.seen.assign(ms.size(), false);
  auto t0 = steady::now();
  auto stream = p.map_stream<&sleep_ms>(ms);
  for (;;) {
    auto it = co_await stream.next();
    if (!it) {
      s.end = it.error();
      break;
    }
    if (s.items == 0) {
      s.first_ms = ms_since(t0);
      s.first_index = it->index;
    }
    ++s.items;
    s.all_ok = s.all_ok && it->value && *it->value == ms[it->index];
    s.seen[it->index] = true;
  }
  s.total_ms = ms_since(t0);

  // A stream cancelled through its token after the first item: the rest come back
  // cancelled at once, and the jobs not started never run.
  std::stop_source src;
  auto cancelled = p.map_stream(&mark_then_sleep, marking_jobs(path, 30), src.get_token());
  for (;;) {
    auto it = co_await cancelled.next();
    if (!it) {
      s.c_end = it.error();
      break;
    }
    if (it->value) {
      ++s.c_ok;
      src.request_stop();
    } else if (it->value.error() == std::errc::operation_canceled) {
      ++s.c_cancelled;
    }
  }

  {
    // Dropped mid-way: its jobs are withdrawn; the pool serves the next call.
    auto dropped = p.map_stream<&sleep_ms>(std::vector<int>(20, 50));
    auto first = co_await dropped.next();
    (void)first;
  }
  auto slow = p.map_stream<&sleep_ms>(std::vector<int>(1, 500));
  auto waited = co_await corio::timeout(slow.next(), 20ms);  // ends the wait, not the job
  s.wait_stopped = waited ? std::error_code{} : waited.error();
  auto after = co_await p.map<&square>(std::vector<long>(10, 4));
  s.dropped_then_ok = after.size() == 10 && after[9] && *after[9] == 16;
  co_await p.shutdown();  // (again after the body: idempotent)
  s.c_ran = jobs_ran(path);
  co_return s;
}

}  // namespace

TEST_CASE("process_pool: map_stream yields results as they complete, and cancels", "[process][pool][stream]") {
  std::string path = counter_file();
  auto s = run_with_pool({.workers = 2}, &pool_streams, path);
  ::unlink(path.c_str());
  // As they complete: the first item (a 10 ms job) comes long before the stream ends with the
  // 800 ms job; a stream that held results back would deliver its first item near the end.
  CHECK(s.first_ms * 2 < s.total_ms);
  CHECK(s.first_index != 0);
  CHECK(s.items == 8);
  CHECK(s.all_ok);
  CHECK(std::find(s.seen.begin(), s.seen.end(), false) == s.seen.end());
  CHECK(s.end == corio::errc::closed);
  CHECK(s.total_ms >= 800);
  CHECK(s.c_ok >= 1);
  CHECK(s.c_ok + s.c_cancelled == 30);
  CHECK(s.c_cancelled >= 20);
  // (No wall-clock bound: c_ran <= 10 below shows the stream did not wait for the 30
  // jobs, which would have run them all.)
  CHECK(s.c_end == corio::errc::closed);
  CHECK(s.c_ran <= 10);
  CHECK(s.wait_stopped == std::errc::timed_out);
  CHECK(s.dropped_then_ok);
  CHECK(corio_test::zombies_after_settle(2000ms) == 0);
}

namespace {

/// "": returns 1 at once. A path: waits (up to 20 s) until that file exists: 2 if it
/// came, -1 if not.
int wait_for_file(std::string path) {
  if (path.empty()) {
    return 1;
  }
  const auto give_up = steady::now() + 20s;
  while (steady::now() < give_up) {
    if (::access(path.c_str(), F_OK) == 0) {
      return 2;
    }
    std::this_thread::sleep_for(1ms);
  }
  return -1;
}

struct behind_seen {
  std::size_t first_index = 99;
  int first = 0;
  int second = 0;
};

/// One worker, sent a quick job and a slow one in one map_stream: the slow one waits for
/// a file that is made only once the quick one's result has arrived.
corio::task<behind_seen> quick_before_slow(process_pool& p, std::string path) {
  behind_seen s;
  auto stream = p.map_stream<&wait_for_file>(std::vector<std::string>{"", path});
  auto a = co_await stream.next();
  if (a) {
    s.first_index = a->index;
    s.first = a->value ? *a->value : 0;
  }
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ::close(fd);
  }
  auto b = co_await stream.next();
  if (b) {
    s.second = b->value ? *b->value : 0;
  }
  co_return s;
}

}  // namespace

// The worker reads both jobs at once and runs them in order. The quick job's result must
// not wait in the worker until the slow job ends (the slow job here ends only after that
// result has come: before the worker's outbox it came after 20 s, with the slow job's -1).
TEST_CASE("process_pool: a quick job's result does not wait for the slow job read with it",
          "[process][pool][stream]") {
  std::string path = counter_file();
  ::unlink(path.c_str());  // made by the test once the quick result is in
  auto s = run_with_pool({.workers = 1}, &quick_before_slow, path);
  ::unlink(path.c_str());
  CHECK(s.first_index == 0);
  CHECK(s.first == 1);
  CHECK(s.second == 2);
}

namespace {

/// Starts a one-worker pool with a window of 1 (so three of the four jobs wait in the
/// pool's queue) and awaits a map of four 200 ms jobs; `waiting` is set just before.
corio::task<void> map_until_runtime_goes(std::atomic<bool>* waiting) {
  auto pool = co_await process_pool::start(1, 1);
  if (!pool) {
    co_return;
  }
  std::vector<int> xs{200, 200, 200, 200};
  waiting->store(true);
  (void)co_await (*pool)->map<&sleep_ms>(std::move(xs));
}

}  // namespace

TEST_CASE("process_pool: destroying the runtime while a map waits withdraws its batch before the pool goes",
          "[process][pool][cancel]") {
  REQUIRE(corio_test::fork_server_started);
  std::atomic<bool> waiting{false};
  auto t0 = steady::now();
  {
    corio::runtime rt(corio_test::workers(2));
    auto h = rt.spawn(map_until_runtime_goes(&waiting));
    REQUIRE(h.has_value());
    for (int i = 0; i < 5000 && !waiting.load(); ++i) {
      std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(300ms);  // the first job runs, the others are queued
  }
  // The runtime destroyed the suspended task: the map's frame (its batch) first, then the
  // pool, whose destructor fails what is still queued. Under ASan a batch still linked to
  // the pool is a heap-use-after-free here.
  CHECK(waiting.load());
  CHECK(ms_since(t0) < 5000);
}
