// Tests for corio::ipc::signals / signal_stream / ctrl_c (ipc/signals.hpp): signals reach
// the stream whichever thread the kernel picks, nothing is lost between streams, bad
// input is refused, every wait can be cancelled, and spawned children are unaffected.
// Signals are process-wide: each test case uses its own signals or closes its streams.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"

#include <corio/ipc/process/command.hpp>
#include <corio/ipc/signals.hpp>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::signal_stream;

namespace {

std::string describe(const corio::result<corio::ipc::signal_info>& r) {
  if (!r) {
    return r.error().message();
  }
  return std::string(::sigabbrev_np(r->number));
}

}  // namespace

TEST_CASE("signals: a signal the process sends itself is read from the stream, with its sender", "[ipc][signals]") {
  corio::runtime rt(corio_test::workers(2));
  auto body = []() -> task<std::vector<std::string>> {
    auto s = corio::signals({SIGUSR1});
    if (!s) {
      co_return std::vector<std::string>{s.error().message()};
    }
    ::kill(::getpid(), SIGUSR1);
    auto got = co_await corio::timeout(s->next(), 30s);
    if (!got) {
      co_return std::vector<std::string>{got.error().message()};
    }
    co_return std::vector<std::string>{describe(got), got->sender_pid == ::getpid() ? "sender is us" : "other sender"};
  };
  CHECK(rt.block_on(body()) == std::vector<std::string>{"USR1", "sender is us"});
}

TEST_CASE("signals: a signal sent to a thread that never blocked it is forwarded to the stream instead of killing the "
          "process",
          "[ipc][signals]") {
  // The stream is opened on a worker; the thread waiting in block_on never blocked
  // SIGUSR2, whose default action ends the process. It gets the signal directly;
  // then one sent to the process.
  const pthread_t waiting = ::pthread_self();
  corio::runtime rt(corio_test::workers(1));
  auto body = [waiting]() -> task<std::vector<std::string>> {
    auto s = corio::signals({SIGUSR2});
    if (!s) {
      co_return std::vector<std::string>{s.error().message()};
    }
    std::vector<std::string> out;
    ::pthread_kill(waiting, SIGUSR2);
    out.push_back(describe(co_await corio::timeout(s->next(), 30s)));
    ::kill(::getpid(), SIGUSR2);  // now that thread blocks it (or catches it again)
    out.push_back(describe(co_await corio::timeout(s->next(), 30s)));
    co_return out;
  };
  CHECK(rt.block_on(body()) == std::vector<std::string>{"USR2", "USR2"});
}

TEST_CASE("signals: a second stream for a held signal is refused; once it closes, the next stream gets the signal that "
          "waited meanwhile",
          "[ipc][signals]") {
  corio::runtime rt(corio_test::workers(2));
  auto body = []() -> task<std::vector<std::string>> {
    std::vector<std::string> out;
    auto first = corio::signals({SIGHUP});
    if (!first) {
      co_return std::vector<std::string>{first.error().message()};
    }
    auto second = corio::signals({SIGWINCH, SIGHUP});
    out.push_back(second ? "second opened" : (second.error() == std::errc::device_or_resource_busy ? "busy" : "other"));
    first->close();
    ::kill(::getpid(), SIGHUP);  // no stream open: it must wait, not end the process
    auto third = corio::signals({SIGHUP, SIGWINCH});
    if (!third) {
      co_return std::vector<std::string>{third.error().message()};
    }
    out.push_back(describe(co_await corio::timeout(third->next(), 30s)));
    co_return out;
  };
  CHECK(rt.block_on(body()) == std::vector<std::string>{"busy", "HUP"});
}

TEST_CASE("signals: an empty set, numbers outside 1..64, SIGKILL, SIGSTOP and fault signals are refused",
          "[ipc][signals]") {
  std::vector<std::vector<int>> bad = {{}, {0}, {65}, {-1}, {SIGKILL}, {SIGSTOP}, {SIGSEGV}, {SIGBUS},
                                       {SIGFPE}, {SIGILL}, {SIGTRAP}, {SIGSYS}, {SIGUSR1, SIGKILL}};
  for (const auto& set : bad) {
    auto s = signal_stream::open(std::span<const int>(set));
    CAPTURE(set);
    REQUIRE_FALSE(s);
    CHECK(s.error() == std::errc::invalid_argument);
  }
}

TEST_CASE("signals: next() ends on its stop token, on a timeout and when the stream is closed, and loses no signal",
          "[ipc][signals]") {
  corio::runtime rt(corio_test::workers(1));
  auto body = []() -> task<std::vector<std::string>> {
    std::vector<std::string> out;
    auto s = corio::signals({SIGUSR1, SIGUSR2});
    if (!s) {
      co_return std::vector<std::string>{s.error().message()};
    }
    std::stop_source stop;
    auto waiter = corio::spawn(s->next(stop.get_token()));
    co_await corio::yield_now();  // it waits in its poll now
    stop.request_stop();
    out.push_back(describe(co_await std::move(waiter)));
    auto timed = co_await corio::timeout(s->next(), 20ms);
    out.push_back(timed ? "no timeout" : timed.error().message());
    // The signal sent after those waits ended is still there for the next one.
    ::kill(::getpid(), SIGUSR2);
    out.push_back(describe(co_await corio::timeout(s->next(), 30s)));
    auto pending = corio::spawn(s->next());
    co_await corio::yield_now();
    (void)co_await corio::io::nop();  // its poll is in the kernel
    s->close();
    out.push_back(describe(co_await std::move(pending)));
    out.push_back(describe(co_await s->next()));
    co_return out;
  };
  const std::string canceled = std::make_error_code(std::errc::operation_canceled).message();
  const std::string timed_out = "operation timed out";
  const std::string closed = std::make_error_code(std::errc::bad_file_descriptor).message();
  CHECK(rt.block_on(body()) == std::vector<std::string>{canceled, timed_out, "USR2", canceled, closed});
}

namespace {
// The result of a spawned ctrl_c(), as a task (corio::timeout takes tasks and awaitables).
task<corio::result<void>> joined(corio::join_handle<corio::result<void>> h) { co_return co_await std::move(h); }
}  // namespace

TEST_CASE("signals: ctrl_c() returns once SIGINT arrives", "[ipc][signals]") {
  corio::runtime rt(corio_test::workers(1));
  auto body = []() -> task<std::string> {
    auto waiter = corio::spawn(corio::ctrl_c());
    co_await corio::yield_now();  // ctrl_c() opened its stream and waits
    ::kill(::getpid(), SIGINT);
    auto r = co_await corio::timeout(joined(std::move(waiter)), 30s);
    co_return r ? "returned" : r.error().message();
  };
  CHECK(rt.block_on(body()) == "returned");
}

TEST_CASE("signals: a child spawned while the parent holds SIGINT starts with nothing blocked and the default action",
          "[ipc][signals]") {
  corio::runtime rt(corio_test::workers(1));
  auto body = []() -> task<std::vector<std::string>> {
    auto s = corio::signals({SIGINT});  // this worker blocks SIGINT now
    if (!s) {
      co_return std::vector<std::string>{s.error().message()};
    }
    corio::ipc::command cmd("sh");
    cmd.arg("-c").arg("grep SigBlk /proc/self/status; kill -INT $$; echo survived");
    auto out = co_await cmd.output();
    if (!out) {
      co_return std::vector<std::string>{out.error().message()};
    }
    auto sig = out->status.signal();
    co_return std::vector<std::string>{out->out, sig && *sig == SIGINT ? "killed by SIGINT" : "not killed"};
  };
  CHECK(rt.block_on(body()) == std::vector<std::string>{"SigBlk:\t0000000000000000\n", "killed by SIGINT"});
}
