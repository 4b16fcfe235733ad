// example::shutdown_signals / serve_until_signal: how a corio server stops cleanly on
// Ctrl-C (SIGINT) or SIGTERM (ipc/signals.hpp).
//
// Concept: main() opens the signal stream before it creates the runtime (so every thread
// the runtime starts inherits the blocked mask), then runs serve_until_signal(), which
// starts the accept loop with a stop token, awaits the first signal, prints one line,
// stops the loop and waits for it. Connections still open are closed by the runtime's
// shutdown when main() returns (their tasks are destroyed, which closes their sockets).
// Thread-safety: shutdown_signals() from main() only. Cost: one signalfd.
#pragma once

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stop_token>
#include <utility>

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

/// Runs `loop(stop_token)` (a task<void>: the accept loop) until a signal of `signals`
/// arrives, then prints "NAME: SIGxxx received, shutting down", stops the loop and waits
/// for it. Yields the exit status: 0, or 1 if reading the signal failed.
template <class Loop>
corio::task<int> serve_until_signal(const char* name, const corio::signal_stream& signals, Loop loop) {
  std::stop_source stop;
  auto loop_task = corio::spawn(loop(stop.get_token()));
  auto got = co_await signals.next();
  if (got) {
    std::printf("%s: SIG%s received, shutting down\n", name, ::sigabbrev_np(got->number));
  } else {
    std::fprintf(stderr, "%s: waiting for a signal: %s; shutting down\n", name, got.error().message().c_str());
  }
  std::fflush(stdout);
  stop.request_stop();
  co_await std::move(loop_task);
  co_return got ? 0 : 1;
}

}  // namespace example
