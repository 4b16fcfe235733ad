// Tests for runtime/io_op.hpp and runtime/io.hpp: read/write/nop through the ring,
// errors, and cancellation of in-flight operations (ASYNC_CANCEL) with no use-after-free.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/runtime/internal/ring.hpp>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace std::chrono_literals;

namespace {

using corio_test::workers;

struct pipe_fds {
  int r = -1;
  int w = -1;
  pipe_fds() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    r = fds[0];
    w = fds[1];
  }
  ~pipe_fds() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
};

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

}  // namespace

TEST_CASE("io: write then read a pipe through the ring", "[runtime][io]") {
  corio::runtime rt(workers(2));
  pipe_fds p;
  auto body = [&]() -> corio::task<std::string> {
    std::string msg = "hello ring";
    auto w = co_await corio::io::write(p.w, bytes_of(msg));
    REQUIRE(w);
    CHECK(*w == msg.size());
    std::array<char, 64> buf{};
    auto r = co_await corio::io::read(p.r, std::as_writable_bytes(std::span(buf)));
    REQUIRE(r);
    co_return std::string(buf.data(), *r);
  };
  CHECK(rt.block_on(body()) == "hello ring");
}

TEST_CASE("io: a burst of completions that wakes a parked worker resumes every task", "[runtime][io]") {
  // One worker parks while 32 reads are in flight; another thread then completes them
  // all at once. The park's own io_uring_enter posts at least the completion that woke
  // it, the next find_work the rest (worker.hpp, maintenance_from::park): none is left.
  corio::runtime rt(workers(1));
  for (int round = 0; round < 3; ++round) {
    std::vector<pipe_fds> pipes(32);
    auto body = [&]() -> corio::task<int> {
      std::vector<corio::join_handle<bool>> readers;
      for (auto& p : pipes) {
        readers.push_back(corio::spawn([](int fd) -> corio::task<bool> {
          std::array<char, 8> buf{};
          auto r = co_await corio::timeout(corio::io::read(fd, std::as_writable_bytes(std::span(buf))), 5s);
          co_return r && *r == 1 && buf[0] == 'x';
        }(p.r)));
      }
      std::thread writer([&] {
        std::this_thread::sleep_for(20ms);  // the worker is parked by then
        for (auto& p : pipes) {
          (void)!::write(p.w, "x", 1);  // a failed write shows as a reader that timed out
        }
      });
      int done = 0;
      for (auto& h : readers) {
        done += co_await std::move(h) ? 1 : 0;
      }
      writer.join();
      co_return done;
    };
    const std::uint64_t parks_before = rt.metrics().workers[0].parks;
    CHECK(rt.block_on(body()) == 32);
    CHECK(rt.metrics().workers[0].parks > parks_before);  // it did park while the reads waited
  }
}

TEST_CASE("io: a worker with a read in flight does not enter the kernel between tasks only to look for it",
          "[runtime][io]") {
  // One worker, one read that never completes, and a task that sleeps 1 ms 64 times: every
  // wake-up is a park's enter. Between two sleeps the worker has nothing to submit and
  // the kernel says no completion waits to be posted (ring::nothing_to_post), so it
  // makes no other enter (runtime/maintenance.cpp). Before, it polled for the read: a
  // few times until its enters counted as quiet, then every 8th time as a probe (~76).
  corio::runtime rt(workers(1));
  pipe_fds p;
  constexpr int kSleeps = 64;
  auto body = [&]() -> corio::task<std::uint64_t> {
    std::stop_source stop;
    auto reader = corio::spawn([](int fd, std::stop_token token) -> corio::task<bool> {
      std::array<char, 8> buf{};
      co_return static_cast<bool>(co_await corio::io::read(fd, std::as_writable_bytes(std::span(buf)), -1, token));
    }(p.r, stop.get_token()));
    (void)co_await corio::sleep_for(5ms);  // the read is in flight
    const std::uint64_t before = rt.metrics().workers[0].ring_enters;
    for (int i = 0; i < kSleeps; ++i) {
      (void)co_await corio::sleep_for(1ms);
    }
    const std::uint64_t enters = rt.metrics().workers[0].ring_enters - before;
    stop.request_stop();
    const bool read = co_await std::move(reader);
    co_return read ? 0 : enters;  // cancelled, never completed (0 fails below)
  };
  const std::uint64_t enters = rt.block_on(body());
  // Slack both ways: a park that wakes early enters once more; a worker held off its CPU
  // past a sleep's end finds the timer due without parking.
  CHECK(enters >= kSleeps / 2);
  // A kernel whose rings cannot flag pending completions (DEFER_TASKRUN without
  // TASKRUN_FLAG, a patched one) keeps the old rule: polls until they count as quiet,
  // then every 8th as a probe.
  corio::detail::ring probe;
  std::string why;
  REQUIRE_FALSE(probe.open(corio::detail::ring_options{}, why));
  const bool flags = !probe.defer_taskrun() || probe.taskrun_flag();
  CHECK(enters <= (flags ? kSleeps + kSleeps / 16 : kSleeps + kSleeps / 4));
}

TEST_CASE("io: a nop completes with 0", "[runtime][io]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<int> {
    auto r = co_await corio::io::nop();
    co_return r ? *r : -1;
  };
  CHECK(rt.block_on(body()) == 0);
}

TEST_CASE("io: errors come back as std::error_code", "[runtime][io]") {
  corio::runtime rt(workers(1));
  auto body = []() -> corio::task<std::error_code> {
    std::array<std::byte, 8> buf{};
    auto r = co_await corio::io::read(-1, buf);
    co_return r ? std::error_code{} : r.error();
  };
  CHECK(rt.block_on(body()) == std::errc::bad_file_descriptor);
}

TEST_CASE("io: a write to a closed pipe returns EPIPE and does not kill the process", "[runtime][io]") {
  corio::runtime rt(workers(1));
  pipe_fds p;
  ::close(p.r);
  p.r = -1;
  auto body = [&]() -> corio::task<std::error_code> {
    std::string msg = "x";
    auto w = co_await corio::io::write(p.w, bytes_of(msg));
    co_return w ? std::error_code{} : w.error();
  };
  // The kernel raises SIGPIPE in the issuing thread; workers block it, so the write just
  // fails (without that, this test process would be killed).
  CHECK(rt.block_on(body()) == std::errc::broken_pipe);
}

TEST_CASE("io: a stop token cancels a pending read with operation_canceled", "[runtime][io][cancel]") {
  corio::runtime rt(workers(2));
  pipe_fds p;
  std::stop_source stop;
  auto reader = [&]() -> corio::task<std::error_code> {
    std::array<std::byte, 16> buf{};
    auto r = co_await corio::io::read(p.r, buf, -1, stop.get_token());
    co_return r ? std::error_code{} : r.error();
  };
  auto h = rt.spawn(reader());
  REQUIRE(h);
  std::this_thread::sleep_for(20ms);
  stop.request_stop();  // from a foreign thread: forwarded to the owning worker
  auto join = [](corio::join_handle<std::error_code> j) -> corio::task<std::error_code> { co_return co_await j; };
  CHECK(rt.block_on(join(std::move(*h))) == std::errc::operation_canceled);
}

TEST_CASE("io: a stop requested before the await fails fast without an SQE", "[runtime][io][cancel]") {
  corio::runtime rt(workers(1));
  pipe_fds p;
  std::stop_source stop;
  stop.request_stop();
  auto reader = [&]() -> corio::task<std::error_code> {
    std::array<std::byte, 16> buf{};
    auto r = co_await corio::io::read(p.r, buf, -1, stop.get_token());
    co_return r ? std::error_code{} : r.error();
  };
  CHECK(rt.block_on(reader()) == std::errc::operation_canceled);
}

TEST_CASE("io: a stop requested before the await refuses the read and consumes nothing", "[runtime][io][cancel]") {
  corio::runtime rt(workers(1));
  pipe_fds p;
  REQUIRE(::write(p.w, "abc", 3) == 3);
  std::stop_source stop;
  stop.request_stop();
  auto reader = [&]() -> corio::task<std::error_code> {
    std::array<std::byte, 16> buf{};
    auto r = co_await corio::io::read(p.r, buf, -1, stop.get_token());
    co_return r ? std::error_code{} : r.error();
  };
  CHECK(rt.block_on(reader()) == std::errc::operation_canceled);
  auto reader2 = [&]() -> corio::task<std::size_t> {
    std::array<std::byte, 16> buf{};
    auto r = co_await corio::io::read(p.r, buf);
    co_return r ? *r : 0;
  };
  CHECK(rt.block_on(reader2()) == 3);  // the data is still there
}

TEST_CASE("io: poll reports readiness", "[runtime][io]") {
  corio::runtime rt(workers(1));
  pipe_fds p;
  REQUIRE(::write(p.w, "z", 1) == 1);
  auto body = [&]() -> corio::task<int> {
    auto r = co_await corio::io::poll(p.r, POLLIN);
    co_return r ? *r : -1;
  };
  CHECK((rt.block_on(body()) & POLLIN) != 0);
}

TEST_CASE("io: shutdown cancels in-flight reads before destroying their frames", "[runtime][io][shutdown]") {
  // 200 reads parked on pipes that never get data; destroying the runtime must cancel
  // them in the kernel and drain their completions before freeing the frames (ASan
  // would catch a kernel write into a freed frame as a use-after-free).
  std::vector<pipe_fds> pipes(200);
  {
    corio::runtime rt(workers(2));
    for (auto& p : pipes) {
      auto reader = [](int fd) -> corio::task<void> {
        std::array<std::byte, 64> buf{};
        (void)co_await corio::io::read(fd, buf);
      };
      REQUIRE(rt.spawn(reader(p.r)));
    }
    std::this_thread::sleep_for(20ms);
  }
  // The pipes still work (nothing consumed their data).
  REQUIRE(::write(pipes[0].w, "q", 1) == 1);
  char c = 0;
  CHECK(::read(pipes[0].r, &c, 1) == 1);
  CHECK(c == 'q');
}
