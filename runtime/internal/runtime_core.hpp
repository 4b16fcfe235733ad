// The shared state of a runtime: workers, the global inject queue, the idle/search
// accounting, the registry of live spawned tasks, and the blocking pool.
// Thread-safety: any thread (see each member).
// Cost: notify_one() is a store-load barrier and two loads unless a worker must be woken
// (then a CAS and a futex syscall); a spawn pushes onto the spawning worker's own
// registry list (no lock, no atomic RMW); finished roots are swept in amortized O(1).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <corio/runtime/config.hpp>
#include <corio/runtime/internal/blocking_pool.hpp>
#include <corio/runtime/internal/idle.hpp>
#include <corio/runtime/internal/inject_queue.hpp>
#include <corio/runtime/internal/worker.hpp>
#include <corio/runtime/metrics.hpp>

namespace corio::detail {

struct join_state_base;

// Owned by shared_ptr (runtime makes it with make_shared): a shutdown that leaves
// spawn_blocking jobs running hands a reference to a helper thread, which finishes the
// shutdown when they end, so the core outlives them whatever happens to the runtime.
class runtime_core : public std::enable_shared_from_this<runtime_core> {
 public:
  explicit runtime_core(const runtime_config& config);
  ~runtime_core();
  runtime_core(const runtime_core&) = delete;
  runtime_core& operator=(const runtime_core&) = delete;

  /// Starts the workers; on failure stops them again and returns the error and cause.
  std::error_code start(std::string& why);
  /// Shuts down (runtime/runtime.hpp), waiting at most `blocking_limit` for running
  /// spawn_blocking jobs. True when everything has stopped. False when jobs still run:
  /// a helper thread holding a reference to *this waits for them and destroys the
  /// unfinished tasks. A call after the first waits up to `blocking_limit` for the
  /// first one's end.
  bool shutdown(std::chrono::nanoseconds blocking_limit = std::chrono::nanoseconds::max());
  /// Whether a shutdown has begun (its first call).
  [[nodiscard]] bool shutdown_begun() const noexcept {
    // acquire: pairs with shutdown()'s acq_rel exchange; a plain flag, nothing read after.
    return m_shut_down.load(std::memory_order_acquire);
  }

  bool spawn_root(join_state_base* st) noexcept;
  /// Worker `worker_index` (its own thread only): sweep its registry shard if due.
  void sweep_own_shard(unsigned worker_index) noexcept;
  /// A root's join state is referenced by the registry alone: unlink and free it if
  /// called on the shard's own worker, else leave it to that worker's sweep. `rt` may be
  /// gone already when the caller is none of its workers (a handle dropped on another
  /// thread while the runtime is destroyed): then it is not touched (see live_cores()).
  static void unlink_if_owner(runtime_core* rt, join_state_base* st, unsigned shard) noexcept;
  /// Queues a task from a thread that is not one of our workers.
  void schedule_remote(void* task);
  /// Wakes one parked worker if work was published and nobody is searching (idle.cpp).
  void notify_one() noexcept;
  runtime_metrics metrics() const;

  [[nodiscard]] bool stopping() const noexcept { return m_stopping.load(std::memory_order_acquire); }

  const runtime_config config;
  std::vector<std::unique_ptr<worker>> workers;
  inject_queue inject;
  blocking_pool blocking;
  idle_state idle;  ///< the sleep/wake accounting (runtime/idle.cpp)

 private:
  // The registry of spawned tasks (for shutdown): one doubly linked list per worker,
  // touched only by that worker (no lock), plus one list for spawns from other threads
  // (under foreign_lock). The registry holds a reference to each root's join state; when
  // the task has finished and its handle is gone, the owner worker unlinks it at once if
  // it is the one dropping the last other reference (the common, local case), else a
  // periodic sweep (when the list has doubled past its survivors) unlinks it.
  static constexpr std::uint64_t kSweepMinimum = 256;
  struct registry_shard {
    alignas(64) std::mutex foreign_lock;  // only for the foreign shard (and shutdown)
    join_state_base* head = nullptr;
    std::uint64_t length = 0;
    std::uint64_t sweep_at = kSweepMinimum;
    std::atomic<std::uint64_t> inserted{0};  // owner-written, read by metrics()
    // Roots left to the sweep: finished with their handles gone, but the last release
    // happened off the owner worker. While it is 0 a sweep has nothing to reclaim and
    // skips its walk (a fork-join tree keeps ~100k roots live and unlinks each itself).
    alignas(64) std::atomic<std::uint64_t> left_to_sweep{0};
  };
  void sweep(registry_shard& s) noexcept;
  void unlink(registry_shard& s, join_state_base* st) noexcept;
  void stop_workers();
  void finish_shutdown();
  void destroy_unfinished_tasks() noexcept;
  bool hand_finish_to_helper() noexcept;

  std::atomic<bool> m_stopping{false};
  std::atomic<bool> m_shut_down{false};
  // Set (under m_finish_lock) when the shutdown has fully ended; later calls wait for it.
  std::mutex m_finish_lock;
  std::condition_variable m_finish_cv;
  bool m_finished = false;
  std::unique_ptr<registry_shard[]> m_shards;  // one per worker + one for foreign threads
  unsigned m_shard_count = 0;
};

/// Test hook: called (if set) by a join state release off the runtime's workers, between
/// its decrement and its look at the runtime, where a concurrent destruction of the
/// runtime must not be able to hurt it. Tests only (relaxed load; set before the race).
inline std::atomic<void (*)()> g_test_hook_off_runtime_release{nullptr};

}  // namespace corio::detail
