// SysV message queue benchmark: corio::ipc::sysv_message_queue (IPC_NOWAIT fast path, a
// blocking msgsnd/msgrcv on the blocking pool when it would wait) against two plain
// threads using blocking msgsnd/msgrcv, and against the strategy corio did not choose,
// bounded polling (IPC_NOWAIT, then corio::sleep_for with a backoff from 20 µs to 1 ms),
// side by side in one run, systems alternating within each repeat.
//   sysv_pingpong: two parties pass a 64-byte message back and forth through two queues
//                  (µs per round trip)
//   sysv_stream  : one party sends 64-byte messages through one queue (the default 16 KiB
//                  capacity: 256 messages), the other receives them (k msgs/s)
//   sysv_idle_cpu: CPU time the process spends while one receive waits 500 ms on an
//                  empty queue (ms of CPU per second of waiting)
//   sysv_cancel  : from request_stop() to the cancelled receive's return, for a receive
//                  that sleeps in msgrcv (µs, median of the rounds)
// Prints each measurement, then `<benchmark> <system> <median> <unit>` lines and the
// ratios; a wrong count is reported on stderr and the exit status is 1.
//   sysv_bench [--rounds N] [--messages N] [--workers N] [--repeat N] [--only SYSTEM] [--bench NAME]
// (--only / --bench run one system / one benchmark, for profiling.) The command line and
// the harness that repeats, alternates and prints the runs are side_by_side.hpp's, shared
// with mq_bench.
#include "side_by_side.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/sysv_message_queue.hpp>

#include <dirent.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using steady = std::chrono::steady_clock;
using corio::ipc::sysv_message_queue;
using side_by_side::cpu_seconds;
using side_by_side::median;
using side_by_side::seconds_since;
using namespace std::chrono_literals;

namespace {

bool g_failed = false;
constexpr std::size_t kSize = 64;

/// A private queue, removed when the benchmark is done with it.
struct bench_queue {
  sysv_message_queue q;
  bench_queue() {
    auto made = sysv_message_queue::create(corio::ipc::sysv_key::private_key());
    if (!made) {
      std::fprintf(stderr, "create: %s\n", made.error().message().c_str());
      std::exit(1);
    }
    q = *made;
  }
  ~bench_queue() { (void)q.remove(); }
};

// ---- corio, as built ---------------------------------------------------------------

corio::task<void> corio_pong(const sysv_message_queue* in, const sysv_message_queue* out, int rounds) {
  std::vector<std::byte> buf(kSize);
  for (int i = 0; i < rounds; ++i) {
    auto m = co_await in->receive(buf);
    if (!m || !co_await out->send(std::span<const std::byte>(buf.data(), m->size))) {
      g_failed = true;
      co_return;
    }
  }
}

corio::task<double> corio_pingpong(int rounds) {
  bench_queue a, b;
  auto pong = corio::spawn(corio_pong(&a.q, &b.q, rounds));
  std::vector<std::byte> msg(kSize, std::byte{7});
  std::vector<std::byte> buf(kSize);
  auto t0 = steady::now();
  for (int i = 0; i < rounds; ++i) {
    auto sent = co_await a.q.send(msg);
    auto got = co_await b.q.receive(buf);
    if (!sent || !got || got->size != kSize) {
      g_failed = true;
      break;
    }
  }
  double s = seconds_since(t0);
  co_await pong;
  co_return s * 1e6 / rounds;
}

corio::task<void> corio_consume(const sysv_message_queue* q, int n, long* count) {
  std::vector<std::byte> buf(kSize);
  for (int i = 0; i < n; ++i) {
    if (co_await q->receive(buf)) {
      ++*count;
    }
  }
}

corio::task<double> corio_stream(int n) {
  bench_queue q;
  long count = 0;
  std::vector<std::byte> msg(kSize, std::byte{1});
  auto t0 = steady::now();
  auto consumer = corio::spawn(corio_consume(&q.q, n, &count));
  for (int i = 0; i < n; ++i) {
    if (!co_await q.q.send(msg)) {
      g_failed = true;
      break;
    }
  }
  co_await consumer;
  double s = seconds_since(t0);
  if (count != n) {
    std::fprintf(stderr, "FAILED: corio stream received %ld of %d\n", count, n);
    g_failed = true;
  }
  co_return n / s / 1e3;
}

// ---- corio, polling with backoff (the alternative) ----------------------------------

struct backoff {
  std::chrono::microseconds next{20};
  /// False when the sleep was cancelled (the caller gives up).
  corio::task<bool> wait() {
    auto slept = co_await corio::sleep_for(next);
    next = std::min<std::chrono::microseconds>(next * 2, 1ms);
    co_return slept.has_value();
  }
};

corio::task<bool> poll_send(const sysv_message_queue* q, std::span<const std::byte> m) {
  backoff b;
  for (;;) {
    auto r = q->try_send(m);
    if (r || r.error() != corio::errc::full) {
      co_return r.has_value();
    }
    if (!co_await b.wait()) {
      co_return false;
    }
  }
}

corio::task<corio::result<corio::ipc::sysv_received>> poll_receive(const sysv_message_queue* q,
                                                                   std::span<std::byte> buf) {
  backoff b;
  for (;;) {
    auto r = q->try_receive(buf);
    if (r || r.error() != corio::errc::empty) {
      co_return r;
    }
    if (!co_await b.wait()) {
      co_return corio::unexpected(corio::cancelled_error());
    }
  }
}

corio::task<void> polling_pong(const sysv_message_queue* in, const sysv_message_queue* out, int rounds) {
  std::vector<std::byte> buf(kSize);
  for (int i = 0; i < rounds; ++i) {
    auto m = co_await poll_receive(in, buf);
    if (!m || !co_await poll_send(out, std::span<const std::byte>(buf.data(), m->size))) {
      g_failed = true;
      co_return;
    }
  }
}

corio::task<double> polling_pingpong(int rounds) {
  bench_queue a, b;
  auto pong = corio::spawn(polling_pong(&a.q, &b.q, rounds));
  std::vector<std::byte> msg(kSize, std::byte{7});
  std::vector<std::byte> buf(kSize);
  auto t0 = steady::now();
  for (int i = 0; i < rounds; ++i) {
    bool sent = co_await poll_send(&a.q, msg);
    auto got = co_await poll_receive(&b.q, buf);
    if (!sent || !got || got->size != kSize) {
      g_failed = true;
      break;
    }
  }
  double s = seconds_since(t0);
  co_await pong;
  co_return s * 1e6 / rounds;
}

corio::task<double> polling_stream(int n) {
  bench_queue q;
  long count = 0;
  std::vector<std::byte> msg(kSize, std::byte{1});
  auto t0 = steady::now();
  auto consumer = corio::spawn([](const sysv_message_queue* q, int n, long* count) -> corio::task<void> {
    std::vector<std::byte> buf(kSize);
    for (int i = 0; i < n; ++i) {
      if (co_await poll_receive(q, buf)) {
        ++*count;
      }
    }
  }(&q.q, n, &count));
  for (int i = 0; i < n; ++i) {
    if (!co_await poll_send(&q.q, msg)) {
      g_failed = true;
      break;
    }
  }
  co_await consumer;
  double s = seconds_since(t0);
  if (count != n) {
    std::fprintf(stderr, "FAILED: polling stream received %ld of %d\n", count, n);
    g_failed = true;
  }
  co_return n / s / 1e3;
}

// ---- idle cost and cancellation ----------------------------------------------------

/// CPU ms per second while one receive waits 500 ms (cut short by a timeout).
template <class Receive>
corio::task<double> idle_cpu(Receive receive) {
  bench_queue q;
  std::vector<std::byte> buf(kSize);
  const double c0 = cpu_seconds();
  auto t0 = steady::now();
  auto r = co_await corio::timeout(receive(&q.q, std::span<std::byte>(buf)), 500ms);
  const double wall = seconds_since(t0);
  if (r || r.error() != std::errc::timed_out) {
    g_failed = true;
  }
  co_return (cpu_seconds() - c0) * 1e3 / wall;
}

bool some_thread_in_msgrcv() {
  std::vector<std::string> tids;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') {
        tids.emplace_back(e->d_name);
      }
    }
    ::closedir(d);
  }
  for (const auto& t : tids) {
    std::ifstream f("/proc/self/task/" + t + "/syscall");
    std::string first;
    if (f >> first && first != "running" && std::atol(first.c_str()) == SYS_msgrcv) {
      return true;
    }
  }
  return false;
}

/// Median µs from request_stop() to the return of a receive asleep in msgrcv.
corio::task<double> cancel_latency(int rounds) {
  bench_queue q;
  std::vector<double> us;
  for (int i = 0; i < rounds; ++i) {
    std::stop_source stop;
    auto waiter = corio::spawn([](const sysv_message_queue* q, std::stop_token t) -> corio::task<steady::time_point> {
      std::vector<std::byte> buf(kSize);
      auto r = co_await q->receive(buf, 0, t);
      if (r || r.error() != std::errc::operation_canceled) {
        g_failed = true;
      }
      co_return steady::now();
    }(&q.q, stop.get_token()));
    auto asleep = co_await corio::spawn_blocking([] {
      for (int spins = 0; spins < 100000; ++spins) {
        if (some_thread_in_msgrcv()) {
          return true;
        }
        std::this_thread::sleep_for(50us);
      }
      return false;
    });
    if (!asleep || !*asleep) {
      g_failed = true;
    }
    auto t0 = steady::now();
    stop.request_stop();
    auto t1 = co_await waiter;
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(us.begin(), us.end());
  co_return us[us.size() / 2];
}

// ---- blocking threads --------------------------------------------------------------

struct raw_msg {
  long type;
  char text[kSize];
};

int raw_queue() {
  const int id = ::msgget(IPC_PRIVATE, IPC_CREAT | 0600);
  if (id < 0) {
    std::perror("msgget");
    std::exit(1);
  }
  return id;
}

double threads_pingpong(int rounds) {
  const int a = raw_queue(), b = raw_queue();
  std::thread pong([&] {
    raw_msg m{};
    for (int i = 0; i < rounds; ++i) {
      ssize_t n = ::msgrcv(a, &m, kSize, 0, 0);
      if (n < 0 || ::msgsnd(b, &m, static_cast<std::size_t>(n), 0) != 0) {
        g_failed = true;
        return;
      }
    }
  });
  raw_msg msg{1, {7}};
  raw_msg in{};
  auto t0 = steady::now();
  for (int i = 0; i < rounds; ++i) {
    if (::msgsnd(a, &msg, kSize, 0) != 0 || ::msgrcv(b, &in, kSize, 0, 0) != static_cast<ssize_t>(kSize)) {
      g_failed = true;
      break;
    }
  }
  double s = seconds_since(t0);
  pong.join();
  ::msgctl(a, IPC_RMID, nullptr);
  ::msgctl(b, IPC_RMID, nullptr);
  return s * 1e6 / rounds;
}

double threads_stream(int n) {
  const int q = raw_queue();
  long count = 0;
  auto t0 = steady::now();
  std::thread consumer([&] {
    raw_msg m{};
    for (int i = 0; i < n; ++i) {
      if (::msgrcv(q, &m, kSize, 0, 0) >= 0) {
        ++count;
      }
    }
  });
  raw_msg msg{1, {1}};
  for (int i = 0; i < n; ++i) {
    if (::msgsnd(q, &msg, kSize, 0) != 0) {
      g_failed = true;
      break;
    }
  }
  consumer.join();
  double s = seconds_since(t0);
  ::msgctl(q, IPC_RMID, nullptr);
  if (count != n) {
    std::fprintf(stderr, "FAILED: thread stream received %ld of %d\n", count, n);
    g_failed = true;
  }
  return n / s / 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  side_by_side::options o;
  o.rounds = 50'000;
  o.messages = 500'000;
  if (auto rc = side_by_side::parse(argc, argv, "sysv_bench", o)) {
    return *rc;
  }
  const int rounds = o.rounds, messages = o.messages;
  const int polling_rounds = std::max(1, rounds / 10);
  corio::runtime_config cfg;
  cfg.workers = o.workers;
  corio::runtime rt(cfg);
  const std::vector<side_by_side::bench_plan> plan = {
      {"sysv_pingpong", "us/rtt",
       {{"corio", rounds, [&] { return rt.block_on(corio_pingpong(rounds)); }},
        {"polling", polling_rounds, [&] { return rt.block_on(polling_pingpong(polling_rounds)); }},
        {"threads-blocking", rounds, [&] { return threads_pingpong(rounds); }}}},
      {"sysv_stream", "kmsg/s",
       {{"corio", messages, [&] { return rt.block_on(corio_stream(messages)); }},
        {"polling", messages, [&] { return rt.block_on(polling_stream(messages)); }},
        {"threads-blocking", messages, [&] { return threads_stream(messages); }}}},
      {"sysv_idle_cpu", "cpu-ms/s",
       {{"corio", 1'000'000'000,
         [&] {
           auto receive = [](const sysv_message_queue* q, std::span<std::byte> b) { return q->receive(b); };
           return rt.block_on(idle_cpu(receive));
         }},
        {"polling", 1'000'000'000, [&] { return rt.block_on(idle_cpu(poll_receive)); }}}},
      {"sysv_cancel", "us", {{"corio", 50, [&] { return rt.block_on(cancel_latency(50)); }}}},
  };
  auto results = side_by_side::run(plan, o, " (pingpong: polling runs rounds/10)");
  if (!o.only.empty() || !o.only_bench.empty()) {
    return g_failed ? 1 : 0;
  }
  auto m = [&](const char* b, const char* s) { return median(results[b][s].values); };
  std::printf("ratio sysv_pingpong threads/corio %.2f (above 1: corio faster), threads/polling %.2f\n",
              m("sysv_pingpong", "threads-blocking") / m("sysv_pingpong", "corio"),
              m("sysv_pingpong", "threads-blocking") / m("sysv_pingpong", "polling"));
  std::printf("ratio sysv_stream corio/threads %.2f, polling/threads %.2f\n",
              m("sysv_stream", "corio") / m("sysv_stream", "threads-blocking"),
              m("sysv_stream", "polling") / m("sysv_stream", "threads-blocking"));
  return g_failed ? 1 : 0;
}
