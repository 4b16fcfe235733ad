// corio::runtime_config: how a runtime is built. Every field is validated by the
// runtime constructor, which names the offending field in its error.
// Thread-safety: a plain value. Cost: none.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <chrono>
#include <thread>

namespace corio {

/// How an idle worker sleeping in io_uring_enter is woken by another thread.
enum class wake_mechanism {
  futex,    ///< IORING_OP_FUTEX_WAIT armed on the worker's `parked` word (Linux 6.7+)
  eventfd,  ///< a READ armed on an eventfd (any io_uring kernel); the fallback
};

/// The default of runtime_config::workers: the CORIO_WORKERS environment variable when it
/// is set and not empty (a decimal number in 1..1024; any other value gives 0, which the
/// runtime constructor refuses with an error naming CORIO_WORKERS), else
/// std::thread::hardware_concurrency() (1 if unknown). Any thread; one getenv.
unsigned default_workers() noexcept;

/// How a runtime is built: its workers, rings and scheduler limits. Every field has a
/// working default; the runtime constructor rejects values outside the stated ranges.
struct runtime_config {
  /// Worker threads (each with its own io_uring). Must be 1..1024. Default:
  /// default_workers() (CORIO_WORKERS, else the hardware's thread count); a value set
  /// here wins over the environment.
  unsigned workers = default_workers();
  /// Submission-queue entries per ring. Must be a power of two in 1..32768.
  unsigned ring_entries = 256;
  /// Local run-queue capacity per worker. Must be a power of two in 4..65536.
  unsigned local_queue_capacity = 256;
  /// Hand a woken task to the waker's worker through a LIFO slot (cheap ping-pong).
  bool lifo_slot = true;
  /// Every this many scheduler ticks a worker looks at the global queue first and polls
  /// its ring and timers (fairness). Must be 1..1000000.
  unsigned global_queue_interval = 61;
  /// Threads of the spawn_blocking() pool at most. Must be 1..4096.
  unsigned max_blocking_threads = 64;
  /// An idle blocking thread exits after this long (saturating: milliseconds::max()
  /// keeps idle threads until the runtime stops).
  std::chrono::milliseconds blocking_keep_alive{10000};
  /// Try IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN first.
  bool defer_taskrun = true;
  /// Preferred wake mechanism; falls back to eventfd where the kernel lacks FUTEX_WAIT.
  wake_mechanism wake = wake_mechanism::futex;
  /// Timer takeover: a worker that is idle (or between tasks) fires another worker's
  /// timers once they are this late, so a sleep does not wait for a worker stuck in a
  /// long task or blocking call (runtime/timers.cpp). One idle worker then wakes once
  /// per other worker's earliest deadline, this long after it. Must be >= 0; 0 takes
  /// timers over as soon as they are due (more traffic between workers: for tests);
  /// microseconds::max() turns the takeover off (a timer then waits for its own
  /// worker). Needs 2+ workers. The same watcher steals the few I/O-woken tasks a worker
  /// queued without waking anyone (worker.hpp: kReapWakeThreshold) once they have
  /// waited this long, in case that worker blocks in a task; it looks one to two delays
  /// after the stamp, so one idle worker wakes every one to two delays while a worker
  /// keeps queueing such backlogs. With the takeover off, every such backlog wakes a
  /// worker at once.
  std::chrono::microseconds timer_takeover_delay{1000};
};

}  // namespace corio
