// Worker loop, work stealing, parking and waking.
//
// Design note
// -----------
// Each worker owns: a bounded local queue (stealable), a LIFO slot (not stealable), an
// io_uring, a timer heap and an MPSC list of cancel requests. Shared: the global inject
// queue and the idle accounting (runtime/idle.cpp), plus each worker's `parked` word.
//
// Where a task goes:
//   - woken by a running task (a lock hand-off, a channel send, a join): the waker's LIFO
//     slot; the previous occupant moves to the back of the local queue. At most
//     kMaxLifoRuns LIFO tasks run back to back, then the slot's task goes to the back of
//     the queue, so two tasks ping-ponging cannot monopolise a worker (that move wakes
//     nobody unless other work is runnable here: otherwise we run it next ourselves);
//   - a yield, an I/O completion or a timer: the back of the local queue;
//   - a full local queue moves half of itself to the inject queue (one lock);
//   - from a thread that is not a worker: the inject queue.
//
// Sleep/wake protocol: runtime/idle.cpp (the invariant, its design note and every code
// path that upholds it: searching, parking, waking).
//
// Entering the kernel between tasks (maintenance, reaping, and when find_work leaves
// its enter to the park): runtime/maintenance.cpp.
#include <corio/runtime/internal/worker.hpp>

#include <sys/eventfd.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <limits>
#include <mutex>
#include <unordered_set>

#include <corio/runtime/detail/frame_allocator.hpp>
#include <corio/runtime/detail/uring_compat.hpp>
#include <corio/runtime/internal/runtime_core.hpp>

namespace corio::detail {

namespace {

constexpr unsigned kMaxLifoRuns = 3;
constexpr unsigned kSubmitInterval = 8;

/// runtime_config::timer_takeover_delay in ns; -1 (off) for microseconds::max() and for
/// any delay too long for the clock (over ~292 years: practically never anyway).
std::int64_t takeover_delay_ns(const runtime_config& config) noexcept {
  std::int64_t us = config.timer_takeover_delay.count();
  if (us >= std::numeric_limits<std::int64_t>::max() / 1000) {
    return -1;
  }
  return us * 1000;
}

std::coroutine_handle<> as_handle(void* p) noexcept { return std::coroutine_handle<>::from_address(p); }

/// Live workers by serial, for port::post() from threads that may outlive the runtime.
std::mutex g_live_mutex;
std::unordered_set<std::uint64_t> g_live;
std::atomic<std::uint64_t> g_next_serial{1};

/// The cancel list's head once the shutdown drain has taken its last batch: pushes fail.
cancellable* const kCancelListClosed = reinterpret_cast<cancellable*>(std::uintptr_t{1});

}  // namespace

// Declared in worker.hpp (initial-exec).
[[gnu::tls_model("initial-exec")]] thread_local worker* tl_worker = nullptr;

// ---------------------------------------------------------------------------------------

worker::worker(runtime_core& runtime, unsigned idx, const runtime_config& config)
    : rt(runtime),
      index(idx),
      m_config(config),
      m_queue(config.local_queue_capacity),
      m_rng(0x9e3779b9u * (idx + 1)),
      m_takeover_delay_ns(takeover_delay_ns(config)) {
  // relaxed: a unique number is all we need.
  serial = g_next_serial.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lk(g_live_mutex);
  g_live.insert(serial);
}

worker::~worker() {
  {
    std::lock_guard lk(g_live_mutex);
    g_live.erase(serial);
  }
  if (m_eventfd >= 0) {
    ::close(m_eventfd);
  }
}

void worker::thread_main() {
  // A write to a pipe or socket whose reader is gone raises SIGPIPE in the thread that
  // issues it (io_uring issues inline on this thread), which by default kills the whole
  // process. Workers block it, so such writes just fail with EPIPE. Only our threads are
  // affected (and threads they create); child processes restore the default (ipc spawn).
  sigset_t sigpipe;
  sigemptyset(&sigpipe);
  sigaddset(&sigpipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &sigpipe, nullptr);

  ring_options options;
  options.entries = m_config.ring_entries;
  options.defer_taskrun = m_config.defer_taskrun;
  std::error_code ec = m_ring.open(options, startup_why);
  if (!ec) {
    m_use_futex = m_config.wake == wake_mechanism::futex && m_ring.supports(uring::op_futex_wait);
    if (!m_use_futex) {
      m_eventfd = ::eventfd(0, EFD_CLOEXEC);
      if (m_eventfd < 0) {
        ec = os_error(-errno);
        startup_why = "eventfd for the worker's wake-ups failed";
        m_ring.close();
      }
    }
  }
  if (ec) {
    startup_error = ec;
    // release: publishes startup_error/startup_why to the constructor's acquire load.
    startup_state.store(2, std::memory_order_release);
    startup_state.notify_all();
    return;
  }
  startup_state.store(1, std::memory_order_release);
  startup_state.notify_all();

  tl_worker = this;
  run_loop();
  drain_for_shutdown();
  tl_worker = nullptr;
}

void worker::run_loop() {
  while (!rt.stopping()) {
    void* task = next_local_task();
    if (task == nullptr) {
      task = find_work();
    }
    if (task != nullptr) {
      if (m_enter_left) [[unlikely]] {
        m_enter_left = false;  // found work after all: the queued SQEs go in now
        m_ring.submit();
      }
      run_task(task);
      continue;
    }
    park();
  }
}

void worker::run_task(void* task) {
  if (m_searching) {
    // Found work (from any source): stop searching before running it, so publishers
    // wake another worker for the work we leave behind.
    stop_searching();
  }
  if (m_watching_timers) [[unlikely]] {
    hand_over_timer_watch();  // the task may run long: another idle worker watches (timers.cpp)
  }
  // relaxed: our own value (only we write it).
  if (m_backlog_since.load(std::memory_order_relaxed) != 0) {
    wake_for_old_backlog();  // idle.cpp
  }
  budget = kBudget;
  transfer_depth = 0;
  as_handle(task).resume();
  bump(m_tasks_run);
  if ((m_tick % kSubmitInterval) == 0 && m_ring.has_unsubmitted()) {
    m_ring.submit();
  }
}

void* worker::next_local_task() {
  ++m_tick;
  if ((m_tick % m_config.global_queue_interval) == 0) {
    // Fairness: look at the ring, timers and the global queue even while busy.
    maintenance(maintenance_from::tick);
    m_batch.clear();
    if (rt.inject.pop_batch(m_batch, 1) != 0) {
      return m_batch.front();
    }
  }
  if (m_lifo != nullptr) {
    if (m_lifo_runs < kMaxLifoRuns) {
      ++m_lifo_runs;
      return std::exchange(m_lifo, nullptr);
    }
    // Cap reached: the slot's task waits its turn at the back of the queue. When nothing
    // else is runnable here we run it next anyway, so it wakes nobody (a ping-pong
    // between two tasks must not wake the idle workers every few rounds); behind a due
    // timer's task — which runs first and may run long — it may wake a thief.
    void* task = std::exchange(m_lifo, nullptr);
    if (m_ready_timers.empty()) {
      schedule_yield(task);
    } else {
      schedule_back(task);
    }
  }
  m_lifo_runs = 0;
  if (!m_ready_timers.empty()) {
    // Due timers run before the rest of the queue (and keep their deadline order), so a
    // long run queue cannot make sleeps overshoot.
    void* task = m_ready_timers.front();
    m_ready_timers.pop_front();
    return task;
  }
  return m_queue.pop();
}

void* worker::find_work() {
  maintenance(maintenance_from::find_work);
  if (void* task = next_local_task()) {
    return task;
  }
  // Global queue: take a fair share into the local queue.
  m_batch.clear();
  std::size_t share = rt.inject.size() / rt.workers.size() + 1;
  share = std::min<std::size_t>(share, m_queue.capacity() / 2);
  if (rt.inject.pop_batch(m_batch, share) != 0) {
    for (std::size_t i = 1; i < m_batch.size(); ++i) {
      if (!m_queue.try_push(m_batch[i])) {
        overflow(m_batch[i]);
      }
    }
    if (m_batch.size() > 1) {
      announce_queued();
    }
    return m_batch.front();
  }
  return search();
}

void* worker::search() {
  std::size_t n = rt.workers.size();
  if (n < 2) {
    return nullptr;
  }
  if (!start_searching()) {
    return nullptr;
  }
  m_rng ^= m_rng << 13;
  m_rng ^= m_rng >> 17;
  m_rng ^= m_rng << 5;
  std::size_t start = m_rng % n;
  for (std::size_t i = 0; i < n; ++i) {
    worker& victim = *rt.workers[(start + i) % n];
    if (&victim == this || !victim.has_stealable_work()) {
      continue;
    }
    std::uint32_t before = m_queue.size();
    if (void* task = victim.steal_into(m_queue)) {
      bump(m_steals);
      bump(m_stolen_tasks, m_queue.size() - before + 1);
      stop_searching();
      return task;
    }
  }
  m_batch.clear();
  if (rt.inject.pop_batch(m_batch, 1) != 0) {
    stop_searching();
    return m_batch.front();
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------

void worker::schedule_wake(void* task) {
  if (!m_config.lifo_slot) {
    schedule_back(task);
    return;
  }
  void* previous = std::exchange(m_lifo, task);
  if (previous != nullptr) {
    schedule_back(previous);
  }
}

void worker::schedule_timer(void* task) {
  m_ready_timers.push_back(task);
}

void worker::schedule_back(void* task) {
  push_back_and_notify(task, 0);
}

void worker::schedule_yield(void* task) {
  // The yielding task is the one we would run next anyway: only more work than that is
  // worth a wake-up.
  push_back_and_notify(task, 1);
}

void worker::push_back_and_notify(void* task, std::uint32_t keep_for_self) {
  if (!m_queue.try_push(task)) {
    overflow(task);
    announce_queued();
    return;
  }
  // Waking a parked worker costs ~10 µs of a CPU on the 2-vCPU VM: not while reaping
  // (maintenance decides once, after the whole batch), and not for the one task we will
  // run next ourselves. A task displaced from the LIFO slot or spawned while we run does
  // wake a parked worker, so it cannot sit behind a long-running task (Tokio's rule).
  if (!m_in_maintenance && m_queue.size() > keep_for_self) {
    announce_queued();
  }
}

void worker::overflow(void* task) {
  // Its own scratch vector: overflow() runs while callers iterate m_batch.
  m_overflow_batch.clear();
  if (m_queue.take_half_for_overflow(m_overflow_batch)) {
    m_overflow_batch.push_back(task);
    rt.inject.push_batch(m_overflow_batch);
  } else if (!m_queue.try_push(task)) {
    // Thieves emptied part of the queue meanwhile (then the push above succeeds), or
    // one is still copying: send just this task to the global queue.
    rt.inject.push(task);
  }
}

io_uring_sqe* worker::get_sqe() {
  io_uring_sqe* sqe = m_ring.get_sqe([this] { reap(); });
  ++m_in_flight;
  return sqe;
}

io_uring_sqe* worker::get_internal_sqe() {
  io_uring_sqe* sqe = m_ring.get_sqe([this] { reap(); });
  io_uring_sqe_set_data64(sqe, kUserDataIgnore);
  return sqe;
}

bool worker::push_cancel(cancellable* op) noexcept {
  cancellable* head = m_cancel_head.load(std::memory_order_relaxed);
  do {
    if (head == kCancelListClosed) {
      return false;  // the shutdown drain is over: nobody would drain it
    }
    op->next_cancel = head;
    // release: publishes next_cancel and the op's state to drain_cancels()'s acquire.
  } while (!m_cancel_head.compare_exchange_weak(head, op, std::memory_order_release, std::memory_order_relaxed));
  if (tl_worker != this) {
    // Store-load barrier: our push must be visible before we read `parked`, pairing
    // with park()'s barrier between `parked = 1` and its re-check of the cancel list
    // (else both sides could miss each other and the owner sleep on a pending cancel).
    store_load_barrier(rt.idle.sleepers);
    wake_if_parked();
  }
  return true;
}

bool worker::drain_cancels() {
  // acquire: pairs with push_cancel()'s release CAS.
  cancellable* list = m_cancel_head.exchange(nullptr, std::memory_order_acquire);
  run_cancel_list(list);
  return list != nullptr;
}

void worker::run_cancel_list(cancellable* list) {
  while (list != nullptr) {
    cancellable* op = list;
    list = op->next_cancel;
    // acq_rel: see completion.hpp; after this the list no longer references op.
    std::uint8_t prev = op->cancel_state.exchange(cancellable::drained, std::memory_order_acq_rel);
    if (prev == cancellable::completed) {
      op->on_resume(op);
    } else {
      op->on_cancel_drained(op);
    }
  }
}

void worker::drain_for_shutdown() {
  // Cancel every request in the ring (user operations and the park wait) and wait for
  // all their completions: the kernel must be done with every buffer and operation
  // state before frames are destroyed and the ring is closed.
  drain_cancels();
  io_uring_sqe* sqe = get_internal_sqe();
  io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, kUserDataIgnore);
  auto started = std::chrono::steady_clock::now();
  bool warned = false;
  while (m_in_flight != 0 || m_park_armed) {
    m_ring.submit_and_wait(100'000'000);
    reap();
    drain_cancels();
    if (!warned && std::chrono::steady_clock::now() - started > std::chrono::seconds(5)) {
      std::fprintf(stderr, "corio: shutdown is waiting for %llu io_uring operation(s) that ignore cancellation\n",
                   static_cast<unsigned long long>(m_in_flight));
      warned = true;
    }
  }
  // Close the cancel list (later pushes fail, see port::post) and run what is on
  // it while the ring is still open (e.g. a provided-buffer ring unregistration).
  // acquire: pairs with push_cancel()'s release CAS.
  run_cancel_list(m_cancel_head.exchange(kCancelListClosed, std::memory_order_acquire));
  lock_timers();  // a taker may still be looking at the heap
  m_timers.clear();
  publish_next_deadline();
  unlock_timers();
  m_ready_timers.clear();
  m_lifo = nullptr;
  while (m_queue.pop() != nullptr) {
  }
  m_sqes.store(m_ring.sqes_submitted(), std::memory_order_relaxed);
  m_enters.store(m_ring.enters(), std::memory_order_relaxed);
  m_ring.close();
}

bool worker::post_if_alive(worker* w, std::uint64_t serial, cancellable* c) noexcept {
  if (tl_worker == w && w->serial == serial) {  // (a later worker may reuse the address)
    return w->push_cancel(c);
  }
  // From another thread `w` may be gone (its runtime destroyed): look it up by serial,
  // and keep it alive (its destructor takes this mutex) while pushing.
  std::lock_guard lk(g_live_mutex);
  if (!g_live.contains(serial)) {
    return false;
  }
  return w->push_cancel(c);
}

worker_metrics worker::metrics() const noexcept {
  worker_metrics m;
  m.tasks_run = m_tasks_run.load(std::memory_order_relaxed);
  m.steals = m_steals.load(std::memory_order_relaxed);
  m.stolen_tasks = m_stolen_tasks.load(std::memory_order_relaxed);
  m.parks = m_parks.load(std::memory_order_relaxed);
  m.sqes_submitted = m_sqes.load(std::memory_order_relaxed);
  m.cqes_reaped = m_cqes.load(std::memory_order_relaxed);
  m.local_queue_depth = m_queue.size();
  m.timers_pending = m_timers_pending.load(std::memory_order_relaxed);
  m.timers_taken_over = m_timers_taken.load(std::memory_order_relaxed);
  m.ring_enters = m_enters.load(std::memory_order_relaxed);
  return m;
}

}  // namespace corio::detail
