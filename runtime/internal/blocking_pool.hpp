// The elastic thread pool behind spawn_blocking().
//
// Threads are created on demand (up to a maximum) when a job arrives and the queued jobs
// would outnumber the idle threads, and leave after a keep-alive period without work
// (joined at the next submit or at shutdown). Jobs wait in a FIFO. A job queued but
// not started can be withdrawn (cancellation); a running job cannot be interrupted.
// On shutdown, queued jobs are dropped and running ones are waited for, for at most a
// limit with shutdown_for() (runtime::shutdown(limit)): a job still running then keeps
// its thread, which touches only the job and this pool when it ends, so the pool must
// outlive it (runtime_core hands itself to a helper thread that calls shutdown()).
// Thread-safety: any thread. Cost: a lock and a condition-variable signal per job.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <corio/runtime/detail/completion.hpp>

namespace corio::detail {

class blocking_pool {
 public:
  blocking_pool(std::size_t max_threads, std::chrono::milliseconds keep_alive)
      : m_max_threads(max_threads), m_keep_alive(keep_alive) {}
  blocking_pool(const blocking_pool&) = delete;
  blocking_pool& operator=(const blocking_pool&) = delete;
  ~blocking_pool() { shutdown(); }

  /// Queues `job`; returns false after shutdown, or when withdraw(job) came first.
  /// Throws std::system_error when no thread is alive and the system refuses a new one
  /// (with threads alive the job waits for them, as at the maximum: for ever if each
  /// runs a job that waits for this one), std::bad_alloc when the queue cannot grow;
  /// `job` is then not queued.
  bool submit(blocking_job* job);
  /// Removes `job` if it has not started; returns true if it was removed. Otherwise
  /// flags it (blocking_job::withdrawn) so that a submit still to come refuses it.
  bool withdraw(blocking_job* job);
  /// Drops queued jobs, waits for running ones, joins every thread.
  void shutdown() { (void)shutdown_for(std::chrono::nanoseconds::max()); }
  /// Drops queued jobs and waits at most `limit` (saturating) for running ones. True when
  /// every thread has left its loop (then all are joined); false when jobs still run:
  /// their threads are left alone, and a later shutdown() waits for and joins them.
  bool shutdown_for(std::chrono::nanoseconds limit);
  [[nodiscard]] std::size_t thread_count() const;

 private:
  void thread_main();
  void join_exited(std::unique_lock<std::mutex>& lock);
  void leave_locked();

  mutable std::mutex m_mutex;
  std::condition_variable m_work;
  std::condition_variable m_left;  // a thread left thread_main (shutdown_for waits for 0)
  std::deque<blocking_job*> m_jobs;
  std::vector<std::thread> m_threads;
  std::vector<std::thread::id> m_exited;
  std::size_t m_idle = 0;
  std::size_t m_live = 0;
  std::size_t m_in_loop = 0;  // threads started and not yet out of thread_main
  std::size_t m_max_threads;
  std::chrono::milliseconds m_keep_alive;
  bool m_stopping = false;
};

}  // namespace corio::detail
