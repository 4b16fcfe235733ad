// corio::runtime_metrics: counters per worker, read with runtime::metrics().
//
// Thread-safety: runtime::metrics() may be called from any thread at any time. Each
// counter is written only by its worker (relaxed stores) and read with relaxed loads, so
// a snapshot is consistent per counter, not across counters.
// Cost of keeping them: a plain increment on the worker's own cache line; a snapshot
// takes each registry lock briefly.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cstdint>
#include <vector>

namespace corio {

/// Counters of one worker since the runtime started (a snapshot: runtime::metrics()).
struct worker_metrics {
  std::uint64_t tasks_run = 0;        ///< coroutine resumptions from the run queues
  std::uint64_t steals = 0;           ///< successful steal operations (half a queue each)
  std::uint64_t stolen_tasks = 0;     ///< tasks moved in by those steals
  std::uint64_t parks = 0;            ///< times the worker slept in io_uring_enter
  std::uint64_t sqes_submitted = 0;   ///< SQEs handed to the kernel
  std::uint64_t cqes_reaped = 0;      ///< CQEs processed
  std::uint64_t local_queue_depth = 0;  ///< tasks in the local queue right now
  std::uint64_t timers_pending = 0;   ///< armed timers on this worker right now
  /// Due timers of other workers this one fired because their own worker was late by
  /// runtime_config::timer_takeover_delay (busy in a long task or a blocking call).
  std::uint64_t timers_taken_over = 0;
  /// Calls into io_uring_enter: submitting, collecting completions, parking (liburing
  /// skips a few that have nothing to do; those are counted too).
  std::uint64_t ring_enters = 0;
};

/// A snapshot of a runtime's counters (runtime::metrics()).
struct runtime_metrics {
  /// One entry per worker, in worker order.
  std::vector<worker_metrics> workers;
  /// Tasks in the global (inject) queue right now.
  std::uint64_t global_queue_depth = 0;
  std::uint64_t live_tasks = 0;       ///< spawned tasks not yet finished
  std::uint64_t blocking_threads = 0; ///< threads in the spawn_blocking pool
};

}  // namespace corio
