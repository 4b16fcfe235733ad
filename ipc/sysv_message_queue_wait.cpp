// ipc/sysv_message_queue_wait.cpp: the waits of SysV message queues' send/receive (and
// their _blocking forms): the interruptible wait that send/receive hand to the blocking
// pool — a per-thread POSIX timer aimed at the waiting thread, armed by a stop request
// (wait_gate holds the hand-shake between the two threads). The queue itself, keys and
// the IPC_NOWAIT fast path are in sysv_message_queue.cpp.
#include <corio/ipc/sysv_message_queue.hpp>

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <optional>
#include <thread>

#include <corio/ipc/detail/sysv_io.hpp>
#include <corio/runtime/blocking.hpp>
#include <corio/runtime/runtime.hpp>

namespace corio::ipc {

namespace {

using detail::sysv_receive_once;
using detail::sysv_send_once;
using detail::sysv_transfer_error;

// ---- interrupting a waiting thread -------------------------------------------------

void on_interrupt(int) noexcept {}  // its only job is to make msgsnd/msgrcv return EINTR

/// Installs the do-nothing handler once per process (no SA_RESTART: not that msgsnd/
/// msgrcv would be restarted anyway) and returns the signal.
int installed_interrupt_signal() noexcept {
  static const int signo = [] {
    const int s = SIGRTMAX - 1;
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    (void)::sigaction(s, &sa, nullptr);
    return s;
  }();
  return signo;
}

/// This thread's POSIX timer, aimed at this thread with the interrupt signal; created on
/// first use and deleted when the thread exits. A child made by fork() inherits the
/// thread_local but not the timer (POSIX timers are not inherited; in the child the id
/// is stale or names another thread's timer): the tid it was made for tells, and the
/// child's thread makes its own.
struct thread_timer {
  timer_t id{};
  pid_t tid = 0;   // the thread the timer was made for
  int error = -1;  // -1: not created yet; 0: ok; else the errno of timer_create
  ~thread_timer() {
    if (error == 0 && tid == ::gettid()) {
      (void)::timer_delete(id);
    }
  }
};

result<timer_t> this_thread_timer() {
  thread_local thread_timer t;
  const pid_t tid = static_cast<pid_t>(::gettid());
  if (t.error < 0 || t.tid != tid) {
    sigevent ev{};
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = installed_interrupt_signal();
    ev._sigev_un._tid = tid;  // sigev_notify_thread_id (older glibc lacks the name)
    t.tid = tid;
    t.error = ::timer_create(CLOCK_MONOTONIC, &ev, &t.id) == 0 ? 0 : errno;
  }
  if (t.error != 0) {
    return unexpected(os_error(-t.error));
  }
  return t.id;
}

/// The hand-shake between a thread about to block in msgsnd/msgrcv and whoever requests
/// a stop. States: idle (not started) -> blocking (the waiter published its timer) ->
/// arming -> armed (a canceller is arming / has armed that timer) -> done. A stop before
/// the wait starts moves idle -> cancelled, and the wait never blocks. The waiter leaves
/// only after an arming canceller has finished, and disarms the timer itself, so no
/// interrupt outlives the wait and reaches another job of the thread.
class wait_gate {
 public:
  /// Waiter: publishes `timer`; false if a stop came first.
  bool enter(timer_t timer) noexcept {
    m_timer = timer;
    int expected = idle;
    // release: the canceller that sees `blocking` (acquire) reads m_timer.
    return m_state.compare_exchange_strong(expected, blocking, std::memory_order_release, std::memory_order_relaxed);
  }
  /// Waiter: whether a stop has been requested (checked before each blocking call).
  [[nodiscard]] bool stopping() const noexcept {
    // relaxed: only the flag itself matters here; the timer keeps interrupting until
    // the waiter reads it, so a stale read costs one more millisecond, never a hang.
    return m_state.load(std::memory_order_relaxed) >= arming;
  }
  /// Waiter: ends the wait (see the class comment) and disarms the timer, whoever armed
  /// it. A signal it already raised is delivered to this thread, which has the signal
  /// unblocked, when timer_settime returns: no interrupt outlives the wait.
  void leave() noexcept {
    int s = m_state.load(std::memory_order_acquire);
    for (;;) {
      if (s == blocking) {
        // acq_rel: either we end the wait, or we see the canceller's arming/armed.
        if (m_state.compare_exchange_weak(s, done, std::memory_order_acq_rel, std::memory_order_acquire)) {
          break;
        }
        continue;
      }
      if (s == arming) {
        std::this_thread::yield();  // the canceller is inside timer_settime
        s = m_state.load(std::memory_order_acquire);
        continue;
      }
      break;  // armed, or cancelled before enter() (the timer is ours alone)
    }
    // armed: acquire above, the canceller's timer_settime happened before this one.
    itimerspec off{};
    (void)::timer_settime(m_timer, 0, &off, nullptr);
  }
  /// Canceller (any thread, from a stop callback).
  void cancel() noexcept {
    int s = m_state.load(std::memory_order_acquire);
    for (;;) {
      if (s == idle) {
        if (m_state.compare_exchange_weak(s, cancelled, std::memory_order_acquire, std::memory_order_acquire)) {
          return;
        }
        continue;
      }
      if (s != blocking) {
        return;  // cancelled already, or the wait has ended
      }
      // acquire on success: m_timer, written before the waiter's release, is visible.
      if (m_state.compare_exchange_weak(s, arming, std::memory_order_acquire, std::memory_order_acquire)) {
        break;
      }
    }
    // Fire now, then every millisecond: a signal that lands just before the waiter
    // enters msgrcv is lost, the next one is not.
    itimerspec every{};
    every.it_value.tv_nsec = 1;
    every.it_interval.tv_nsec = 1'000'000;
    (void)::timer_settime(m_timer, 0, &every, nullptr);
    // release: the waiter that sees armed (acquire) disarms after our timer_settime.
    m_state.store(armed, std::memory_order_release);
  }

 private:
  enum : int { idle, cancelled, blocking, arming, armed, done };
  std::atomic<int> m_state{idle};
  timer_t m_timer{};
};

struct gate_cancel {
  wait_gate* gate;
  void operator()() const noexcept { gate->cancel(); }
};

/// What wait_interruptibly returns when its time slice is over (the caller tries again):
/// msgsnd/msgrcv never fail with ETIMEDOUT themselves.
std::error_code slice_over() noexcept { return make_error_code(errc::timed_out); }

/// How long one wait on the blocking pool lasts before it hands the task back to a
/// worker, which tries again: a runtime that shuts down waits for running pool jobs, so
/// this bounds how long a forgotten wait can hold a shutdown up.
constexpr std::chrono::milliseconds pool_slice{100};

/// How many more times a send or receive that would wait tries again on its worker,
/// yielding to the worker's other tasks before each try, before it takes the blocking
/// pool's much dearer path: a peer that answers meanwhile (a ping-pong partner on this
/// worker or on another) costs a few failed IPC_NOWAIT calls instead of three thread
/// hand-offs. Counted, not timed, so that on a busy machine the waste stays bounded. In
/// bench/ipc/sysv_bench, 4 gave the least CPU per ping-pong round trip (none: about 8x
/// more; 1 or 8: somewhat more, on a noisy machine), and a stream's CPU per message did
/// not change from 0 to 16.
constexpr int spin_tries = 4;

/// Runs `call` (a blocking msgsnd/msgrcv: >= 0 or -1 with errno) on this thread until it
/// succeeds, fails, `gate` is stopped (operation_canceled) or, with a non-zero `slice`,
/// the slice is over (slice_over()). A success that races the stop is returned.
template <class Call>
result<ssize_t> wait_interruptibly(wait_gate& gate, Call call, std::chrono::nanoseconds slice) {
  auto timer = this_thread_timer();
  if (!timer) {
    return unexpected(timer.error());
  }
  const auto slice_end = std::chrono::steady_clock::now() + slice;
  if (slice.count() > 0) {
    // Armed before enter(): a canceller touches the timer only once we are blocking, so
    // its setting always wins over this one. Periodic, like the canceller's: a signal
    // that lands just before msgrcv is entered is followed by another.
    itimerspec every{};
    every.it_value.tv_sec = static_cast<time_t>(slice.count() / 1'000'000'000);
    every.it_value.tv_nsec = static_cast<long>(slice.count() % 1'000'000'000);
    every.it_interval = every.it_value;
    (void)::timer_settime(*timer, 0, &every, nullptr);
  }
  sigset_t interrupt, previous;
  sigemptyset(&interrupt);
  sigaddset(&interrupt, installed_interrupt_signal());
  (void)::pthread_sigmask(SIG_UNBLOCK, &interrupt, &previous);
  result<ssize_t> out = unexpected(cancelled_error());
  if (gate.enter(*timer)) {
    while (!gate.stopping()) {
      const ssize_t n = call();
      if (n >= 0) {
        out = n;
        break;
      }
      if (errno != EINTR) {
        out = unexpected(sysv_transfer_error(errno));
        break;
      }
      if (slice.count() > 0 && std::chrono::steady_clock::now() >= slice_end) {
        out = unexpected(slice_over());
        break;
      }
    }
  }
  gate.leave();
  (void)::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return out;
}

/// A blocking call with an optional stop token, on a plain thread.
template <class Call>
result<ssize_t> wait_on_this_thread(const std::stop_token& token, Call call) {
  if (!token.stop_possible()) {
    for (;;) {
      const ssize_t n = call();
      if (n >= 0) {
        return n;
      }
      if (errno != EINTR) {
        return unexpected(sysv_transfer_error(errno));
      }
    }
  }
  wait_gate gate;
  std::stop_callback<gate_cancel> on_stop(token, gate_cancel{&gate});
  return wait_interruptibly(gate, call, std::chrono::nanoseconds::zero());
}

/// Awaits `wait(gate)` (result<R>, run on the blocking pool) with the explicit and the
/// inherited token able to interrupt it.
template <class R, class Wait>
task<result<R>> wait_on_pool(Wait wait, std::stop_token token) {
  std::stop_token inherited = co_await get_stop_token();
  wait_gate gate;
  std::optional<std::stop_callback<gate_cancel>> by_token;
  std::optional<std::stop_callback<gate_cancel>> by_inherited;
  if (token.stop_possible()) {
    by_token.emplace(token, gate_cancel{&gate});
  }
  if (inherited.stop_possible()) {
    by_inherited.emplace(inherited, gate_cancel{&gate});
  }
  // A stop while the job is still queued withdraws it (spawn_blocking); one while it
  // waits interrupts it through the gate. Either way the frame outlives the job.
  auto done = co_await spawn_blocking([&gate, &wait] { return wait(gate); }, token);
  by_token.reset();
  by_inherited.reset();
  if (!done) {
    co_return unexpected(done.error());
  }
  co_return std::move(*done);
}

bool stop_requested(const std::stop_token& a, const std::stop_token& b) noexcept {
  return a.stop_requested() || b.stop_requested();
}

}  // namespace

int sysv_message_queue::interrupt_signal() noexcept { return installed_interrupt_signal(); }

task<result<void>> sysv_message_queue::send(std::span<const std::byte> message, long type,
                                            std::stop_token token) const {
  auto sent = try_send(message, type);
  if (sent || sent.error() != errc::full) {
    co_return sent;
  }
  // Full. First try again a few times, letting this worker's other tasks run in between
  // (a receiver here, or one on another worker, may make room at once).
  const std::stop_token inherited = co_await get_stop_token();
  for (int tries = 0; tries < spin_tries; ++tries) {
    if (stop_requested(token, inherited)) {
      co_return unexpected(cancelled_error());
    }
    co_await corio::yield_now{};
    sent = try_send(message, type);
    if (sent || sent.error() != errc::full) {
      co_return sent;
    }
  }
  // Then wait on the blocking pool, one slice at a time.
  const int id = m_id;
  for (;;) {
    auto waited = co_await wait_on_pool<ssize_t>(
        [id, message, type](wait_gate& gate) {
          return wait_interruptibly(
              gate, [&] { return static_cast<ssize_t>(sysv_send_once(id, message, type, 0)); }, pool_slice);
        },
        token);
    if (waited) {
      co_return result<void>{};
    }
    if (waited.error() != slice_over()) {
      co_return unexpected(waited.error());
    }
    // The slice is over: back on a worker; try again and, if still full, wait again.
    sent = try_send(message, type);
    if (sent || sent.error() != errc::full) {
      co_return sent;
    }
  }
}

task<result<sysv_received>> sysv_message_queue::receive(std::span<std::byte> buffer, long type,
                                                        std::stop_token token) const {
  auto got = try_receive(buffer, type);
  if (got || got.error() != errc::empty) {
    co_return got;
  }
  // Nothing to take. First try again a few times (see send).
  const std::stop_token inherited = co_await get_stop_token();
  for (int tries = 0; tries < spin_tries; ++tries) {
    if (stop_requested(token, inherited)) {
      co_return unexpected(cancelled_error());
    }
    co_await corio::yield_now{};
    got = try_receive(buffer, type);
    if (got || got.error() != errc::empty) {
      co_return got;
    }
  }
  // Then wait on the blocking pool, one slice at a time.
  const int id = m_id;
  const std::size_t cap = m_max_message;
  for (;;) {
    sysv_received out;
    auto waited = co_await wait_on_pool<ssize_t>(
        [id, buffer, cap, type, &out](wait_gate& gate) {
          return wait_interruptibly(
              gate, [&] { return sysv_receive_once(id, buffer, cap, type, 0, &out.type); }, pool_slice);
        },
        token);
    if (waited) {
      out.size = static_cast<std::size_t>(*waited);
      co_return out;
    }
    if (waited.error() != slice_over()) {
      co_return unexpected(waited.error());
    }
    got = try_receive(buffer, type);
    if (got || got.error() != errc::empty) {
      co_return got;
    }
  }
}

result<void> sysv_message_queue::send_blocking(std::span<const std::byte> message, long type,
                                               std::stop_token token) const {
  auto sent = try_send(message, type);
  if (sent || sent.error() != errc::full) {
    return sent;
  }
  auto waited = wait_on_this_thread(token, [&] { return static_cast<ssize_t>(sysv_send_once(m_id, message, type, 0)); });
  if (!waited) {
    return unexpected(waited.error());
  }
  return {};
}

result<sysv_received> sysv_message_queue::receive_blocking(std::span<std::byte> buffer, long type,
                                                           std::stop_token token) const {
  auto got = try_receive(buffer, type);
  if (got || got.error() != errc::empty) {
    return got;
  }
  sysv_received out;
  auto waited =
      wait_on_this_thread(token, [&] { return sysv_receive_once(m_id, buffer, m_max_message, type, 0, &out.type); });
  if (!waited) {
    return unexpected(waited.error());
  }
  out.size = static_cast<std::size_t>(*waited);
  return out;
}

}  // namespace corio::ipc
