// A worker thread: its run queue, LIFO slot, io_uring, timers and cancel list.
//
// Scheduler loop (worker.cpp, design note at the top of the file): take a task from the
// LIFO slot (at most kMaxLifoRuns in a row), else the local queue, else (every
// global_queue_interval ticks, and whenever the local queue is empty) the global queue;
// when nothing is local, poll the ring and timers (a poll that keeps finding nothing is
// left to the park's own enter: maintenance.cpp), then steal half of another worker's
// queue; when nothing anywhere, park inside io_uring_enter.
// Thread-safety: the fields below marked "owner" are touched by the worker thread only.
// Cost: see worker.cpp; a scheduler tick is a LIFO/queue pop (one CAS) plus, every
// global_queue_interval ticks, a ring poll (one io_uring_enter when SQEs are queued or, on a
// DEFER_TASKRUN ring, the kernel flags completions waiting to be posted).
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include <corio/runtime/config.hpp>
#include <corio/runtime/detail/completion.hpp>
#include <corio/runtime/internal/local_queue.hpp>
#include <corio/runtime/internal/ring.hpp>
#include <corio/runtime/internal/timer_heap.hpp>
#include <corio/runtime/metrics.hpp>

namespace corio::detail {

class runtime_core;

class worker;
/// The worker running on this thread (runtime/worker.cpp), or nullptr.
// initial-exec: one %fs-relative load per access, also from the shared library.
[[gnu::tls_model("initial-exec")]] extern thread_local worker* tl_worker;

/// Reserved user_data values; real operations use the address of an io_completion.
inline constexpr std::uint64_t kUserDataIgnore = 0;
inline constexpr std::uint64_t kUserDataPark = 1;

class worker {
 public:
  worker(runtime_core& rt, unsigned index, const runtime_config& config);
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;
  ~worker();

  /// Thread body. Creates the ring first and reports through `ready`.
  void thread_main();

  // --- scheduling (owner thread) ---
  void schedule_wake(void* task);   ///< LIFO slot hand-off
  void schedule_back(void* task);   ///< back of the local queue
  void schedule_timer(void* task);  ///< a due timer: runs before the local queue
  void schedule_yield(void* task);  ///< back of the local queue, wakes no one for it alone
  io_uring_sqe* get_sqe();          ///< an SQE for a user operation (counted in flight)
  io_uring_sqe* get_internal_sqe(); ///< an SQE whose completion is ignored
  /// Arms `node` in this worker's heap (runtime/timers.cpp).
  void arm_timer(timer_node* node);
  /// Takes `node` out of the heap after its stop request drained; nothing if another
  /// worker has taken it over meanwhile (its cancel drain then resumes it).
  void disarm_timer(timer_node* node);
  [[nodiscard]] ring& io_ring() noexcept { return m_ring; }

  // --- any thread ---
  /// Returns false (nothing pushed) once the shutdown drain has closed the cancel list.
  bool push_cancel(cancellable* op) noexcept;
  /// push_cancel() on `w` if the worker with that serial is still alive (port::post()).
  static bool post_if_alive(worker* w, std::uint64_t serial, cancellable* c) noexcept;
  /// Wakes this worker if it is parked (not as a searcher).
  void wake_if_parked() noexcept;
  /// Claims this parked worker for a searcher wake. Returns true if claimed.
  bool try_claim_as_searcher() noexcept;
  void unpark_signal() noexcept;
  /// Whether a thief should take from this worker's queue: it holds tasks, and they are
  /// not a stamped backlog younger than the takeover delay, which its awake owner runs
  /// next (runtime/idle.cpp).
  [[nodiscard]] bool has_stealable_work() const noexcept;
  /// The stamp of a small backlog this worker queued without waking anyone, while it
  /// still holds tasks; 0 when there is none to watch (runtime/idle.cpp).
  [[nodiscard]] std::int64_t backlog_stamp() const noexcept {
    // relaxed: a hint ordered by the caller's fence (park(), hand_over_timer_watch()).
    return m_queue.empty() ? 0 : m_backlog_since.load(std::memory_order_relaxed);
  }
  void* steal_into(local_queue& dst) noexcept { return m_queue.steal_into(dst); }
  worker_metrics metrics() const noexcept;
  /// Owner thread: a spawned task finished here (for runtime_metrics::live_tasks).
  void note_root_finished() noexcept { bump(m_roots_finished); }
  [[nodiscard]] std::uint64_t roots_finished() const noexcept {
    return m_roots_finished.load(std::memory_order_relaxed);
  }

  /// Cooperative budget per scheduler tick (port::consume_budget) and the depth of
  /// symmetric transfers before one is re-queued (port::transfer).
  static constexpr unsigned kBudget = 128;
  static constexpr unsigned kTransferLimit = 256;
  /// Completions and timers reaped in one batch wake a parked worker at once only when
  /// they leave more than this many tasks queued. A smaller backlog is stamped
  /// (m_backlog_since) and thieves leave it alone while the stamp is younger than
  /// runtime_config::timer_takeover_delay: its owner wakes a parked worker if it is still
  /// queued kBacklogWakeNs later between two tasks (run_task), and the timer watcher
  /// bounds its park by stamp + delay and then steals it, in case its owner stopped
  /// running tasks (a blocking call, a long computation, a busy-wait). The watcher is
  /// woken for a stamp only if it would sleep past stamp + 2 × delay, and while a worker
  /// keeps stamping it parks at most 2 × delay: it wakes every one to two delays instead
  /// of once per backlog (echo server, 2 workers: 21,000 watcher wakes in 6 s before).
  /// Why: a wake costs ~10 µs of CPU on each side on the 2-vCPU VM, and a woken thief
  /// submits the I/O of what it stole on its own ring, so it sleeps and wakes for those
  /// completions from then on: waking for "more than one" made a 2-worker echo server
  /// switch context once per ~5 requests and cost 1.6x the CPU per request of one worker.
  /// The price: up to kReapWakeThreshold reaped tasks may wait one to two takeover delays
  /// (plus a wake-up) behind a task that blocks their worker, and a burst of CPU-heavy
  /// reaped tasks gets its second worker at the first task boundary kBacklogWakeNs
  /// after the stamp; with the takeover off (delay < 0) the old rule applies. (What no
  /// thief can take — the LIFO slot, due timers' tasks, cancel drains — waits for a
  /// blocked worker with or without this rule.) A spawned or displaced task, an
  /// overflow, a global batch and a batch on top of such tasks still wake at once and
  /// end the stamp (announce_queued).
  /// 32: a scan on the 2-worker echo server (64 B, µs per request, 4 s × 3 alternating)
  /// read 12.0 at 8, 10.6 at 16, 10.0 at 32, 11.0 at 64 (Tokio 9.0, one worker 8.0);
  /// past 32 a batch waits for its owner longer than a wake-up would have cost.
  static constexpr std::size_t kReapWakeThreshold = 32;
  static constexpr std::int64_t kBacklogWakeNs = 50'000;
  /// leave_enter_to_park's back-off ("Kernel entries", runtime/maintenance.cpp): quiet
  /// find_work enters needed before one is left to the park (floor and ceiling of
  /// m_leave_after), and how often a left enter is taken anyway as a probe.
  static constexpr std::uint8_t kQuietPollsToLeave = 4;
  static constexpr std::uint8_t kMaxQuietPollsToLeave = 128;
  static constexpr std::uint8_t kProbeEvery = 8;

  // --- owner-thread state used by the port's entry points (runtime/port.cpp) ---
  unsigned transfer_depth = 0;
  unsigned budget = 0;
  runtime_core& rt;
  const unsigned index;
  std::uint64_t serial = 0;  ///< unique per process (port::post's liveness check)

  // Startup handshake: set by thread_main before the runtime constructor returns.
  std::error_code startup_error;
  std::string startup_why;
  std::atomic<int> startup_state{0};  // 0 pending, 1 ok, 2 failed (release/acquire)

  /// The worker's thread handle, owned by the runtime.
  std::thread thread;

 private:
  void run_loop();
  void* next_local_task();
  void* find_work();
  void* search();
  void stop_searching();  // idle.cpp
  void run_task(void* task);
  void wake_for_old_backlog() noexcept;
  void note_backlog(std::size_t stealable, std::size_t ready_timers, bool unstamped_before);
  void announce_queued() noexcept;
  // The sleep/wake protocol (runtime/idle.cpp).
  bool start_searching() noexcept;
  void park();
  void unpark_self();
  bool sees_work() const noexcept;
  /// Where maintenance() is called from, which decides when it enters the kernel (and,
  /// for tick, whether it takes over another worker's late timers).
  enum class maintenance_from {
    tick,       // the fairness tick between two tasks: SQEs queued, or operations in flight
                // whose completions the kernel may hold (not ring::nothing_to_post())
    find_work,  // out of local tasks: SQEs queued, or (DEFER_TASKRUN) operations in flight
                // and completions flagged as waiting to be posted; the enter may be left
                // to the park (leave_enter_to_park)
    park,       // just woke from park(): SQEs queued only. The park's enter ran at least
                // the task work that ended it (on Linux 6.13+ often only that one item);
                // the rest is posted by the next find_work's enter, or by the next park's
                // (which runs pending task work before it would sleep, and then does not
                // sleep). Saves one io_uring_enter per single wake on a DEFER_TASKRUN ring
                // (other rings never entered here with nothing queued).
  };
  /// Returns the completions of user operations it reaped.
  unsigned maintenance(maintenance_from from);
  /// Returns the completions of user operations it reaped (not the park's own, nor the
  /// ignored ones of internal SQEs).
  unsigned reap();
  /// Whether find_work's enter is left to the park (maintenance.cpp: the rule and its cost).
  bool leave_enter_to_park() noexcept;
  /// The park that took a left enter reaped `reaped` completions of user operations.
  void note_left_enter_reaped(unsigned reaped) noexcept;
  // Timers and their takeover (runtime/timers.cpp).
  void fire_timers();
  [[nodiscard]] std::int64_t park_deadline(std::int64_t now, bool watching) noexcept;
  bool watch_timers() noexcept;
  void hand_over_timer_watch() noexcept;
  bool take_over_timers(std::int64_t now);
  [[nodiscard]] bool others_have_timers() const noexcept;
  bool take_due_timers_of(worker& victim, std::int64_t now);
  /// Wakes the parked timer watcher if it would sleep past `needed` (steady ns), or a
  /// parked worker when nobody watches.
  void wake_a_timer_watcher(std::int64_t needed) noexcept;
  /// The same for a backlog stamped at `stamp`: needed by stamp + 2 × delay (idle.cpp).
  void wake_a_backlog_watcher(std::int64_t stamp) noexcept;
  void wake_another_parked() noexcept;  ///< the first parked worker other than this one
  void publish_next_deadline() noexcept;
  void lock_timers() noexcept;
  bool try_lock_timers() noexcept;
  void unlock_timers() noexcept;
  bool drain_cancels();  ///< whether there were any requests (cancel SQEs may be queued)
  void run_cancel_list(cancellable* list);
  void arm_park_wait();
  void drain_for_shutdown();
  void overflow(void* task);
  void push_back_and_notify(void* task, std::uint32_t keep_for_self);
  static void bump(std::atomic<std::uint64_t>& c, std::uint64_t by = 1) noexcept {
    // Single writer (this worker): a load+store is enough and avoids a locked RMW.
    c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }

  const runtime_config& m_config;
  local_queue m_queue;                 // owner pushes/pops; thieves steal
  void* m_lifo = nullptr;              // owner
  unsigned m_lifo_runs = 0;            // owner
  unsigned m_tick = 0;                 // owner
  bool m_searching = false;            // owner
  bool m_in_maintenance = false;       // owner: reaping completions / firing timers
  std::uint32_t m_rng;                 // owner
  ring m_ring;                         // owner
  timer_heap m_timers;                 // owner, under m_timer_lock (a taker too)
  const std::int64_t m_takeover_delay_ns;  // runtime_config::timer_takeover_delay; -1: off
  std::deque<void*> m_ready_timers;    // owner: due timers, in deadline order
  std::uint64_t m_in_flight = 0;       // owner: user operations awaiting a CQE
  bool m_park_armed = false;           // owner: a park wait (futex or eventfd read) is in the ring
  bool m_use_futex = false;            // owner
  int m_eventfd = -1;
  std::uint64_t m_eventfd_buffer = 0;  // target of the armed eventfd read
  std::vector<void*> m_batch;          // owner: scratch for batches taken from the inject queue
  std::vector<void*> m_overflow_batch; // owner: scratch for overflow()
  std::vector<void*> m_taken_timers;   // owner: scratch for take_due_timers_of()
  bool m_watching_timers = false;      // owner: this worker holds idle_state::timer_watcher
  // find_work's enter left to the park (leave_enter_to_park): set while queued SQEs wait
  // for the park's io_uring_enter; run_loop submits them if a task turns up first. Owner.
  bool m_enter_left = false;
  std::uint8_t m_quiet_polls = 0;      // owner: find_work enters in a row that reaped no user completion (saturates)
  std::uint8_t m_left_since_probe = 0; // owner: enters left to the park since find_work last entered
  std::uint8_t m_leave_after = kQuietPollsToLeave; // owner: quiet polls needed to leave (back-off, maintenance.cpp)

  // Cancel requests from any thread (Treiber stack, see completion.hpp).
  alignas(64) std::atomic<cancellable*> m_cancel_head{nullptr};
  // Park word: 0 awake, 1 parked, 2 parked and claimed by a direct wake.
  // 0 after a searcher claim. The futex wait is armed on this word (expected 1).
  alignas(64) std::atomic<std::uint32_t> m_parked{0};
  // While parked: when this worker will wake on its own (steady ns; INT64_MAX: only when
  // woken). Written before sleeping, read by workers arming an earlier timer (timers.cpp).
  std::atomic<std::int64_t> m_park_until{INT64_MAX};

  // The timer heap's lock and its earliest deadline as others see it (timers.cpp).
  alignas(64) std::atomic<bool> m_timer_lock{false};
  std::atomic<std::int64_t> m_next_deadline{INT64_MAX};
  // When maintenance last left 2..kReapWakeThreshold tasks queued without waking anyone
  // (steady ns; 0: no such backlog). Written by the owner only; read by the timer
  // watcher and a leaving watcher, like m_next_deadline (worker.cpp, timers.cpp).
  std::atomic<std::int64_t> m_backlog_since{0};
  // When this worker last stamped a backlog (never cleared; 0: never). A watcher that
  // sees it younger than 2 × delay parks at most 2 × delay, so the next stamps need not
  // wake it (timers.cpp: park_deadline). Written by the owner, read by the watcher only.
  std::atomic<std::int64_t> m_last_backlog{0};

  alignas(64) std::atomic<std::uint64_t> m_tasks_run{0};
  std::atomic<std::uint64_t> m_steals{0};
  std::atomic<std::uint64_t> m_stolen_tasks{0};
  std::atomic<std::uint64_t> m_parks{0};
  std::atomic<std::uint64_t> m_sqes{0};
  std::atomic<std::uint64_t> m_cqes{0};
  std::atomic<std::uint64_t> m_enters{0};
  std::atomic<std::uint64_t> m_timers_pending{0};
  std::atomic<std::uint64_t> m_timers_taken{0};
  std::atomic<std::uint64_t> m_roots_finished{0};
};

}  // namespace corio::detail
