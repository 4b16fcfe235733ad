// Stress test of the parent-death race: an intermediate parent (this binary run again as
// a hidden test case) forks children and spawns commands with parent_death_signal as
// fast as it can, and is killed with SIGKILL at a different moment in each of 20 rounds
// — sometimes between a child's clone and its prctl. Whatever was created must die: no
// descendant may be left running (the race is closed by the child checking that its
// parent is still the pid recorded before the clone).
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include "helpers.hpp"
#include "parent_death_helpers.hpp"

using namespace std::chrono_literals;

namespace {

corio::task<int> churn() {
  for (int i = 0; i < 400; ++i) {
    if (i % 2 == 0) {
      auto c = co_await corio::ipc::fork([] {
        std::this_thread::sleep_for(std::chrono::seconds(60));
        return 0;
      });
      (void)c;  // dropped: the orphan reaper would reap it
    } else {
      (void)corio::ipc::command("sleep").arg("60").parent_death_signal(SIGKILL).spawn();
    }
    if (i == 4) {
      (void)!::write(3, "go\n", 3);  // churning: the test may kill us from now on
      ::close(3);
    }
  }
  (void)co_await corio::sleep_for(600s);
  co_return 0;
}

/// How the orphans of one round ended.
struct round_end {
  int ended = 0;  ///< reaped before the limit
  int alive = 0;  ///< still running at the limit (then killed and reaped)
  int odd = 0;    ///< ended otherwise than as expected (see reap_all_orphans)
};

/// Reaps every child this process has until none is left (or `limit` passes); counts
/// how many ended, how many were still running then and how many ended otherwise
/// than by SIGKILL (a child that saw its parent gone before arming its signal takes it
/// itself) or the exit code 0 of the fork helper (it may see its socket closed before the
/// signal comes; no other child can end with 0 before its 60 s sleep).
round_end reap_all_orphans(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  round_end r;
  for (;;) {
    int st = 0;
    pid_t got = ::waitpid(-1, &st, WNOHANG);
    if (got > 0) {
      bool killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
      bool helper_done = WIFEXITED(st) && WEXITSTATUS(st) == 0;
      r.odd += killed || helper_done ? 0 : 1;
      ++r.ended;
      continue;
    }
    if (got < 0 && errno == ECHILD) {
      return r;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      for (pid_t pid : corio_test::children_of(::getpid())) {
        ::kill(pid, SIGKILL);
        ++r.alive;
      }
      while (::waitpid(-1, &st, 0) > 0) {
      }
      return r;
    }
    std::this_thread::sleep_for(1ms);
  }
}

}  // namespace

// This process starts no fork server of its own (the test reaps every child it has);
// the intermediate starts one, while it is still single-threaded.
TEST_CASE("parent death stress: the churning intermediate", "[.pdeath_churn]") {
  if (!corio::ipc::fork_server::start()) {
    std::exit(1);
  }
  corio::runtime rt(corio_test::workers(2));
  std::exit(rt.block_on(churn()));
}

TEST_CASE("stress: children created while their parent is killed at 20 moments all die with it",
          "[process][stress][parent_death]") {
  corio_test::subreaper_scope subreaper;
  round_end total;
  for (int round = 0; round < 20; ++round) {
    auto parent = corio_test::start_intermediate("[pdeath_churn]");
    REQUIRE(parent.pid > 0);
    REQUIRE(parent.report == "go\n");
    std::this_thread::sleep_for(std::chrono::microseconds(round * 700));
    corio_test::kill_and_reap(parent);
    round_end r = reap_all_orphans(10s);
    total.ended += r.ended;
    total.alive += r.alive;
    total.odd += r.odd;
  }
  CHECK(total.ended >= 20 * 6);  // each round: the helper and at least 5 children
  CHECK(total.alive == 0);
  CHECK(total.odd == 0);
}
