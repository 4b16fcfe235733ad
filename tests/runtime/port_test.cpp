// Tests for runtime/port.hpp, the scheduler port: the entry points that the other layers
// (and users writing their own awaitables) reach the runtime through — a futex wait in
// the ring woken by port::futex_wake, cancel_fd, the raw SQE fills (pipe, bind, listen),
// post() to a live and to a gone worker, stopping(), and the capability probe.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/runtime/port.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <thread>

#include "helpers.hpp"

namespace {

using corio_test::workers;
namespace port = corio::port;

/// A job that records the worker it ran on.
struct probe_job : port::cancellable {
  std::atomic<corio::detail::worker*> ran_on{nullptr};
  std::atomic<bool> done{false};
  probe_job() {
    on_cancel_drained = [](port::cancellable* c) noexcept {
      auto* self = static_cast<probe_job*>(c);
      self->ran_on.store(port::current_worker(), std::memory_order_relaxed);
      self->done.store(true, std::memory_order_release);
      self->done.notify_all();
    };
    on_resume = [](port::cancellable*) noexcept {};
  }
};

}  // namespace

TEST_CASE("the opcode probe and the feature flags agree", "[port]") {
  const port::ring_features& f = port::features();
  CHECK(port::supports(IORING_OP_NOP));
  CHECK(f.futex == (port::supports(port::uring::op_futex_wait) && port::supports(port::uring::op_futex_wake)));
  CHECK(f.waitid == port::supports(port::uring::op_waitid));
  CHECK_FALSE(port::supports(100000));
  CHECK(&port::features() == &f);  // probed once
}

TEST_CASE("a process-shared futex wait in the ring is woken by port::futex_wake", "[port]") {
  if (!port::features().futex) {
    WARN("IORING_OP_FUTEX_WAIT not supported by this kernel: nothing to test");
    return;
  }
  // A word in memory that could be shared with a child process (MAP_SHARED): the
  // process_private = false flavour, as a process-shared primitive uses it.
  void* mem = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  auto* word = static_cast<std::uint32_t*>(mem);
  *word = 0;
  int woken_by_us = 0;
  auto result = corio::run(
      [](std::uint32_t* w, int* woken) -> corio::task<corio::result<int>> {
        auto waiter = corio::spawn([](std::uint32_t* w2) -> corio::task<corio::result<int>> {
          co_return co_await corio::io_op(
              [w2](io_uring_sqe* sqe) { port::uring::prep_futex_wait(sqe, w2, 0, false); });
        }(w));
        // Wake until the kernel reports a waiter woken: then the wait was armed, and only
        // our wake can have completed it (the word never changes).
        while ((*woken = port::futex_wake(w, 1, false)) == 0) {
          co_await corio::yield_now{};
        }
        co_return co_await waiter;
      }(word, &woken_by_us),
      workers(1));
  CHECK(woken_by_us == 1);
  REQUIRE(result.has_value());
  CHECK(*result == 0);
  ::munmap(mem, 4096);
}

TEST_CASE("port::cancel_fd ends a pending read on that descriptor with operation_canceled", "[port]") {
  if (!port::features().cancel_fd) {
    WARN("IORING_ASYNC_CANCEL_FD not supported by this kernel: nothing to test");
    return;
  }
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  auto r = corio::run(
      [](int rfd) -> corio::task<corio::result<std::size_t>> {
        auto reader = corio::spawn([](int fd) -> corio::task<corio::result<std::size_t>> {
          std::array<std::byte, 16> buf{};
          co_return co_await corio::io::read(fd, buf);
        }(rfd));
        // One worker: the reader runs (and fills its SQE) before we come back.
        co_await corio::yield_now{};
        CHECK(port::cancel_fd(port::current_worker(), rfd));
        co_return co_await reader;
      }(fds[0]),
      workers(1));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() == std::errc::operation_canceled);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("the raw SQE fills create a pipe and a listening socket through the ring", "[port]") {
  const port::ring_features& f = port::features();
  if (!f.pipe || !f.bind_listen) {
    WARN("IORING_OP_PIPE or IORING_OP_BIND/LISTEN not supported by this kernel: nothing to test");
    return;
  }
  bool ok = corio::run([]() -> corio::task<bool> {
    int fds[2] = {-1, -1};
    auto made = co_await corio::io_op([&fds](io_uring_sqe* sqe) { port::uring::prep_pipe(sqe, fds, O_CLOEXEC); });
    REQUIRE(made.has_value());
    REQUIRE(fds[0] >= 0);
    REQUIRE(fds[1] >= 0);
    CHECK(::write(fds[1], "x", 1) == 1);
    char c = 0;
    CHECK(::read(fds[0], &c, 1) == 1);
    CHECK(c == 'x');
    CHECK((::fcntl(fds[0], F_GETFD) & FD_CLOEXEC) != 0);
    ::close(fds[0]);
    ::close(fds[1]);

    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(s >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    auto bound = co_await corio::io_op([s, &addr](io_uring_sqe* sqe) {
      port::uring::prep_bind(sqe, s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    });
    CHECK(bound.has_value());
    auto listening = co_await corio::io_op([s](io_uring_sqe* sqe) { port::uring::prep_listen(sqe, s, 8); });
    CHECK(listening.has_value());
    int accepting = 0;
    socklen_t len = sizeof accepting;
    CHECK(::getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0);
    ::close(s);
    co_return accepting == 1;
  }());
  CHECK(ok);
}

TEST_CASE("port::post runs a job on the worker it names, and refuses a worker that is gone", "[port]") {
  probe_job job;
  corio::detail::worker* target = nullptr;
  std::uint64_t serial = 0;
  {
    corio::runtime rt(workers(2));
    auto where = rt.block_on([]() -> corio::task<corio::detail::worker*> { co_return port::current_worker(); }());
    target = where;
    serial = port::serial(where);
    std::thread poster([&] { CHECK(port::post(target, serial, &job)); });
    poster.join();
    job.done.wait(false, std::memory_order_acquire);
    CHECK(job.ran_on.load(std::memory_order_relaxed) == target);
    CHECK_FALSE(port::stopping(port::runtime_of(target)));
  }
  // The runtime and its workers are gone: the serial no longer names a live worker.
  probe_job late;
  std::thread poster([&] { CHECK_FALSE(port::post(target, serial, &late)); });
  poster.join();
  CHECK_FALSE(late.done.load());
}

TEST_CASE("port::current_worker and current_runtime are null off the runtime", "[port]") {
  CHECK(port::current_worker() == nullptr);
  CHECK(port::current_runtime() == nullptr);
  CHECK_FALSE(port::consume_budget());
  auto same = corio::run([]() -> corio::task<bool> {
    co_return port::current_worker() != nullptr && port::runtime_of(port::current_worker()) == port::current_runtime();
  }());
  CHECK(same);
}
