// join_handle::abort (issue 16 item 2): a task blocked in a sleep of an hour, a read on an
// idle pipe, a channel receive or a join of a child ends as errc::aborted once its
// handle's abort() is called; a task that finished first yields its value; abort from a
// plain std::thread, twice, and before the task first ran (its body never runs);
// get_stop_token() inside the task sees the abort; waits under timeout and when_all
// (which use the task's std::stop_token rather than the parked hook) see it too; a
// wait's stop link stays one pointer (the hook lives in a block only abortable tasks use).
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/runtime/detail/stop_link.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "helpers.hpp"

using namespace std::chrono_literals;
using corio_test::workers;

namespace {

// What awaiting `h` gave: "aborted", "value N", or the other error's message.
corio::task<std::string> outcome(corio::join_handle<int> h) {
  try {
    int v = co_await h;
    co_return "value " + std::to_string(v);
  } catch (const std::system_error& e) {
    co_return e.code() == corio::errc::aborted ? std::string("aborted") : e.what();
  }
}

// Yields until `flag` is set (the spawned task reached its wait).
corio::task<void> until(const std::atomic<bool>* flag) {
  // acquire: pairs with the task's release store.
  while (!flag->load(std::memory_order_acquire)) {
    co_await corio::yield_now();
  }
}

// The error code the wait inside a task returned, for the test to check afterwards.
struct probe {
  std::atomic<bool> started{false};
  std::atomic<bool> ended{false};
  std::error_code seen{};  // written before `ended` (release)
};

corio::task<int> sleep_an_hour(probe* p) {
  p->started.store(true, std::memory_order_release);
  auto r = co_await corio::sleep_for(1h);
  p->seen = r ? std::error_code{} : r.error();
  p->ended.store(true, std::memory_order_release);
  co_return 1;
}

corio::task<int> read_idle_pipe(int fd, probe* p) {
  std::byte buf[16];
  p->started.store(true, std::memory_order_release);
  auto r = co_await corio::io::read(fd, buf);
  p->seen = r ? std::error_code{} : r.error();
  p->ended.store(true, std::memory_order_release);
  co_return 2;
}

corio::task<int> receive_nothing(corio::channel<int>* ch, probe* p) {
  p->started.store(true, std::memory_order_release);
  auto r = co_await ch->recv();
  p->seen = r ? std::error_code{} : r.error();
  p->ended.store(true, std::memory_order_release);
  co_return r ? *r : 3;
}

// Spawns `body`, waits until it is blocked, aborts it and returns what its handle gave.
corio::task<std::string> abort_blocked(corio::task<int> body, probe* p) {
  auto h = corio::spawn(corio::abortable, std::move(body));
  co_await until(&p->started);
  h.abort();
  co_return co_await outcome(std::move(h));
}

corio::task<int> quick(int v) { co_return v; }

corio::task<std::string> abort_after_finish() {
  auto h = corio::spawn(corio::abortable, quick(42));
  while (!h.is_finished()) {
    co_await corio::yield_now();
  }
  h.abort();
  co_return co_await outcome(std::move(h));
}

corio::task<int> mark_ran(std::atomic<bool>* ran) {
  ran->store(true, std::memory_order_relaxed);
  co_return 5;
}

corio::task<std::string> abort_before_first_run(std::atomic<bool>* ran) {
  auto h = corio::spawn(corio::abortable, mark_ran(ran));  // one worker: it cannot run before we suspend
  h.abort();
  h.abort();  // twice: no effect
  co_return co_await outcome(std::move(h));
}

corio::task<int> poll_token(probe* p) {
  std::stop_token token = co_await corio::get_stop_token();
  p->started.store(true, std::memory_order_release);
  while (!token.stop_requested()) {
    co_await corio::yield_now();
  }
  p->ended.store(true, std::memory_order_release);
  co_return 4;
}

corio::task<int> join_sleeping_child(probe* child, corio::join_handle<int>* child_handle) {
  *child_handle = corio::spawn(corio::abortable, sleep_an_hour(child));
  co_return co_await *child_handle;
}

corio::task<std::string> abort_joining_parent(probe* child) {
  corio::join_handle<int> child_handle;
  auto parent = corio::spawn(corio::abortable, join_sleeping_child(child, &child_handle));
  co_await until(&child->started);
  parent.abort();
  std::string got = co_await outcome(std::move(parent));
  // The child is not aborted with its parent: it still sleeps.
  std::string child_state = child->ended.load(std::memory_order_acquire) ? "ended" : "sleeping";
  child_handle.abort();
  co_return got + ", child " + child_state;
}

// Waits that need a real std::stop_token (timeout, when_all): the task's stop source is
// created and the abort reaches them through it.
corio::task<bool> hour() {
  auto r = co_await corio::sleep_for(1h);
  co_return static_cast<bool>(r);
}

corio::task<int> sleep_in_combinators(probe* p) {
  p->started.store(true, std::memory_order_release);
  auto t = co_await corio::timeout(corio::sleep_for(1h), 2h);
  auto both = co_await corio::when_all(hour(), hour());
  p->seen = t ? std::error_code{} : t.error();
  p->ended.store(true, std::memory_order_release);
  co_return std::get<0>(both) ? 6 : 7;
}

}  // namespace

TEST_CASE("abort: a task in a timeout, then a when_all, of hour-long sleeps ends as errc::aborted",
          "[runtime][abort]") {
  corio::runtime rt(workers(2));
  probe p;
  CHECK(rt.block_on(abort_blocked(sleep_in_combinators(&p), &p)) == "aborted");
  CHECK(p.ended.load());
  CHECK(p.seen == std::errc::operation_canceled);
}

TEST_CASE("abort: a task sleeping for an hour ends as errc::aborted", "[runtime][abort]") {
  corio::runtime rt(workers(2));
  probe p;
  CHECK(rt.block_on(abort_blocked(sleep_an_hour(&p), &p)) == "aborted");
  CHECK(p.ended.load());
  CHECK(p.seen == std::errc::operation_canceled);  // the sleep itself was cancelled
  CHECK(corio::make_error_code(corio::errc::aborted).message() == "task aborted");
}

TEST_CASE("abort: a task reading an idle pipe ends as errc::aborted", "[runtime][abort]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  {
    corio::runtime rt(workers(2));
    probe p;
    CHECK(rt.block_on(abort_blocked(read_idle_pipe(fds[0], &p), &p)) == "aborted");
    CHECK(p.seen == std::errc::operation_canceled);
  }
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("abort: a task waiting on a channel receive ends as errc::aborted", "[runtime][abort]") {
  corio::runtime rt(workers(2));
  corio::channel<int> ch(0);
  probe p;
  CHECK(rt.block_on(abort_blocked(receive_nothing(&ch, &p), &p)) == "aborted");
  CHECK(p.seen == std::errc::operation_canceled);
}

TEST_CASE("abort: a task joining a child ends as errc::aborted; the child runs on", "[runtime][abort]") {
  corio::runtime rt(workers(2));
  probe child;
  CHECK(rt.block_on(abort_joining_parent(&child)) == "aborted, child sleeping");
}

TEST_CASE("abort: a task that finished before abort() yields its value", "[runtime][abort]") {
  corio::runtime rt(workers(2));
  CHECK(rt.block_on(abort_after_finish()) == "value 42");
}

TEST_CASE("abort: requested twice before the first run, the body never runs", "[runtime][abort]") {
  corio::runtime rt(workers(1));
  std::atomic<bool> ran{false};
  CHECK(rt.block_on(abort_before_first_run(&ran)) == "aborted");
  CHECK_FALSE(ran.load());
}

TEST_CASE("abort: get_stop_token() inside the task sees the abort", "[runtime][abort]") {
  corio::runtime rt(workers(2));
  probe p;
  CHECK(rt.block_on(abort_blocked(poll_token(&p), &p)) == "aborted");
  CHECK(p.ended.load());
}

TEST_CASE("abort: from a plain std::thread, and again after", "[runtime][abort]") {
  corio::runtime rt(workers(2));
  probe p;
  auto h = rt.spawn(corio::abortable, sleep_an_hour(&p));
  REQUIRE(h);
  while (!p.started.load(std::memory_order_acquire)) {
    std::this_thread::yield();
  }
  std::thread other([&] { h->abort(); });
  other.join();
  h->abort();  // a second abort is a no-op
  CHECK(rt.block_on(outcome(std::move(*h))) == "aborted");
  CHECK(p.seen == std::errc::operation_canceled);

  corio::join_handle<int> empty;
  empty.abort();  // no task: no-op
  CHECK_FALSE(empty.valid());
}

namespace {
corio::task<int> forty_two() { co_return 42; }
}  // namespace

TEST_CASE("abort: a task not spawned abortable refuses abort() and runs to its end", "[runtime][abort]") {
  corio::runtime rt(workers(2));
  auto h = rt.spawn(forty_two());
  REQUIRE(h);
  // Its waits do not watch for an abort, so abort() could not stop them: it says so.
  CHECK_THROWS_WITH(h->abort(), Catch::Contains("corio::abortable"));
  CHECK(rt.block_on(outcome(std::move(*h))) == "value 42");
}

namespace {
// A short life of waits that park and unpark the abort hook: yields, a zero sleep and a
// short sleep, then its value.
corio::task<int> brief(int v) {
  co_await corio::yield_now();
  (void)co_await corio::sleep_for(0us);
  co_await corio::yield_now();
  (void)co_await corio::sleep_for(std::chrono::microseconds(v % 50));
  co_return v;
}

struct race_counts {
  int values = 0;
  int aborted = 0;
  int other = 0;
};

corio::task<race_counts> join_all_outcomes(std::vector<corio::join_handle<int>>* handles) {
  race_counts c;
  for (std::size_t i = 0; i < handles->size(); ++i) {
    corio::result<int> r = co_await (*handles)[i].join();
    if (r && *r == static_cast<int>(i)) {
      ++c.values;
    } else if (!r && r.error() == corio::errc::aborted) {
      ++c.aborted;
    } else {
      ++c.other;
    }
  }
  co_return c;
}
}  // namespace

// The park/unpark handshake between a task's waits and abort() from another thread, raced
// many times (the TSan build of the unit suite checks it for data races): every task ends
// exactly once, as its own value or as errc::aborted, and none hangs.
TEST_CASE("abort: aborts racing the tasks' own waits and finish from another thread end each task once",
          "[runtime][abort]") {
  corio::runtime rt(workers(2));
  constexpr int rounds = 20;
  constexpr int per_round = 200;
  race_counts total;
  for (int round = 0; round < rounds; ++round) {
    std::vector<corio::join_handle<int>> handles;
    handles.reserve(per_round);
    for (int i = 0; i < per_round; ++i) {
      auto h = rt.spawn(corio::abortable, brief(i));
      REQUIRE(h);
      handles.push_back(std::move(*h));
    }
    std::thread aborter([&handles, round] {
      // Every other task (the half chosen by the round), while they run.
      for (std::size_t i = static_cast<std::size_t>(round % 2); i < handles.size(); i += 2) {
        handles[i].abort();
      }
    });
    aborter.join();
    race_counts c = rt.block_on(join_all_outcomes(&handles));
    total.values += c.values;
    total.aborted += c.aborted;
    total.other += c.other;
  }
  INFO("aborted " << total.aborted << " of " << rounds * per_round / 2 << " aborts");  // ~60-80% here
  CHECK(total.other == 0);
  CHECK(total.values + total.aborted == rounds * per_round);
  CHECK(total.values >= rounds * per_round / 2);  // the half never aborted all finish
}

namespace {
struct no_op_fn {
  void* self = nullptr;
  void operator()() const noexcept {}
};
}  // namespace

TEST_CASE("abort: a wait's stop link stays one pointer (plain tasks carry no abort hook)", "[runtime][abort]") {
  // Every awaiter holds a stop link, and awaiters live in coroutine frames: an inline
  // abort hook (three pointers more) cost 3-4% of the 1-worker ping-pong of plain
  // tasks. Abortable tasks keep their hook in the link's allocated block instead.
  STATIC_REQUIRE(sizeof(corio::detail::stop_link<no_op_fn>) == sizeof(void*));
}
