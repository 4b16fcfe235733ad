// example::shutdown_signals / serve_until_signal: how a corio server stops cleanly on
// Ctrl-C (SIGINT) or SIGTERM (ipc/signals.hpp).
//
// Concept: main() opens the signal stream before it creates the runtime (so every thread
// the runtime starts inherits the blocked mask), then runs serve_until_signal(), which
// starts the accept loop with a stop token, awaits the first signal, prints one line,
// stops the loop and waits for it. A loop may also end by itself (socket_server's 'close
// server' message): then no signal is awaited any more. Connections still open are closed
// by the loop's own stop or by the runtime's shutdown when main() returns (their tasks
// are destroyed, which closes their sockets).
// A program that is not a server (it ends by itself, but holds something a signal must
// not leave behind: a shared-memory or message-queue name, a SysV queue) spawns
// stop_on_signal() next to its work instead: the first signal stops a stop_source whose
// token every wait of the work takes; the program then cleans up and exits 1.
// Thread-safety: shutdown_signals() from main() only. Cost: one signalfd.
#pragma once

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <vector>

#include <corio/corio.hpp>
#include <corio/ipc/signals.hpp>

namespace example {

/// The stream of SIGINT and SIGTERM for `name`'s server; exits with status 1 and a
/// message if it cannot be opened.
inline corio::signal_stream shutdown_signals(const char* name) {
  auto s = corio::signals({SIGINT, SIGTERM});
  if (!s) {
    std::fprintf(stderr, "%s: signals: %s\n", name, s.error().message().c_str());
    std::exit(1);
  }
  return std::move(*s);
}

/// Requests `stop` on the first signal of `signals`, after printing "WHO: SIGxxx received,
/// shutting down" (stdout, flushed); ends quietly once someone else stops `stop` (the
/// program is done: request it, then await this task). A failed read of the signal is
/// reported on stderr and stops `stop` too.
inline corio::task<void> stop_on_signal(const corio::signal_stream& signals, std::stop_source stop, const char* who) {
  auto got = co_await signals.next(stop.get_token());
  if (got) {
    std::printf("%s: SIG%s received, shutting down\n", who, ::sigabbrev_np(got->number));
    std::fflush(stdout);
  } else if (!stop.stop_requested()) {
    std::fprintf(stderr, "%s: waiting for a signal: %s; shutting down\n", who, got.error().message().c_str());
  }
  stop.request_stop();
}

/// Waits for each of `children` to exit, or until `stop` is requested (a signal, see
/// stop_on_signal): then kills and reaps those still running (a child already reaped
/// just yields its status again). True when every child exited 0 and no stop came.
inline corio::task<bool> wait_children(std::vector<corio::ipc::child>& children, std::stop_token stop) {
  bool ok = true;
  for (auto& c : children) {
    auto st = co_await c.wait(stop);  // a stop ends the wait: the child runs on
    if (!st && stop.stop_requested()) {
      break;
    }
    ok = ok && st && st->code() == 0;
  }
  if (!stop.stop_requested()) {
    co_return ok;
  }
  for (auto& c : children) {
    (void)c.kill();           // fails harmlessly for one already reaped
    (void)co_await c.wait();  // killed: it ends at once
  }
  co_return false;
}

namespace detail {

// Awaits the accept loop (a task<void> or task<int>), then requests `ended` (a copy
// sharing the caller's stop state), also when the loop throws. Yields the loop's status
// (0 for a task<void>), or 1 after printing "NAME: serving failed: ..." on stderr when it
// threw a std::exception (say, out of memory in a connection, rethrown at the end by the
// loop's task group): the server then exits with status 1 instead of std::terminate.
template <class LoopTask>
corio::task<int> await_loop(const char* name, LoopTask loop, std::stop_source ended) {
  struct on_exit {
    std::stop_source& s;
    ~on_exit() { s.request_stop(); }
  } guard{ended};
  try {
    if constexpr (std::is_same_v<LoopTask, corio::task<void>>) {
      co_await std::move(loop);
      co_return 0;
    } else {
      co_return co_await std::move(loop);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: serving failed: %s\n", name, e.what());
  }
  co_return 1;
}

}  // namespace detail

/// Runs `loop(stop_token)` (a task<void> or task<int>: the accept loop) until a signal of
/// `signals` arrives, then prints "NAME: SIGxxx received, shutting down", stops the loop
/// and waits for it; a loop that ends by itself ends the wait for a signal. Yields the
/// exit status: 1 if reading the signal failed or the loop threw a std::exception
/// ("NAME: serving failed: ..." on stderr), else the loop's status (0 for a task<void>).
template <class Loop>
corio::task<int> serve_until_signal(const char* name, const corio::signal_stream& signals, Loop loop) {
  std::stop_source stop;   // the signal came: stops the loop
  std::stop_source ended;  // the loop ended: stops the wait for a signal
  auto loop_task = corio::spawn(detail::await_loop(name, loop(stop.get_token()), ended));
  auto got = co_await signals.next(ended.get_token());
  int rc = 0;
  if (got) {
    std::printf("%s: SIG%s received, shutting down\n", name, ::sigabbrev_np(got->number));
  } else if (!ended.stop_requested()) {
    std::fprintf(stderr, "%s: waiting for a signal: %s; shutting down\n", name, got.error().message().c_str());
    rc = 1;
  }
  std::fflush(stdout);
  stop.request_stop();
  int loop_rc = co_await std::move(loop_task);
  co_return rc != 0 ? rc : loop_rc;
}

}  // namespace example
