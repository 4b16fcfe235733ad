// corio::runtime: worker threads, each with an io_uring, scheduling coroutines with work
// stealing. The entry points of a corio program: corio::run(task), runtime::block_on(),
// runtime::spawn() (from any thread), corio::spawn() (inside a task), yield_now().
//
// Thread-safety: every member may be called from any thread, except block_on() (not
// from a worker: it would block the worker) and the destructor (not from a worker).
// Cost: creating a runtime starts `workers` threads and creates one ring each (~100 µs
// each); an idle runtime sleeps in the kernel and uses no CPU.
//
// Shutdown (destructor or shutdown()): workers stop taking tasks, every in-flight
// io_uring operation is cancelled and its completion drained, rings are closed and the
// threads joined; then every spawned task that has not finished is destroyed (its locals'
// destructors run; awaiting its join_handle throws errc::shut_down). Running
// spawn_blocking jobs are waited for; queued ones are dropped.
//
// shutdown(limit), like Tokio's shutdown_timeout, waits at most `limit` for running
// spawn_blocking jobs (they cannot be interrupted) and returns false if some still run
// then. The rest of the shutdown happens at once (workers stopped and joined, no task
// runs again, spawn refused); those jobs finish on their own threads, and once the last
// one ends a thread of corio's destroys the unfinished tasks (as above, but later and on
// that thread; a job's awaiter lives in its task's frame) and frees the runtime's state,
// which it keeps alive until then — destroying the runtime object meanwhile is safe and
// does not wait. So what such a job, or an unfinished task's destructor, touches must
// outlive it (a job that captures by value and the tasks' own locals are fine). A later
// shutdown() waits for all of it; the destructor does not. Exiting the process (return
// from main, exit()) while such jobs still run lets static destructors run while corio's
// thread may still destroy tasks: call shutdown() (no limit) first, or end with
// std::quick_exit / _exit when the jobs are to be abandoned.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>

#include <corio/runtime/config.hpp>
#include <corio/runtime/metrics.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio {

namespace detail {
class runtime_core;
void wait_blocking(join_state_base* st);
}  // namespace detail

/// A set of worker threads, each with its own io_uring, that run corio tasks. The
/// destructor shuts it down (see shutdown()). Members may be called from any thread
/// that is not one of its workers, unless a member says otherwise.
class runtime {
 public:
  /// Starts the workers. Throws std::system_error whose what() names the cause if a
  /// config value is invalid (errc::invalid_config) or a ring cannot be created
  /// (errc::io_uring_refused when the kernel or a seccomp filter refuses io_uring, else
  /// the OS error).
  explicit runtime(const runtime_config& config = {});
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Spawns `t` from any thread. Returns errc::shut_down after shutdown; throws
  /// std::bad_alloc as corio::spawn(task) does (`t` destroyed).
  template <class T>
  result<join_handle<T>> spawn(task<T> t) {
    return spawn_impl(std::move(t), false);
  }

  /// spawn(t), abortable: join_handle::abort() can stop it (see corio::abortable).
  template <class T>
  result<join_handle<T>> spawn(abortable_t, task<T> t) {
    return spawn_impl(std::move(t), true);
  }

  /// spawn(f, args...), abortable (see corio::abortable).
  template <class F, class... Args>
    requires detail::task_callable<F, Args...>
  auto spawn(abortable_t tag, F&& f, Args&&... args) {
    return spawn(tag, detail::owned_call(std::forward<F>(f), std::forward<Args>(args)...));
  }

  /// Spawns `f(args...)` from any thread, `f` and `args` living in the task's frame (see
  /// corio::spawn(callable, args...)). Returns errc::shut_down after shutdown.
  template <class F, class... Args>
    requires detail::task_callable<F, Args...>
  auto spawn(F&& f, Args&&... args) {
    return spawn(detail::owned_call(std::forward<F>(f), std::forward<Args>(args)...));
  }

  /// Runs `t` on the runtime and blocks the calling thread until it finishes; returns its
  /// value or rethrows its exception. Throws std::system_error(errc::shut_down) if the
  /// runtime is (or gets) shut down first, std::logic_error on a worker thread.
  template <class T>
  T block_on(task<T> t) {
    if (port::current_worker() != nullptr) {
      throw std::logic_error("corio::runtime::block_on called on a worker thread (it would block the worker)");
    }
    auto handle = spawn(std::move(t));
    if (!handle) {
      detail::throw_shut_down();
    }
    return block_on_handle(std::move(*handle));
  }

  /// Stops the runtime and waits for everything, running spawn_blocking jobs included
  /// (see the header comment). Idempotent: a later call waits for the first one's end
  /// (also for the jobs a shutdown(limit) left running). Not from a worker thread or a
  /// spawn_blocking job of this runtime (it would wait for itself).
  void shutdown();
  /// Stops the runtime, waiting at most `limit` (any duration, saturating) for running
  /// spawn_blocking jobs: true when everything has stopped, false when jobs still run
  /// (they finish on their own; see the header comment). A later call waits up to
  /// `limit` for the first one's end. Same threads as shutdown().
  bool shutdown(saturating_duration limit);

  /// A snapshot of the per-worker counters (runtime/metrics.hpp). Any thread.
  [[nodiscard]] runtime_metrics metrics() const;
  /// The number of worker threads (runtime_config::workers).
  [[nodiscard]] unsigned worker_count() const noexcept;

 private:
  template <class T>
  result<join_handle<T>> spawn_impl(task<T> t, bool abortable) {
    bool accepted = false;
    auto handle = detail::spawn_on(m_core.get(), std::move(t), &accepted, abortable);
    if (!accepted) {
      return unexpected(make_error_code(errc::shut_down));
    }
    return handle;
  }

  template <class T>
  T block_on_handle(join_handle<T> handle) {
    // The state pointer is private to join_handle; go through its awaiter instead.
    auto aw = handle.operator co_await();
    if (!aw.await_ready()) {
      detail::wait_blocking(aw.state());
    }
    return aw.await_resume();
  }

  // Shared with the helper thread that ends a shutdown(limit) which left jobs running.
  std::shared_ptr<detail::runtime_core> m_core;
};

/// Builds a runtime with `config`, runs `t` to completion on it, shuts it down and
/// returns the task's value (or rethrows its exception).
template <class T>
T run(task<T> t, const runtime_config& config = {}) {
  runtime rt(config);
  return rt.block_on(std::move(t));
}

/// Suspends the current task and puts it at the back of its worker's queue, letting the
/// other runnable tasks go first.
struct yield_now {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) const noexcept { port::yield(h); }
  void await_resume() const noexcept {}
};

}  // namespace corio
