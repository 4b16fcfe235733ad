// Helpers shared by the sync/ tests: runtime configuration, a running maximum, a small
// random generator, joining handles in order, and the misuse tests' forked child and its check.
#pragma once

#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <csignal>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>

namespace corio_test {

/// A runtime with `workers` workers (2 by default, as in the scenarios).
inline corio::runtime_config sync_config(unsigned workers = 2) {
  corio::runtime_config c;
  c.workers = workers;
  return c;
}

/// Records the maximum of a value seen by many threads.
inline void raise_max(std::atomic<std::int64_t>& max, std::int64_t v) {
  std::int64_t cur = max.load(std::memory_order_relaxed);
  while (v > cur && !max.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

/// Small xorshift generator (tests must not share std::rand across threads).
struct xorshift {
  std::uint64_t s;
  explicit xorshift(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  unsigned below(unsigned n) { return static_cast<unsigned>(next() % n); }
};

/// Awaits hs[next..] in order, advancing `next` (so a watchdog — timeout(join_all(...))
/// — that cut it short can resume where it stopped: a join_handle stays awaitable after a
/// cancelled wait).
inline corio::task<void> join_all(std::vector<corio::join_handle<void>>& hs, std::size_t& next) {
  while (next < hs.size()) {
    co_await hs[next];
    ++next;
  }
}

/// How a forked child ended (for the debug "death" tests of misuse).
struct child_outcome {
  bool aborted = false;  ///< killed by SIGABRT
  bool exited_0 = false; ///< returned normally
  std::string err;       ///< what it wrote to stderr
};

/// Runs `fn` in a forked child (stderr captured, no core dump). Call it where no
/// runtime threads are running.
template <class F>
child_outcome run_in_child(F fn) {
  child_outcome out;
  int fds[2];
  if (::pipe(fds) != 0) {
    return out;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ::dup2(fds[1], 2);
    struct rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    fn();
    std::fflush(stderr);
    ::_exit(0);
  }
  ::close(fds[1]);
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) {
      break;
    }
    out.err.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  out.aborted = WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
  out.exited_0 = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  return out;
}

#ifdef NDEBUG
inline constexpr bool debug_build = false;
#else
inline constexpr bool debug_build = true;
#endif

/// The check of a misuse test's child (run_in_child): a debug build aborts with `message`
/// on stderr; a release build takes the documented release behaviour, which the child
/// confirms by exiting 0 (it exits with another status where it sees something else).
inline void require_misuse_outcome(const child_outcome& out, std::string_view message) {
  INFO("the child's stderr: " << out.err);
  if (debug_build) {
    REQUIRE(out.aborted);
    REQUIRE(out.err.find(message) != std::string::npos);
  } else {
    REQUIRE(out.exited_0);
  }
}

}  // namespace corio_test
