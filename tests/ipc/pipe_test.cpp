// Tests for ipc/pipe.hpp: anonymous pipes, EPIPE without SIGPIPE, back-pressure, FIFOs
// opened without blocking a worker, cancellation of reads, writes and FIFO opens, and the
// syscall tried before the ring (no SQE when ready, the ring when not, the budget).
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"
#include "refuse_threads.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio_test::bytes;
using corio_test::wbytes;

TEST_CASE("pipe: bytes written at one end are read at the other, then end of file", "[ipc][pipe]") {
  corio::runtime rt(corio_test::workers(2));
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  auto writer = [](corio::ipc::pipe_writer w) -> task<bool> {
    std::vector<char> data(1 << 20);
    for (std::size_t i = 0; i < data.size(); ++i) {
      data[i] = static_cast<char>(i * 7);
    }
    auto r = co_await w.write_all(std::as_bytes(std::span(data)));
    co_return static_cast<bool>(r);
  };
  auto body = [&]() -> task<bool> {
    auto wr = corio::spawn(writer(std::move(p->writer)));
    std::vector<char> got(1 << 20);
    auto r = co_await p->reader.read_exact(wbytes(got));
    bool ok = r && co_await wr;
    for (std::size_t i = 0; ok && i < got.size(); ++i) {
      ok = got[i] == static_cast<char>(i * 7);
    }
    std::array<std::byte, 8> tail{};
    auto eof = co_await p->reader.read_some(tail);
    co_return ok && eof && *eof == 0;
  };
  CHECK(rt.block_on(body()));
}

TEST_CASE("pipe: a write with no reader returns EPIPE and raises no SIGPIPE", "[ipc][pipe][fault]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  p->reader.close();
  auto body = [&]() -> task<std::error_code> {
    auto r = co_await p->writer.write_all(bytes("nobody listens"));
    co_return r ? std::error_code{} : r.error();
  };
  CHECK(rt.block_on(body()) == std::errc::broken_pipe);
}

TEST_CASE("pipe: a full pipe suspends the writer until the timeout", "[ipc][pipe][fault]") {
  corio::runtime rt(corio_test::workers(1));
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  auto body = [&]() -> task<std::error_code> {
    std::vector<std::byte> big(1 << 20);
    auto r = co_await corio::timeout(p->writer.write_all(big), 100ms);
    co_return r ? std::error_code{} : r.error();
  };
  CHECK(rt.block_on(body()) == std::errc::timed_out);
}

TEST_CASE("pipe: a stop token cancels a pending read", "[ipc][pipe][cancel]") {
  corio::runtime rt(corio_test::workers(2));
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  std::stop_source stop;
  auto body = [&]() -> task<std::error_code> {
    std::array<std::byte, 8> buf{};
    auto r = co_await p->reader.read_some(buf, stop.get_token());
    co_return r ? std::error_code{} : r.error();
  };
  std::thread canceller([&] {
    std::this_thread::sleep_for(50ms);
    stop.request_stop();
  });
  CHECK(rt.block_on(body()) == std::errc::operation_canceled);
  canceller.join();
}

TEST_CASE("fifo: both ends open asynchronously and exchange data", "[ipc][pipe][fifo]") {
  corio_test::temp_dir dir;
  std::string path = dir.file("f");
  REQUIRE(corio::ipc::make_fifo(path));
  CHECK(corio::ipc::make_fifo(path).error() == std::errc::file_exists);
  // One worker: if opening blocked the worker, the writer's open could never run.
  corio::runtime rt(corio_test::workers(1));
  auto body = [&]() -> task<std::string> {
    auto reader_task = corio::spawn(corio::ipc::open_fifo_reader(path));
    auto w = co_await corio::ipc::open_fifo_writer(path);
    auto r = co_await reader_task;
    if (!w || !r) {
      co_return "open";
    }
    (void)co_await w->write_all(bytes("via fifo"));
    w->close();
    std::string got(8, '\0');
    auto e = co_await r->read_exact(wbytes(got));
    co_return e ? got : e.error().message();
  };
  CHECK(rt.block_on(body()) == "via fifo");
}

// The open's spawn_blocking error once came out as "shut down" (ESHUTDOWN) whatever it
// was; a pool that cannot start a thread is the system's EAGAIN.
TEST_CASE("fifo: an open that no blocking-pool thread can take fails with the system's error, not shut down",
          "[ipc][pipe][fifo][fault]") {
  corio_test::temp_dir dir;
  std::string path = dir.file("f");
  REQUIRE(corio::ipc::make_fifo(path));
  corio::runtime rt(corio_test::workers(1));  // its pool has no thread yet
  auto open_refused = [&]() -> task<std::error_code> {
    corio_test::refuse_new_threads refused;
    auto r = co_await corio::ipc::open_fifo_reader(path);
    co_return r ? std::error_code{} : r.error();
  };
  const std::error_code error = rt.block_on(open_refused());
  // (pthread_create's EAGAIN; a sanitizer's interceptor might say ENOMEM.)
  CHECK((error == std::errc::resource_unavailable_try_again || error == std::errc::not_enough_memory));
}

TEST_CASE("fifo: a pending open with no peer is cancelled without leaking a descriptor",
          "[ipc][pipe][fifo][cancel]") {
  corio_test::temp_dir dir;
  std::string path = dir.file("f");
  REQUIRE(corio::ipc::make_fifo(path));
  std::size_t fds_before = corio_test::open_fd_count();
  {
    corio::runtime rt(corio_test::workers(1));
    auto body = [&]() -> task<std::error_code> {
      auto r = co_await corio::timeout(corio::ipc::open_fifo_reader(path), 100ms);
      co_return r ? std::error_code{} : r.error();
    };
    auto t0 = std::chrono::steady_clock::now();
    CHECK(rt.block_on(body()) == std::errc::timed_out);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  }
  // The detached helper that releases the blocked open holds the FIFO's other end for a
  // moment; on a loaded machine it may still be between its open() and close() here.
  CHECK(corio_test::settled_fd_count(fds_before) == fds_before);
}

namespace {
struct renamed_open_seen {
  std::error_code ec;
  long long stop_us = -1;  // how long request_stop() took on the caller's thread
};
task<void> stop_after(std::stop_source* src, std::string from, std::string to, long long* stop_us) {
  (void)co_await corio::sleep_for(50ms);  // the open is blocked in open(2) by now
  ::rename(from.c_str(), to.c_str());     // our counterpart open can no longer reach it
  auto t0 = std::chrono::steady_clock::now();
  src->request_stop();
  *stop_us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
}
task<renamed_open_seen> open_then_rename_and_cancel(std::string path, std::string moved) {
  renamed_open_seen s;
  std::stop_source src;
  auto stopper = corio::spawn(stop_after(&src, path, moved, &s.stop_us));
  auto r = co_await corio::timeout(corio::ipc::open_fifo_reader(path, src.get_token()), 3s);
  s.ec = r ? std::error_code{} : r.error();
  co_await stopper;
  co_return s;
}
}  // namespace

TEST_CASE("fifo: a cancelled open returns at once even if the blocked open(2) cannot be released",
          "[ipc][pipe][fifo][cancel]") {
  corio_test::temp_dir dir;
  std::string path = dir.file("f");
  std::string moved = dir.file("g");
  REQUIRE(corio::ipc::make_fifo(path));
  renamed_open_seen s;
  {
    corio::runtime rt(corio_test::workers(1));
    s = rt.block_on(open_then_rename_and_cancel(path, moved));
    // Release the blocking-pool thread still in open(2) (so the runtime can shut down).
    int fd = -1;
    for (int i = 0; i < 200 && fd < 0; ++i) {
      fd = ::open(moved.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) {
        std::this_thread::sleep_for(5ms);
      }
    }
    if (fd >= 0) {
      ::close(fd);
    }
  }
  CHECK(s.ec == std::errc::operation_canceled);  // not timed_out: the awaiter was not held
  CHECK(s.stop_us >= 0);
  CHECK(s.stop_us < 20000);  // the unblocking retries ran on a helper thread, not here
}

using corio_test::sqes_submitted;

TEST_CASE("pipe: reads and writes on an always-ready pipe complete without the ring", "[ipc][pipe]") {
  constexpr int kPairs = 2000;
  corio::runtime rt(corio_test::workers(1));
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  auto body = [&]() -> task<bool> {
    std::array<std::byte, 64> out{};
    std::array<std::byte, 64> in{};
    bool ok = true;
    for (int i = 0; i < kPairs && ok; ++i) {
      out[0] = static_cast<std::byte>(i);
      auto w = co_await p->writer.write_some(out);
      auto r = co_await p->reader.read_some(in);
      ok = w && r && *w == out.size() && *r == in.size() && in[0] == out[0];
    }
    co_return ok;
  };
  std::uint64_t before = sqes_submitted(rt);
  CHECK(rt.block_on(body()));
  // Through the ring, every write and read took an SQE (2 * kPairs); tried first, none does.
  CHECK(sqes_submitted(rt) - before < kPairs / 4);
}

TEST_CASE("pipe: a read on an empty pipe waits through the ring and gets the data, round after round",
          "[ipc][pipe]") {
  // One worker: when the body sees that the reader started read k, the reader has run on
  // to its suspension in that read, on a pipe that was empty (round k is not written yet).
  corio::runtime rt(corio_test::workers(1));
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  auto reader = [](const corio::ipc::pipe_reader* r, int* started) -> task<std::string> {
    std::string all;
    for (int round = 0; round < 3; ++round) {
      std::array<char, 8> buf{};
      ++*started;
      auto n = co_await r->read_some(std::as_writable_bytes(std::span(buf)));
      if (!n) {
        co_return n.error().message();
      }
      all.append(buf.data(), *n).append("|");
    }
    co_return all;
  };
  auto body = [&]() -> task<std::string> {
    int started = 0;
    auto rd = corio::spawn(reader(&p->reader, &started));
    // The second message fills the reader's buffer (a full ring read: the next read tries
    // first again and finds the pipe empty); the others leave it short.
    int round = 0;
    for (const char* msg : {"one", "eight b.", "three"}) {
      ++round;
      while (started < round) {
        (void)co_await corio::sleep_for(1ms);
      }
      (void)co_await p->writer.write_all(bytes(msg));
    }
    co_return co_await rd;
  };
  CHECK(rt.block_on(body()) == "one|eight b.|three|");
}

TEST_CASE("pipe: a loop on an always-ready pipe still lets the worker's other tasks run", "[ipc][pipe]") {
  constexpr int kLimit = 100'000;
  corio::runtime rt(corio_test::workers(1));
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  auto other = [](std::atomic<bool>* ran) -> task<void> {
    ran->store(true);
    co_return;
  };
  auto body = [&]() -> task<int> {
    std::atomic<bool> ran{false};
    auto t = corio::spawn(other(&ran));
    std::array<std::byte, 16> buf{};
    int i = 0;
    for (; i < kLimit && !ran.load(); ++i) {
      auto w = co_await p->writer.write_some(buf);
      auto r = co_await p->reader.read_some(buf);
      if (!w || !r) {
        co_return -1;
      }
    }
    co_await t;
    co_return i;
  };
  int loops = rt.block_on(body());
  CHECK(loops > 0);
  CHECK(loops < kLimit);  // the budget made the loop yield, so the spawned task ran
}
