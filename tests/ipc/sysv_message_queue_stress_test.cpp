// Stress test for ipc/sysv_message_queue.hpp: 4 processes x 2 workers send and receive
// on one queue at once, with short timeouts cutting waits short all the time; every
// message must arrive exactly once (count and sum), none may be lost to a cancelled wait.
#include <corio/ipc/sysv_message_queue.hpp>

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <stop_token>
#include <thread>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/timeout.hpp>

#include "helpers.hpp"

using namespace std::chrono_literals;
using corio::ipc::sysv_key;
using corio::ipc::sysv_message_queue;
using corio::ipc::sysv_message_queue_options;

namespace {

constexpr int kProcesses = 4;
constexpr int kSendersPerProcess = 3;
constexpr int kReceiversPerProcess = 3;
constexpr std::int64_t kPerSender = 20000;
constexpr long kData = 1, kStop = 2, kSendersDone = 3;

/// What each child reports, in memory shared with the parent.
struct report {
  std::atomic<std::int64_t> received{0};
  std::atomic<std::int64_t> sum{0};
  std::atomic<std::int64_t> timeouts{0};
  std::atomic<std::int64_t> errors{0};
};

/// Sends kPerSender values; a short timeout cuts a wait for room short now and then,
/// and the send is then simply tried again (a timed-out send has sent nothing).
corio::task<void> sender(sysv_message_queue q, std::int64_t first, report* r) {
  for (std::int64_t i = 0; i < kPerSender; ++i) {
    const std::int64_t v = first + i;
    for (;;) {
      auto sent = co_await corio::timeout(q.send(std::as_bytes(std::span(&v, 1)), kData), 200us);
      if (sent) {
        break;
      }
      if (sent.error() == std::errc::timed_out) {
        r->timeouts.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      r->errors.fetch_add(1, std::memory_order_relaxed);
      co_return;
    }
  }
}

/// Receives data (type <= 2: data before the stop markers sent after it) until a stop
/// marker; a short timeout cuts waits short, and a timed-out receive has taken nothing.
corio::task<void> receiver(sysv_message_queue q, report* r, int salt) {
  std::vector<std::byte> buf(64);
  for (int round = 0;; ++round) {
    const auto limit = std::chrono::microseconds(50 + (round * 37 + salt * 101) % 400);
    auto got = co_await corio::timeout(q.receive(buf, -kStop), limit);
    if (!got) {
      if (got.error() == std::errc::timed_out) {
        r->timeouts.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      r->errors.fetch_add(1, std::memory_order_relaxed);
      co_return;
    }
    if (got->type == kStop) {
      co_return;
    }
    std::int64_t v = 0;
    if (got->size != sizeof v) {
      r->errors.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    std::memcpy(&v, buf.data(), sizeof v);
    r->received.fetch_add(1, std::memory_order_relaxed);
    r->sum.fetch_add(v, std::memory_order_relaxed);
  }
}

corio::task<void> child_main(sysv_message_queue q, int index, report* r) {
  std::vector<corio::join_handle<void>> receivers, senders;
  for (int i = 0; i < kReceiversPerProcess; ++i) {
    receivers.push_back(corio::spawn(receiver(q, r, index * kReceiversPerProcess + i)));
  }
  for (int i = 0; i < kSendersPerProcess; ++i) {
    const std::int64_t first = (static_cast<std::int64_t>(index) * kSendersPerProcess + i) * kPerSender;
    senders.push_back(corio::spawn(sender(q, first, r)));
  }
  for (auto& h : senders) {
    co_await h;
  }
  (void)co_await q.send({}, kSendersDone);  // tell the parent; the receivers go on
  for (auto& h : receivers) {
    co_await h;
  }
}

}  // namespace

TEST_CASE("sysv_message_queue stress: 4 processes x 2 workers, timeouts everywhere, every message exactly once",
          "[ipc][sysv][stress]") {
  sysv_message_queue_options small;
  small.max_bytes = 1024;  // a small queue: senders wait for room often
  auto made = sysv_message_queue::create(sysv_key::private_key(), small);
  REQUIRE(made);
  const sysv_message_queue q = *made;
  void* shared = ::mmap(nullptr, sizeof(report) * kProcesses, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
  REQUIRE(shared != MAP_FAILED);
  auto* reports = new (shared) report[kProcesses];
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      {
        corio::runtime rt(corio_test::workers(2));
        rt.block_on(child_main(q, p, &reports[p]));
      }
      ::_exit(0);
    }
    children.push_back(pid);
  }
  // A child that fails never says it is done: a watchdog stops the parent's waits then.
  std::stop_source watchdog_stop;
  std::mutex m;
  std::condition_variable cv;
  bool finished = false;
  std::thread watchdog([&] {
    std::unique_lock lock(m);
    if (!cv.wait_for(lock, 300s, [&] { return finished; })) {
      watchdog_stop.request_stop();
    }
  });
  // Once every sender is done, one stop marker per receiver: they queue behind the data.
  bool all_done = true;
  std::vector<std::byte> buf(16);
  for (int p = 0; p < kProcesses && all_done; ++p) {
    all_done = q.receive_blocking(buf, kSendersDone, watchdog_stop.get_token()).has_value();
  }
  for (int i = 0; i < kProcesses * kReceiversPerProcess && all_done; ++i) {
    all_done = q.send_blocking({}, kStop, watchdog_stop.get_token()).has_value();
  }
  {
    std::lock_guard lock(m);
    finished = true;
  }
  cv.notify_one();
  watchdog.join();
  if (!all_done) {
    for (pid_t c : children) {
      ::kill(c, SIGKILL);
    }
  }
  for (pid_t c : children) {
    int status = 0;
    REQUIRE(::waitpid(c, &status, 0) == c);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  REQUIRE(all_done);
  std::int64_t received = 0, sum = 0, timeouts = 0, errors = 0;
  for (int p = 0; p < kProcesses; ++p) {
    received += reports[p].received.load();
    sum += reports[p].sum.load();
    timeouts += reports[p].timeouts.load();
    errors += reports[p].errors.load();
  }
  const std::int64_t total = kProcesses * kSendersPerProcess * kPerSender;
  INFO("received " << received << " of " << total << ", waits cut short by a timeout: " << timeouts);
  CHECK(errors == 0);
  CHECK(received == total);
  CHECK(sum == total * (total - 1) / 2);
  CHECK(q.attributes()->messages == 0);
  (void)q.remove();
  ::munmap(shared, sizeof(report) * kProcesses);
}
