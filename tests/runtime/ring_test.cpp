// Tests for runtime/internal/ring.hpp's reading of the kernel's flags: on a DEFER_TASKRUN
// ring, nothing_to_post() (the worker skips an enter that only collects, when it is
// true; runtime/maintenance.cpp) is false exactly while a completion waits for an enter
// to post it.
#include <catch2/catch.hpp>

#include <corio/runtime/internal/ring.hpp>

#include <liburing.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

using namespace std::chrono_literals;

TEST_CASE("ring: nothing_to_post is false while a completion waits for an enter to post it",
          "[runtime][ring]") {
  corio::detail::ring r;
  std::string why;
  REQUIRE_FALSE(r.open(corio::detail::ring_options{}, why));
  if (!r.defer_taskrun() || !r.taskrun_flag()) {
    // Before Linux 6.1 (no DEFER_TASKRUN) the kernel cannot say: never skip an enter.
    CHECK_FALSE(r.nothing_to_post());
    return;
  }
  CHECK(r.nothing_to_post());  // nothing in flight
  // A 20 ms timeout: it does not complete while it is submitted; when it fires, its
  // completion is task work that only this thread's next enter runs.
  __kernel_timespec ts{};
  ts.tv_nsec = 20'000'000;
  io_uring_sqe* sqe = r.get_sqe([] {});
  io_uring_prep_timeout(sqe, &ts, 0, 0);
  io_uring_sqe_set_data64(sqe, 7);
  r.submit();
  std::this_thread::sleep_for(200ms);
  CHECK_FALSE(r.cq_ready());
  CHECK(r.task_work_pending());
  CHECK_FALSE(r.nothing_to_post());
  r.submit();  // an enter: runs the task work, which posts the completion
  CHECK(r.nothing_to_post());
  int res = 0;
  unsigned seen = r.for_each_cqe([&](io_uring_cqe* cqe) {
    CHECK(cqe->user_data == 7);
    res = cqe->res;
  });
  CHECK(seen == 1);
  CHECK(res == -ETIME);
}
