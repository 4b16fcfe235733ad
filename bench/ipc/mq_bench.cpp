// POSIX message queue benchmark: corio::ipc::message_queue (O_NONBLOCK + IORING_OP_POLL_ADD
// when full or empty) against two plain threads using blocking mq_send / mq_receive, the
// same work side by side in one run.
//   mq_pingpong: two parties pass a 64-byte message back and forth through two queues
//                (µs per round trip)
//   mq_stream  : one party sends 64-byte messages through one queue of capacity 10, the
//                other receives them (k msgs/s)
// Prints `<benchmark> <system> <value> <unit>` lines; a wrong count is reported on stderr
// and the exit status is 1.
//   mq_bench [--rounds N] [--messages N] [--workers N] [--repeat N] [--only SYSTEM] [--bench NAME]
// Each repeat runs every system, in an order that alternates from one repeat to the next;
// the medians and their ratios follow, with the process CPU time per operation (user +
// system, all threads): a figure that depends less on how busy the machine is. (That
// harness, and the command line, are side_by_side.hpp's, shared with sysv_bench.)
#include "side_by_side.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/message_queue.hpp>

#include <fcntl.h>
#include <mqueue.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

using steady = std::chrono::steady_clock;
using corio::ipc::message_queue;
using side_by_side::median;
using side_by_side::seconds_since;

namespace {

bool g_failed = false;
constexpr std::size_t kSize = 64;

std::string queue_name(const char* tag) { return "/corio-mq-bench-" + std::to_string(::getpid()) + "-" + tag; }

message_queue make_queue(const std::string& name) {
  corio::ipc::message_queue_options o;
  o.max_messages = 10;
  o.message_size = kSize;
  auto q = message_queue::create(name, o);
  if (!q) {
    std::fprintf(stderr, "create %s: %s\n", name.c_str(), q.error().message().c_str());
    std::exit(1);
  }
  (void)message_queue::remove(name);  // the handles keep it alive
  return std::move(*q);
}

// ---- corio -----------------------------------------------------------------------

corio::task<void> corio_pong(const message_queue* in, const message_queue* out, int rounds) {
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
  auto a = make_queue(queue_name("a"));
  auto b = make_queue(queue_name("b"));
  auto pong = corio::spawn(corio_pong(&a, &b, rounds));
  std::vector<std::byte> msg(kSize, std::byte{7});
  std::vector<std::byte> buf(kSize);
  auto t0 = steady::now();
  for (int i = 0; i < rounds; ++i) {
    auto sent = co_await a.send(msg);
    auto got = co_await b.receive(buf);
    if (!sent || !got || got->size != kSize) {
      g_failed = true;
      break;
    }
  }
  double s = seconds_since(t0);
  co_await pong;
  co_return s * 1e6 / rounds;
}

corio::task<void> corio_consume(const message_queue* q, int n, long* count) {
  std::vector<std::byte> buf(kSize);
  for (int i = 0; i < n; ++i) {
    if (co_await q->receive(buf)) {
      ++*count;
    }
  }
}

corio::task<double> corio_stream(int n) {
  auto q = make_queue(queue_name("s"));
  long count = 0;
  std::vector<std::byte> msg(kSize, std::byte{1});
  auto t0 = steady::now();
  auto consumer = corio::spawn(corio_consume(&q, n, &count));
  for (int i = 0; i < n; ++i) {
    if (!co_await q.send(msg)) {
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

// ---- blocking threads --------------------------------------------------------------

int blocking_open(const std::string& name) {
  mq_attr attr{};
  attr.mq_maxmsg = 10;
  attr.mq_msgsize = kSize;
  mqd_t q = ::mq_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attr);
  if (q == static_cast<mqd_t>(-1)) {
    std::perror("mq_open");
    std::exit(1);
  }
  ::mq_unlink(name.c_str());
  return q;
}

double threads_pingpong(int rounds) {
  int a = blocking_open(queue_name("ta"));
  int b = blocking_open(queue_name("tb"));
  std::thread pong([&] {
    char buf[kSize];
    for (int i = 0; i < rounds; ++i) {
      ssize_t n = ::mq_receive(a, buf, kSize, nullptr);
      if (n < 0 || ::mq_send(b, buf, static_cast<std::size_t>(n), 0) != 0) {
        g_failed = true;
        return;
      }
    }
  });
  char msg[kSize] = {7};
  char buf[kSize];
  auto t0 = steady::now();
  for (int i = 0; i < rounds; ++i) {
    if (::mq_send(a, msg, kSize, 0) != 0 || ::mq_receive(b, buf, kSize, nullptr) != static_cast<ssize_t>(kSize)) {
      g_failed = true;
      break;
    }
  }
  double s = seconds_since(t0);
  pong.join();
  ::close(a);
  ::close(b);
  return s * 1e6 / rounds;
}

double threads_stream(int n) {
  int q = blocking_open(queue_name("ts"));
  long count = 0;
  auto t0 = steady::now();
  std::thread consumer([&] {
    char buf[kSize];
    for (int i = 0; i < n; ++i) {
      if (::mq_receive(q, buf, kSize, nullptr) >= 0) {
        ++count;
      }
    }
  });
  char msg[kSize] = {1};
  for (int i = 0; i < n; ++i) {
    if (::mq_send(q, msg, kSize, 0) != 0) {
      g_failed = true;
      break;
    }
  }
  consumer.join();
  double s = seconds_since(t0);
  ::close(q);
  if (count != n) {
    std::fprintf(stderr, "FAILED: thread stream received %ld of %d\n", count, n);
    g_failed = true;
  }
  return n / s / 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  side_by_side::options o;
  o.rounds = 100'000;
  o.messages = 1'000'000;
  if (auto rc = side_by_side::parse(argc, argv, "mq_bench", o)) {
    return *rc;
  }
  const int rounds = o.rounds, messages = o.messages;
  corio::runtime_config cfg;
  cfg.workers = o.workers;
  corio::runtime rt(cfg);
  const std::vector<side_by_side::bench_plan> plan = {
      {"mq_pingpong", "us/rtt",
       {{"corio", rounds, [&] { return rt.block_on(corio_pingpong(rounds)); }},
        {"threads-blocking", rounds, [&] { return threads_pingpong(rounds); }}}},
      {"mq_stream", "kmsg/s",
       {{"corio", messages, [&] { return rt.block_on(corio_stream(messages)); }},
        {"threads-blocking", messages, [&] { return threads_stream(messages); }}}},
  };
  auto results = side_by_side::run(plan, o, "");
  if (o.only.empty() && o.only_bench.empty()) {
    auto m = [&](const char* b, const char* s) { return median(results[b][s].values); };
    auto c = [&](const char* b, const char* s) { return median(results[b][s].cpu_ns); };
    std::printf("ratio mq_pingpong threads/corio %.2f (above 1: corio faster); cpu per round trip corio/threads %.2f\n",
                m("mq_pingpong", "threads-blocking") / m("mq_pingpong", "corio"),
                c("mq_pingpong", "corio") / c("mq_pingpong", "threads-blocking"));
    std::printf("ratio mq_stream corio/threads %.2f (above 1: corio faster); cpu per message corio/threads %.2f\n",
                m("mq_stream", "corio") / m("mq_stream", "threads-blocking"),
                c("mq_stream", "corio") / c("mq_stream", "threads-blocking"));
  }
  return g_failed ? 1 : 0;
}
