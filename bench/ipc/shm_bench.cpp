// Cross-process benchmark of corio's process-shared primitives and shm_queue, side by
// side with the OS mechanisms, in one run, between two (or three) real processes.
//
//   shm_pingpong: two processes pass the turn back and forth, ns per round trip:
//     futex-raw          two words in shared memory, futex(2) wait/wake (the floor)
//     corio-event-nospin two auto-reset process_events, each side a corio task, with the
//                        spin disabled: every wait is an IORING_OP_FUTEX_WAIT
//     corio-semaphore-nospin  the same with two process_semaphores
//     futex-raw-spin     futex-raw, each wait first spinning 2 µs (corio's default policy)
//     corio-event, corio-semaphore   corio's default: spin 2 µs, then the ring
//     corio-event-pool   corio-event with the pre-6.7 fallback forced (blocking pool)
//     pipe, socketpair   two pipes / a Unix stream socket pair, 1 byte, blocking calls
//     posix-mq           two POSIX message queues, blocking mq_send/mq_receive
//     corio-message-queue  two corio::ipc::message_queue, each side a corio task
//     corio-shm-queue    two corio::ipc::shm_queue (capacity 256), 8-byte messages, each
//                        side a corio task with the default wait (spin, then the ring)
//   shm_stream_<size>_<p>p: one-way throughput, p producer processes, one consumer, msgs/s:
//     corio-shm-queue    shm_queue (capacity 256), awaitable send / receive, 1 worker each
//     corio-shm-queue-nospin   the same with the spin disabled
//     corio-shm-queue-claimed  (1 producer only) the producer claims the producers' side
//                        and the consumer the consumers' (claim_sending / claim_receiving):
//                        no lock per message
//     posix-mq           blocking mq_send / mq_receive (capacity 10: the default msg_max)
//     pipe               blocking write / read of one message each (atomic: <= PIPE_BUF)
//     unix-dgram         a SOCK_DGRAM socket pair, blocking send / recv
//     python-mp-queue    multiprocessing.Queue (bench/ipc/shm_queue_peer.py), if python3 runs
//     plain-ring         (1 producer only) a lock-free single-producer ring in shared memory
//                        with shm_queue's geometry (capacity 256, 8-byte slot header, slots
//                        rounded to 64 bytes): a memcpy in, one release store to publish, a
//                        memcpy out, a consumer that pauses like shm_queue's batching pause
//                        (half the spin budget, ~1 µs) between looks; no locks, no
//                        sleeping, no recovery from a death. What moving the bytes between
//                        two CPUs costs here: the floor under corio-shm-queue.
// Each corio side is its own process with its own runtime of 1 worker. Ratios are printed
// at the end: ping-pong against the floor with the same wait policy (target: corio
// within 1.2x), streams against
// each peer (targets: >= 10 M msgs/s at 64 B with 1 producer; >= 40x Python's Queue).
// --pin same|cross pins the two processes of every ping-pong (floors and peers alike) to
// one CPU (each wake-up is a context switch: no idle CPU is involved) or to two different
// CPUs. Unpinned, on a VM, a round trip that crosses CPUs also pays for waking an idle
// virtual CPU, whose cost swings with the hypervisor's halt polling: the no-spin event has
// read from 0.36x to 2.9x the plain floor with the same build, minutes apart; pinned to one
// CPU the figures spread by ~10%. Streams are never pinned. --ipis prints after each
// ping-pong figure the machine's wake-up IPIs per round trip (/proc/interrupts, the CAL
// and RES rows of x86, machine-wide): on the 2-vCPU VM measured, a wake-up that finds the
// other CPU halted took one and the round trip across two CPUs followed their count.
// Prints `<benchmark> <system> <value> <unit>` (median of --repeat runs); a wrong count is
// reported on stderr and the exit status is 1.
//   shm_bench [--rounds N] [--messages N] [--repeat R] [--python PATH] [--peer-script PATH]
//             [--only pingpong|stream] [--pin same|cross] [--ipis] [--system NAME]
// --system NAME runs only the ping-pong of that system (e.g. corio-event-nospin), for a
// profile or a syscall count of one of them.
#include "side_by_side.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/message_queue.hpp>
#include <corio/ipc/process_event.hpp>
#include <corio/ipc/process_semaphore.hpp>
#include <corio/ipc/shm_queue.hpp>
#include <corio/runtime/port.hpp>

#include <fcntl.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <new>
#include <string>
#include <vector>

using steady = std::chrono::steady_clock;
using side_by_side::median;

namespace {

bool g_failed = false;

/// --pin: the CPU of the parent (and, pinned `same`, of its children) and, pinned `cross`,
/// of each forked child; -1: not pinned.
int g_parent_cpu = -1;
int g_child_cpu = -1;

bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

double seconds_since(steady::time_point t0) { return std::chrono::duration<double>(steady::now() - t0).count(); }

std::string unique_name(const char* tag) { return "/corio-shm-bench-" + std::to_string(::getpid()) + "-" + tag; }

corio::runtime_config one_worker() {
  corio::runtime_config c;
  c.workers = 1;
  return c;
}

/// An anonymous shared page for the raw futex words and the start flag.
struct shared_page {
  corio::ipc::memory_map map = *corio::ipc::memory_map::anonymous(1 << 16);
  std::atomic<std::uint32_t>& word(int i) {
    return *std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(map.data() + 64 * i));
  }
  std::span<std::byte> objects() { return map.bytes().subspan(4096); }
};

long futex(std::atomic<std::uint32_t>& w, int op, std::uint32_t v) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w), op, v, nullptr, nullptr, 0);
}

/// Waits (futex) until `w` holds `v`; with `spin_ns`, first spins that long (the same
/// policy as corio's waits, for the spinning floor).
void wait_value(std::atomic<std::uint32_t>& w, std::uint32_t v, unsigned spin_ns = 0) {
  if (spin_ns > 0 && w.load(std::memory_order_acquire) != v) {
    const auto end = steady::now() + std::chrono::nanoseconds(spin_ns);
    while (w.load(std::memory_order_acquire) != v && steady::now() < end) {
      for (int i = 0; i < 16 && w.load(std::memory_order_relaxed) != v; ++i) {
        corio::port::cpu_relax();
      }
    }
  }
  for (std::uint32_t seen = w.load(std::memory_order_acquire); seen != v; seen = w.load(std::memory_order_acquire)) {
    futex(w, FUTEX_WAIT, seen);
  }
}

void store_wake(std::atomic<std::uint32_t>& w, std::uint32_t v) {
  w.store(v, std::memory_order_release);
  futex(w, FUTEX_WAKE, INT32_MAX);
}

/// Runs `fn` in a forked child; returns its pid. A child dies with this process, so a
/// run that stops early (a failed fork below, a crash) leaves no child waiting forever.
template <class F>
pid_t fork_child(F fn) {
  std::fflush(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("shm_bench: fork");  // no pid to kill or reap: stop here (children die too)
    std::exit(1);
  }
  if (pid == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) {
      ::_exit(1);  // the parent went before the signal was armed (the signal comes when
                   // the thread that forked exits; shm_bench forks only from its main thread)
    }
    if (g_child_cpu >= 0 && !pin_to(g_child_cpu)) {
      std::perror("shm_bench: sched_setaffinity (child)");
      ::_exit(1);
    }
    ::_exit(fn());
  }
  return pid;
}

bool reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return false;
    }
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/// Ends a two-process ping-pong: when this side failed (`ok` false) the child may wait
/// forever for a message that will not come, so it is killed first; then reaped. True if
/// both sides succeeded. (A child that fails leaves this side waiting: the rows' waits
/// have no timeout.)
bool finish(pid_t child, bool ok) {
  if (!ok) {
    ::kill(child, SIGKILL);
  }
  return reap(child) && ok;
}

/// The wake-up IPIs the machine has taken so far: the function-call (CAL) and
/// rescheduling (RES) rows of /proc/interrupts, summed over the CPUs (x86 names; CAL
/// also counts other cross-CPU calls), or -1 where they cannot be read.
long wakeup_ipis() {
  FILE* f = std::fopen("/proc/interrupts", "r");
  if (f == nullptr) {
    return -1;
  }
  char* line = nullptr;
  std::size_t capacity = 0;
  long total = 0;
  int rows = 0;
  while (::getline(&line, &capacity, f) > 0) {
    const char* p = line;
    while (*p == ' ') {
      ++p;
    }
    if (std::strncmp(p, "CAL:", 4) != 0 && std::strncmp(p, "RES:", 4) != 0) {
      continue;
    }
    ++rows;
    p += 4;
    for (;;) {  // the per-CPU counts; the row's description stops the scan
      char* end = nullptr;
      const long v = std::strtol(p, &end, 10);
      if (end == p) {
        break;
      }
      total += v;
      p = end;
    }
  }
  std::free(line);
  std::fclose(f);
  return rows == 2 ? total : -1;
}

// ---- ping-pong ---------------------------------------------------------------------
//
// Every transport: the parent (A) starts each round, the child (B) answers. `warm` rounds
// first, then `rounds` timed ones; the time is the parent's.

constexpr int kWarm = 1000;

constexpr unsigned kSpinNs = 2000;  // corio's default spin budget (ipc/detail/shared_word.hpp)

double pingpong_futex(int rounds, unsigned spin_ns) {
  shared_page page;
  auto& to_b = page.word(0);
  auto& to_a = page.word(1);
  const pid_t b = fork_child([&] {
    for (std::uint32_t i = 1; i <= static_cast<std::uint32_t>(kWarm + rounds); ++i) {
      wait_value(to_b, i, spin_ns);
      store_wake(to_a, i);
    }
    return 0;
  });
  steady::time_point t0{};
  for (std::uint32_t i = 1; i <= static_cast<std::uint32_t>(kWarm + rounds); ++i) {
    if (i == kWarm + 1) {
      t0 = steady::now();
    }
    store_wake(to_b, i);
    wait_value(to_a, i, spin_ns);
  }
  const double s = seconds_since(t0);
  g_failed |= !reap(b);
  return s * 1e9 / rounds;
}

/// A pair of corio turn-passing objects (events or semaphores) in shared memory.
template <class Turn>
struct turns {
  Turn to_a;
  Turn to_b;
};

corio::task<bool> corio_party(std::function<void()> give, std::function<corio::task<bool>()> take, bool starts,
                              int total, steady::time_point* t0, int warm) {
  for (int i = 0; i < total; ++i) {
    if (i == warm && t0 != nullptr) {
      *t0 = steady::now();
    }
    if (starts) {
      give();
      if (!co_await take()) {
        co_return false;
      }
    } else {
      if (!co_await take()) {
        co_return false;
      }
      give();
    }
  }
  co_return true;
}

/// How a corio side waits: the default (spin, then the ring), without the spin, or the
/// pre-6.7 fallback (spin, then the blocking pool).
enum class corio_wait { spin_then_ring, ring_only, spin_then_pool };

void apply(corio_wait how) {
  corio::ipc::detail::set_spin_budget(how == corio_wait::ring_only ? 0 : kSpinNs);
  corio::ipc::detail::set_futex_wait_mode(how == corio_wait::spin_then_pool
                                              ? corio::ipc::detail::futex_wait_mode::force_blocking_pool
                                              : corio::ipc::detail::futex_wait_mode::automatic);
}

template <class Make, class Give, class Take>
double pingpong_corio(int rounds, Make make, Give give, Take take, corio_wait how) {
  shared_page page;
  auto objects = page.objects();
  auto to_a = make(objects, 0);
  auto to_b = make(objects, 64);
  const int total = kWarm + rounds;
  const pid_t b = fork_child([&] {
    apply(how);
    bool ok = corio::run(corio_party([&] { give(to_a); }, [&] { return take(to_b); }, false, total, nullptr, kWarm),
                         one_worker());
    return ok ? 0 : 1;
  });
  apply(how);
  steady::time_point t0{};
  bool ok = corio::run(corio_party([&] { give(to_b); }, [&] { return take(to_a); }, true, total, &t0, kWarm),
                       one_worker());
  const double s = seconds_since(t0);
  apply(corio_wait::spin_then_ring);
  g_failed |= !finish(b, ok);
  return s * 1e9 / rounds;
}

corio::task<bool> take_event(corio::ipc::process_event e) { co_return static_cast<bool>(co_await e.wait()); }
corio::task<bool> take_semaphore(corio::ipc::process_semaphore s) { co_return static_cast<bool>(co_await s.acquire()); }

double pingpong_event(int rounds, corio_wait how) {
  return pingpong_corio(
      rounds,
      [](std::span<std::byte> region, std::size_t at) {
        return *corio::ipc::process_event::construct(region, at, corio::ipc::event_mode::auto_reset);
      },
      [](corio::ipc::process_event& e) { e.set(); }, [](corio::ipc::process_event& e) { return take_event(e); }, how);
}

double pingpong_semaphore(int rounds, corio_wait how) {
  return pingpong_corio(
      rounds, [](std::span<std::byte> region, std::size_t at) { return *corio::ipc::process_semaphore::construct(region, at, 0); },
      [](corio::ipc::process_semaphore& s) { (void)s.release(); },
      [](corio::ipc::process_semaphore& s) { return take_semaphore(s); }, how);
}

/// Blocking ping-pong over two descriptor pairs (pipes or one socket pair).
double pingpong_fds(int rounds, int a_write, int a_read, int b_write, int b_read) {
  const int total = kWarm + rounds;
  const pid_t b = fork_child([&] {
    char c = 0;
    for (int i = 0; i < total; ++i) {
      if (::read(b_read, &c, 1) != 1 || ::write(b_write, &c, 1) != 1) {
        return 1;
      }
    }
    return 0;
  });
  steady::time_point t0{};
  char c = 'x';
  bool ok = true;
  for (int i = 0; i < total && ok; ++i) {
    if (i == kWarm) {
      t0 = steady::now();
    }
    ok = ::write(a_write, &c, 1) == 1 && ::read(a_read, &c, 1) == 1;
  }
  const double s = seconds_since(t0);
  g_failed |= !finish(b, ok);
  return s * 1e9 / rounds;
}

double pingpong_pipe(int rounds) {
  int ab[2], ba[2];
  if (::pipe(ab) != 0 || ::pipe(ba) != 0) {
    g_failed = true;
    return 0;
  }
  const double ns = pingpong_fds(rounds, ab[1], ba[0], ba[1], ab[0]);
  for (int fd : {ab[0], ab[1], ba[0], ba[1]}) {
    ::close(fd);
  }
  return ns;
}

double pingpong_socketpair(int rounds) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
    g_failed = true;
    return 0;
  }
  const double ns = pingpong_fds(rounds, sv[0], sv[0], sv[1], sv[1]);
  ::close(sv[0]);
  ::close(sv[1]);
  return ns;
}

constexpr long kMqSize = 64;

mqd_t open_mq(const std::string& name, long max_messages, long size, bool nonblocking) {
  mq_attr attr{};
  attr.mq_maxmsg = max_messages;
  attr.mq_msgsize = size;
  mqd_t q = ::mq_open(name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0), 0600, &attr);
  if (q == static_cast<mqd_t>(-1)) {
    std::fprintf(stderr, "mq_open %s: %s\n", name.c_str(), std::strerror(errno));
    std::exit(1);
  }
  return q;
}

double pingpong_mq(int rounds) {
  const std::string na = unique_name("to-a"), nb = unique_name("to-b");
  mqd_t to_a = open_mq(na, 10, kMqSize, false);
  mqd_t to_b = open_mq(nb, 10, kMqSize, false);
  ::mq_unlink(na.c_str());
  ::mq_unlink(nb.c_str());
  const int total = kWarm + rounds;
  const pid_t b = fork_child([&] {
    char buf[kMqSize];
    for (int i = 0; i < total; ++i) {
      if (::mq_receive(to_b, buf, sizeof buf, nullptr) < 0 || ::mq_send(to_a, buf, 8, 0) != 0) {
        return 1;
      }
    }
    return 0;
  });
  char buf[kMqSize] = {};
  steady::time_point t0{};
  bool ok = true;
  for (int i = 0; i < total && ok; ++i) {
    if (i == kWarm) {
      t0 = steady::now();
    }
    ok = ::mq_send(to_b, buf, 8, 0) == 0 && ::mq_receive(to_a, buf, sizeof buf, nullptr) >= 0;
  }
  const double s = seconds_since(t0);
  g_failed |= !finish(b, ok);
  ::mq_close(to_a);
  ::mq_close(to_b);
  return s * 1e9 / rounds;
}

/// One side of a request/reply over two corio queues (message_queue or shm_queue).
template <class Queue>
corio::task<bool> corio_queue_party(const Queue* in, const Queue* out, bool starts, int total, steady::time_point* t0) {
  std::vector<std::byte> buf(kMqSize);
  for (int i = 0; i < total; ++i) {
    if (i == kWarm && t0 != nullptr) {
      *t0 = steady::now();
    }
    if (starts) {
      auto sent = co_await out->send(std::span<const std::byte>(buf.data(), 8));
      if (!sent) {
        co_return false;
      }
    }
    auto got = co_await in->receive(buf);
    if (!got) {
      co_return false;
    }
    if (!starts) {
      auto sent = co_await out->send(std::span<const std::byte>(buf.data(), 8));
      if (!sent) {
        co_return false;
      }
    }
  }
  co_return true;
}

/// Times `rounds` request/replies between this process (sending on `to_b`, receiving on
/// `to_a`) and a forked child (the other way round), each on a one-worker runtime.
template <class Queue>
double queue_pingpong(const Queue& to_a, const Queue& to_b, int rounds) {
  const int total = kWarm + rounds;
  const pid_t b = fork_child([&] {
    return corio::run(corio_queue_party(&to_b, &to_a, false, total, nullptr), one_worker()) ? 0 : 1;
  });
  steady::time_point t0{};
  const bool ok = corio::run(corio_queue_party(&to_a, &to_b, true, total, &t0), one_worker());
  const double s = seconds_since(t0);
  g_failed |= !finish(b, ok);
  return s * 1e9 / rounds;
}

double pingpong_corio_mq(int rounds) {
  const std::string na = unique_name("cq-a"), nb = unique_name("cq-b");
  corio::ipc::message_queue_options o;
  o.max_messages = 10;
  o.message_size = kMqSize;
  auto to_a = corio::ipc::message_queue::create(na, o);
  auto to_b = corio::ipc::message_queue::create(nb, o);
  // Unlinked at once, whether or not both were created: a failed run leaves no name behind.
  (void)corio::ipc::message_queue::remove(na);
  (void)corio::ipc::message_queue::remove(nb);
  if (!to_a || !to_b) {
    g_failed = true;
    return 0;
  }
  return queue_pingpong(*to_a, *to_b, rounds);
}

double pingpong_shm_queue(int rounds) {
  const std::string na = unique_name("sq-a"), nb = unique_name("sq-b");
  const corio::ipc::shm_queue_options o{.capacity = 256, .max_message_size = kMqSize};
  auto to_a = corio::ipc::shm_queue::create(na, o);
  auto to_b = corio::ipc::shm_queue::create(nb, o);
  (void)corio::ipc::shm_queue::remove(na);
  (void)corio::ipc::shm_queue::remove(nb);
  if (!to_a || !to_b) {
    g_failed = true;
    return 0;
  }
  return queue_pingpong(*to_a, *to_b, rounds);
}

// ---- streams -----------------------------------------------------------------------
//
// Producers are forked children that wait for `go` (a futex word) so that process
// start-up is not timed; the parent consumes and times from go to the last message.

struct stream_setup {
  std::size_t size;
  int producers;
  int messages;  // total, split between the producers
};

/// Forks the producers (each runs `produce(count)`), then times `consume(total)`.
template <class Produce, class Consume>
double stream(const stream_setup& s, Produce produce, Consume consume) {
  shared_page page;
  auto& go = page.word(0);
  const int per = s.messages / s.producers;
  std::vector<pid_t> kids;
  for (int p = 0; p < s.producers; ++p) {
    kids.push_back(fork_child([&] {
      wait_value(go, 1);
      return produce(per) ? 0 : 1;
    }));
  }
  ::usleep(20000);  // let them reach the start line
  const auto t0 = steady::now();
  store_wake(go, 1);
  const long got = consume(per * s.producers);
  const double secs = seconds_since(t0);
  bool ok = got == per * s.producers;
  for (pid_t k : kids) {
    if (!ok) {
      ::kill(k, SIGKILL);  // a producer may wait forever on a queue nobody reads any more
    }
    ok = reap(k) && ok;
  }
  if (!ok) {
    std::fprintf(stderr, "FAILED: a stream received %ld of %d\n", got, per * s.producers);
    g_failed = true;
  }
  return got / secs;
}

corio::task<bool> shm_produce(const corio::ipc::shm_queue* q, std::size_t size, int count) {
  std::vector<std::byte> m(size, std::byte{7});
  for (int i = 0; i < count; ++i) {
    if (!co_await q->send(m)) {
      co_return false;
    }
  }
  co_return true;
}

// The same through a claim of the producers' side (shm_queue.hpp, "Claims").
corio::task<bool> shm_produce_claimed(const corio::ipc::shm_queue* q, std::size_t size, int count) {
  auto sender = co_await q->claim_sending();
  if (!sender) {
    co_return false;
  }
  std::vector<std::byte> m(size, std::byte{7});
  for (int i = 0; i < count; ++i) {
    if (!co_await sender->send(m)) {
      co_return false;
    }
  }
  co_return true;
}

corio::task<long> shm_consume(const corio::ipc::shm_queue* q, std::size_t size, int count) {
  std::vector<std::byte> buf(q->max_message_size());
  long got = 0;
  for (int i = 0; i < count; ++i) {
    auto r = co_await q->receive(buf);
    if (!r || *r != size) {
      break;
    }
    ++got;
  }
  co_return got;
}

corio::task<long> shm_consume_claimed(const corio::ipc::shm_queue* q, std::size_t size, int count) {
  auto receiver = co_await q->claim_receiving();
  if (!receiver) {
    co_return 0;
  }
  std::vector<std::byte> buf(q->max_message_size());
  long got = 0;
  for (int i = 0; i < count; ++i) {
    auto r = co_await receiver->receive(buf);
    if (!r || *r != size) {
      break;
    }
    ++got;
  }
  co_return got;
}

/// `claimed`: the producer and the consumer each claim their side first.
double stream_shm(const stream_setup& s, corio_wait how, bool claimed = false) {
  const std::string name = unique_name("stream");
  auto q = corio::ipc::shm_queue::create(name, {.capacity = 256, .max_message_size = s.size});
  if (!q) {
    std::fprintf(stderr, "shm_queue %s: %s\n", name.c_str(), q.error().message().c_str());
    g_failed = true;
    return 0;
  }
  (void)corio::ipc::shm_queue::remove(name);
  apply(how);  // the producers inherit it through fork
  const double rate = stream(
      s,
      [&](int n) {
        return corio::run(claimed ? shm_produce_claimed(&*q, s.size, n) : shm_produce(&*q, s.size, n), one_worker());
      },
      [&](int total) {
        return corio::run(claimed ? shm_consume_claimed(&*q, s.size, total) : shm_consume(&*q, s.size, total),
                          one_worker());
      });
  apply(corio_wait::spin_then_ring);
  return rate;
}

/// The plain-ring row (see the top of the file): one producer, spinning on both sides.
double stream_ring(const stream_setup& s) {
  constexpr std::uint32_t capacity = 256;
  const std::size_t stride = (8 + s.size + 63) / 64 * 64;
  auto map = corio::ipc::memory_map::anonymous(4096 + stride * capacity);
  if (!map || s.producers != 1) {
    g_failed = true;
    return 0;
  }
  std::byte* base = map->data();
  // Each count on its own pair of cache lines (the adjacent-line prefetcher pairs them).
  auto& published = *::new (static_cast<void*>(base)) std::atomic<std::uint32_t>(0);
  auto& consumed = *::new (static_cast<void*>(base + 128)) std::atomic<std::uint32_t>(0);
  std::byte* slots = base + 4096;
  auto slot = [&](std::uint32_t pos) { return slots + (pos % capacity) * stride; };
  return stream(
      s,
      [&](int n) {
        std::vector<std::byte> m(s.size, std::byte{7});
        const auto size = static_cast<std::uint32_t>(s.size);
        std::uint32_t w = 0;
        std::uint32_t free = 0;
        for (int i = 0; i < n; ++i) {
          // acquire: pairs with the consumer's release; it is done with the slots it freed.
          while (free == 0 && (free = capacity - (w - consumed.load(std::memory_order_acquire))) == 0) {
            corio::port::cpu_relax();
          }
          std::memcpy(slot(w), &size, sizeof size);
          std::memcpy(slot(w) + 8, m.data(), m.size());
          ++w;
          --free;
          published.store(w, std::memory_order_release);  // release: the slot is filled
        }
        return true;
      },
      [&](int total) {
        std::vector<std::byte> buf(s.size);
        std::uint32_t r = 0;
        std::uint32_t available = 0;
        long got = 0;
        for (int i = 0; i < total; ++i) {
          // acquire: pairs with the producer's release store of the count.
          while (available == 0 && (available = published.load(std::memory_order_acquire) - r) == 0) {
            corio::ipc::detail::spin_without_looking();  // shm_queue's batching pause (~1 µs)
          }
          std::uint32_t size = 0;
          std::memcpy(&size, slot(r), sizeof size);
          if (size != s.size) {
            break;
          }
          std::memcpy(buf.data(), slot(r) + 8, size);
          ++r;
          --available;
          consumed.store(r, std::memory_order_release);  // release: done reading the slot
          ++got;
        }
        return got;
      });
}

double stream_mq(const stream_setup& s) {
  const std::string name = unique_name("mq-stream");
  mqd_t q = open_mq(name, 10, static_cast<long>(s.size), false);
  ::mq_unlink(name.c_str());
  const double rate = stream(
      s,
      [&](int n) {
        std::vector<char> m(s.size, 'x');
        for (int i = 0; i < n; ++i) {
          if (::mq_send(q, m.data(), m.size(), 0) != 0) {
            return false;
          }
        }
        return true;
      },
      [&](int total) {
        std::vector<char> buf(s.size);
        long got = 0;
        for (int i = 0; i < total; ++i) {
          if (::mq_receive(q, buf.data(), buf.size(), nullptr) != static_cast<ssize_t>(s.size)) {
            break;
          }
          ++got;
        }
        return got;
      });
  ::mq_close(q);
  return rate;
}

/// Blocking write/read of one message per call on a pipe or a datagram socket pair.
double stream_fds(const stream_setup& s, int write_fd, int read_fd) {
  return stream(
      s,
      [&](int n) {
        std::vector<char> m(s.size, 'x');
        for (int i = 0; i < n; ++i) {
          if (::write(write_fd, m.data(), m.size()) != static_cast<ssize_t>(m.size())) {
            return false;
          }
        }
        return true;
      },
      [&](int total) {
        std::vector<char> buf(s.size);
        long got = 0;
        for (int i = 0; i < total; ++i) {
          std::size_t have = 0;
          while (have < s.size) {  // a pipe is a byte stream: read the message whole
            ssize_t n = ::read(read_fd, buf.data() + have, s.size - have);
            if (n <= 0) {
              return got;
            }
            have += static_cast<std::size_t>(n);
          }
          ++got;
        }
        return got;
      });
}

double stream_pipe(const stream_setup& s) {
  int p[2];
  if (::pipe(p) != 0) {
    g_failed = true;
    return 0;
  }
  const double rate = stream_fds(s, p[1], p[0]);
  ::close(p[0]);
  ::close(p[1]);
  return rate;
}

double stream_dgram(const stream_setup& s) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) != 0) {
    g_failed = true;
    return 0;
  }
  const double rate = stream_fds(s, sv[0], sv[1]);
  ::close(sv[0]);
  ::close(sv[1]);
  return rate;
}

/// Runs the Python peer; its rate, or 0 if python3 is missing or failed.
double stream_python(const stream_setup& s, const std::string& python, const std::string& script) {
  const std::string cmd = python + " '" + script + "' " + std::to_string(s.size) + " " + std::to_string(s.producers) +
                          " " + std::to_string(s.messages) + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    return 0;
  }
  char line[512] = {};
  double rate = 0;
  while (std::fgets(line, sizeof line, p) != nullptr) {
    char bench[128] = {}, system[128] = {};
    double v = 0;
    if (std::sscanf(line, "%127s %127s %lf", bench, system, &v) == 3 && std::strcmp(system, "python-mp-queue") == 0) {
      rate = v;
    } else {
      std::fprintf(stderr, "python peer: %s", line);
    }
  }
  ::pclose(p);
  return rate;
}

template <class F>
double measure(int repeat, F f) {
  std::vector<double> v;
  for (int i = 0; i < repeat; ++i) {
    v.push_back(f());
  }
  return median(v);
}

}  // namespace

#ifndef CORIO_SHM_PEER_SCRIPT
#define CORIO_SHM_PEER_SCRIPT "bench/ipc/shm_queue_peer.py"
#endif

int main(int argc, char** argv) {
  int rounds = 20000;
  int messages = 2000000;
  int repeat = 1;
  std::string python = "python3";
  std::string script = CORIO_SHM_PEER_SCRIPT;
  std::string only;
  std::string system_only;  // --system: one ping-pong system only
  std::string pin;
  bool pin_given = false;
  bool count_ipis = false;
  auto usage = [](const char* why) {
    if (why != nullptr) {
      std::fprintf(stderr, "shm_bench: %s\n", why);
    }
    std::fprintf(stderr,
                 "usage: shm_bench [--rounds N] [--messages N] [--repeat R] [--python PATH] [--peer-script PATH] "
                 "[--only pingpong|stream] [--pin same|cross] [--ipis] [--system NAME]\n");
    std::exit(2);
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage((a + " needs a value").c_str());
      }
      return argv[++i];
    };
    // A count: a decimal integer that is the whole argument (atoi read "5x" as 5).
    auto number = [&]() -> int {
      const std::string v = value();
      char* end = nullptr;
      errno = 0;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || errno != 0 || n < INT_MIN || n > INT_MAX) {
        usage((a + " takes an integer, not '" + v + "'").c_str());
      }
      return static_cast<int>(n);
    };
    if (a == "--rounds") {
      rounds = number();
    } else if (a == "--messages") {
      messages = number();
    } else if (a == "--repeat") {
      repeat = number();
    } else if (a == "--python") {
      python = value();
    } else if (a == "--peer-script") {
      script = value();
    } else if (a == "--only") {
      only = value();
      if (only != "pingpong" && only != "stream") {
        usage("--only takes pingpong or stream");
      }
    } else if (a == "--system") {
      system_only = value();
    } else if (a == "--ipis") {
      count_ipis = true;
    } else if (a == "--pin") {
      pin_given = true;
      pin = value();
    } else {
      usage(nullptr);
    }
  }
  if (rounds < 1 || messages < 100 || repeat < 1) {
    std::fprintf(stderr, "shm_bench: --rounds >= 1, --messages >= 100, --repeat >= 1\n");
    return 2;
  }
  if (pin_given && pin != "same" && pin != "cross") {
    std::fprintf(stderr, "shm_bench: --pin takes same or cross\n");
    return 2;
  }
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
    std::perror("shm_bench: sched_getaffinity");
    return 1;
  }
  if (!pin.empty()) {
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c) {
      if (CPU_ISSET(c, &allowed)) {
        cpus.push_back(c);
      }
    }
    if (pin == "cross" && cpus.size() < 2) {
      std::fprintf(stderr, "shm_bench: --pin cross needs two CPUs; this process may use one\n");
      return 2;
    }
    g_parent_cpu = cpus[0];
    g_child_cpu = pin == "cross" ? cpus[1] : -1;  // same: a child inherits the parent's CPU
    if (only.empty() || only == "pingpong") {
      std::printf("-- ping-pong pinned: parent on CPU %d, child on CPU %d\n", g_parent_cpu,
                  g_child_cpu >= 0 ? g_child_cpu : g_parent_cpu);
    }
  }
  std::map<std::string, double> results;
  auto report = [&](const std::string& bench, const std::string& system, double v, const char* unit) {
    std::printf("%s %s %.0f %s\n", bench.c_str(), system.c_str(), v, unit);
    std::fflush(stdout);
    results[bench + " " + system] = v;
  };
  if (only.empty() || only == "pingpong") {
    if (g_parent_cpu >= 0 && !pin_to(g_parent_cpu)) {
      std::perror("shm_bench: sched_setaffinity");
      return 1;
    }
    // With --ipis, after each figure: the machine's wake-up IPIs per round trip (all
    // processes, warm-up rounds included).
    if (count_ipis && wakeup_ipis() < 0) {
      std::fprintf(stderr, "shm_bench: --ipis: no CAL and RES rows in /proc/interrupts here\n");
    }
    auto pp = [&](const char* system, int rounds_used, auto fn) {
      if (!system_only.empty() && system_only != system) {
        return;
      }
      const long before = count_ipis ? wakeup_ipis() : -1;
      report("shm_pingpong", system, measure(repeat, fn), "ns/rtt");
      const long after = before >= 0 ? wakeup_ipis() : -1;
      if (after >= 0) {
        std::printf("shm_pingpong %s/ipis %.2f IPIs/rtt\n", system,
                    static_cast<double>(after - before) / ((kWarm + rounds_used) * repeat));
      }
    };
    pp("futex-raw", rounds, [&] { return pingpong_futex(rounds, 0); });
    pp("corio-event-nospin", rounds, [&] { return pingpong_event(rounds, corio_wait::ring_only); });
    pp("corio-semaphore-nospin", rounds, [&] { return pingpong_semaphore(rounds, corio_wait::ring_only); });
    pp("futex-raw-spin", rounds, [&] { return pingpong_futex(rounds, kSpinNs); });
    pp("corio-event", rounds, [&] { return pingpong_event(rounds, corio_wait::spin_then_ring); });
    pp("corio-semaphore", rounds, [&] { return pingpong_semaphore(rounds, corio_wait::spin_then_ring); });
    pp("corio-event-pool", rounds / 4, [&] { return pingpong_event(rounds / 4, corio_wait::spin_then_pool); });
    pp("pipe", rounds, [&] { return pingpong_pipe(rounds); });
    pp("socketpair", rounds, [&] { return pingpong_socketpair(rounds); });
    pp("posix-mq", rounds, [&] { return pingpong_mq(rounds); });
    pp("corio-message-queue", rounds, [&] { return pingpong_corio_mq(rounds); });
    pp("corio-shm-queue", rounds, [&] { return pingpong_shm_queue(rounds); });
    if (!system_only.empty() && results.count("shm_pingpong " + system_only) == 0) {
      std::fprintf(stderr, "shm_bench: --system %s: no such ping-pong system\n", system_only.c_str());
      return 2;
    }
    g_child_cpu = -1;  // the streams run unpinned
    if (g_parent_cpu >= 0 && ::sched_setaffinity(0, sizeof allowed, &allowed) != 0) {
      std::perror("shm_bench: sched_setaffinity");
      return 1;
    }
  }
  if (only.empty() || only == "stream") {
    for (std::size_t size : {std::size_t{64}, std::size_t{4096}}) {
      for (int producers : {1, 2}) {
        const std::string b = "shm_stream_" + std::to_string(size) + "_" + std::to_string(producers) + "p";
        // The syscall peers move ~10x fewer messages per second: give them fewer.
        const int n = size == 64 ? messages : messages / 4;
        report(b, "corio-shm-queue",
               measure(repeat, [&] { return stream_shm({size, producers, n}, corio_wait::spin_then_ring); }), "msgs/s");
        report(b, "corio-shm-queue-nospin",
               measure(repeat, [&] { return stream_shm({size, producers, n / 4}, corio_wait::ring_only); }), "msgs/s");
        if (producers == 1) {  // (two claimed producers would only take turns)
          report(b, "corio-shm-queue-claimed",
                 measure(repeat, [&] { return stream_shm({size, producers, n}, corio_wait::spin_then_ring, true); }),
                 "msgs/s");
          report(b, "plain-ring", measure(repeat, [&] { return stream_ring({size, producers, n}); }), "msgs/s");
        }
        report(b, "posix-mq", measure(repeat, [&] { return stream_mq({size, producers, n / 8}); }), "msgs/s");
        report(b, "pipe", measure(repeat, [&] { return stream_pipe({size, producers, n / 8}); }), "msgs/s");
        report(b, "unix-dgram", measure(repeat, [&] { return stream_dgram({size, producers, n / 8}); }), "msgs/s");
        const double py = measure(repeat, [&] { return stream_python({size, producers, n / 40}, python, script); });
        if (py > 0) {
          report(b, "python-mp-queue", py, "msgs/s");
        } else {
          std::printf("%s python-mp-queue skipped (no working %s)\n", b.c_str(), python.c_str());
        }
      }
    }
  }
  std::printf("-- ratios (same run)\n");
  // Each corio wait policy against the raw floor with the same policy: spin-then-sleep
  // against the spinning floor, sleep-only against the plain one.
  struct pair_ {
    const char* system;
    const char* floor;
    bool target;
  };
  for (const pair_& p : {pair_{"corio-event-nospin", "futex-raw", true}, pair_{"corio-semaphore-nospin", "futex-raw", true},
                         pair_{"corio-event", "futex-raw-spin", true}, pair_{"corio-semaphore", "futex-raw-spin", true},
                         pair_{"corio-event", "futex-raw", false}, pair_{"corio-event-pool", "futex-raw-spin", false},
                         pair_{"pipe", "futex-raw", false}, pair_{"socketpair", "futex-raw", false},
                         pair_{"posix-mq", "futex-raw", false}, pair_{"corio-message-queue", "futex-raw", false},
                         pair_{"corio-shm-queue", "futex-raw-spin", false}}) {
    auto it = results.find(std::string("shm_pingpong ") + p.system);
    auto fl = results.find(std::string("shm_pingpong ") + p.floor);
    if (it != results.end() && fl != results.end() && fl->second > 0) {
      const double r = it->second / fl->second;
      std::printf("shm_pingpong %s / %s = %.2fx%s\n", p.system, p.floor, r,
                  !p.target ? "" : (r <= 1.2 ? "  (target <= 1.2x: met)" : "  (target <= 1.2x: MISSED)"));
    }
  }
  for (const auto& [key, value] : results) {
    if (key.rfind("shm_stream_", 0) != 0 || key.find("corio-shm-queue") == std::string::npos ||
        key.find("nospin") != std::string::npos) {
      continue;
    }
    const std::string bench = key.substr(0, key.find(' '));
    const std::string system = key.substr(key.find(' ') + 1);
    for (const char* peer : {"plain-ring", "posix-mq", "pipe", "unix-dgram", "python-mp-queue"}) {
      auto it = results.find(bench + " " + peer);
      if (it != results.end() && it->second > 0) {
        std::printf("%s %s / %s = %.*fx%s\n", bench.c_str(), system.c_str(), peer, value < it->second ? 2 : 1,
                    value / it->second,
                    std::strcmp(peer, "python-mp-queue") == 0
                        ? (value / it->second >= 40 ? "  (target >= 40x: met)" : "  (target >= 40x: MISSED)")
                        : "");
      }
    }
    if (bench == "shm_stream_64_1p") {
      std::printf("%s %s = %.2f M msgs/s%s\n", bench.c_str(), system.c_str(), value / 1e6,
                  value >= 10e6 ? "  (target >= 10 M: met)" : "  (target >= 10 M: MISSED)");
    }
  }
  return g_failed ? 1 : 0;
}
