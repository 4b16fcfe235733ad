// Helpers for the parent-death tests: run this test binary again as an intermediate
// parent (a hidden test case that reports on fd 3), become the subreaper of its orphans,
// kill it, and see how each orphan ended.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <thread>

#include <corio/ipc/process/process.hpp>

#include "process_helpers.hpp"

namespace corio_test {

/// This process adopts the orphans of its descendants while it lives (so a test can
/// reap them and see how they died); restored on scope exit.
class subreaper_scope {
 public:
  subreaper_scope() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }
  ~subreaper_scope() { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
  subreaper_scope(const subreaper_scope&) = delete;
  subreaper_scope& operator=(const subreaper_scope&) = delete;
};

/// The intermediate parent: its handle and what it reported on fd 3 (up to end-of-file).
struct intermediate {
  corio::ipc::child proc;
  pid_t pid = -1;
  std::string report;
};

/// Runs this binary's hidden test case `tag` (e.g. "[pdeath_intermediate]") with a pipe
/// as its fd 3, and reads that pipe up to the first newline (or end-of-file: the
/// intermediate's descendants inherit its fd 3, so end-of-file may come only with them).
inline intermediate start_intermediate(const char* tag) {
  intermediate im;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    return im;
  }
  auto c = corio::ipc::command("/proc/self/exe").arg(tag).inherit_fd(p[1], 3).stdout_mode(corio::ipc::stdio::null()).spawn();
  ::close(p[1]);
  if (c) {
    char buf[512];
    for (ssize_t n; im.report.find('\n') == std::string::npos && (n = ::read(p[0], buf, sizeof buf)) > 0;) {
      im.report.append(buf, static_cast<std::size_t>(n));
    }
    im.pid = c->id();
    im.proc = std::move(*c);
  }
  ::close(p[0]);
  return im;
}

/// The pids whose parent is `pid` right now.
inline std::set<pid_t> children_of(pid_t pid) {
  std::set<pid_t> out;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      char* end = nullptr;
      long p = std::strtol(e->d_name, &end, 10);
      char state = 0;
      pid_t ppid = 0;
      if (end != e->d_name && *end == '\0' && proc_state(static_cast<pid_t>(p), state, ppid) && ppid == pid) {
        out.insert(static_cast<pid_t>(p));
      }
    }
    ::closedir(d);
  }
  return out;
}

/// SIGKILLs the intermediate and reaps it (its orphans are then ours).
inline void kill_and_reap(intermediate& im) {
  (void)im.proc.kill(SIGKILL);
  while (true) {
    auto st = im.proc.try_wait();
    if (!st || *st) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// Reaps orphan `pid` (adopted by this subreaper) and says how it ended: "killed by
/// signal N", "exited with N", or, if it is still running after `limit`, "still
/// running" (it is then killed and reaped, so no test leaves it behind).
inline std::string reap_orphan(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int st = 0;
    pid_t got = ::waitpid(pid, &st, WNOHANG);
    if (got == pid) {
      return WIFSIGNALED(st) ? "killed by signal " + std::to_string(WTERMSIG(st))
                             : "exited with " + std::to_string(WEXITSTATUS(st));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      return "still running";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // not ours yet, or alive
  }
}

}  // namespace corio_test
