// corio::task_group<T>: structured concurrency — a set of spawned tasks that belong to
// one owner (Tokio's JoinSet, Python's asyncio.TaskGroup, Trio's nurseries).
//
// Concept: `co_await g.spawn(task or callable, args...)` spawns into the group (waiting
// while `max_running` of its tasks run); `co_await g.next()` yields the next task to
// finish, in completion order; `co_await g.join_all()` waits for every task and rethrows
// the first error once all have ended; abort_all() aborts them (join_handle::abort).
// The group's tasks are spawned abortable: the destructor aborts every task still
// running, as Tokio's JoinSet does (its waits end as cancelled and it ends when its body
// returns, soon after, not inside the destructor — a destructor cannot wait; a body that
// ignores cancellation runs on). The structured way to end a group, so that no task
// outlives it, is corio::with_task_group (below: the group lives in a scope that waits
// for all its tasks however the body ends, the asyncio.TaskGroup / Trio nursery form), or
// `co_await g.join_all()` on every path before it goes out of scope; only then may its
// tasks use the owner's locals by reference. A task meant to outlive its group is spawned with
// corio::spawn instead and its handle dropped (detached on purpose).
//   corio::task_group<int> g({.max_running = 8, .cancel_on_error = true});
//   for (int i = 0; i < 100; ++i) { (void)co_await g.spawn(work, i); }
//   std::vector<int> all = co_await g.join_all();   // completion order
// A server that never collects results keeps finished tasks from piling up with
// {.keep_results = false}: every spawn first drops the tasks that have finished since
// (values destroyed, an exception reported on stderr as for a detached task, and the
// first such exception kept for with_task_group to rethrow), so the group holds about as
// many tasks as run at once.
// Layer: built on spawn (runtime) and on corio::semaphore and corio::channel, so it
// lives in sync/.
//
// Thread-safety: a group has one owner task; its members are called from that task only
// (not concurrently). The group's tasks run and finish on any worker; they report their
// end through a channel and a semaphore (spin locks), which is thread-safe.
// Cost per spawned task: corio::spawn(corio::abortable, ...)'s (frame, join state; each
// wait of the task parks an abort hook, a CAS in and a CAS out) plus one wrapper frame and
// resume (both recycled), a node in an unordered_map, a shared_ptr copy (one atomic
// increment and decrement), a channel send when it ends (spin lock; the channel's
// buffer grows by doubling, no allocation per task once grown), and with max_running a
// semaphore acquire and release (spin lock each).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <corio/runtime/result.hpp>
#include <corio/runtime/shield.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>
#include <corio/sync/channel.hpp>
#include <corio/sync/semaphore.hpp>

namespace corio {

/// task_group_options::max_running's default: no bound.
inline constexpr std::size_t task_group_unlimited = std::numeric_limits<std::size_t>::max();

/// How a task_group behaves; every field has a default (unlimited, keep, no cancel).
struct task_group_options {
  /// At most this many of the group's tasks run at once; spawn() waits, try_spawn()
  /// refuses, while that many run. A task counts until its frame has ended. 0 (a group
  /// that could never run anything) is refused: the constructor throws
  /// std::invalid_argument.
  std::size_t max_running = task_group_unlimited;
  /// Once a task of the group has ended with an exception of its own (not one thrown
  /// after it was aborted), abort every other task and refuse new ones (spawn yields
  /// errc::aborted, try_spawn false): as soon as the owner next awaits next() or
  /// join_all() (which takes the failed task), spawns or try_spawns. The others' waits
  /// then end as cancelled and they end as errc::aborted. The owner drives it: a group
  /// nobody touches is not aborted on its own.
  bool cancel_on_error = false;
  /// False: spawn() and try_spawn() first drop the tasks that finished since; for
  /// servers that never call next(). A dropped task's value is destroyed. Its exception,
  /// if it ended with one of its own (not one thrown after it was aborted), is reported
  /// on stderr (as for a detached task) and, the first one only, kept in the group
  /// (dropped_error()): with_task_group rethrows it at its end unless the scope aborted
  /// the group; a group used without with_task_group rethrows nothing for it, so there
  /// later ones and the first alike are only seen on stderr. A server that must keep
  /// running catches inside the connection task; the rethrow is for errors that should
  /// fail the scope. An exception a task threw after it was aborted is dropped
  /// unreported, as errc::aborted. One race is the exception to that rule: an abort
  /// (abort_all, cancel_on_error) landing after the task's wrapper saw its token not yet
  /// requested but before the task's end is recorded (finish_root reads the abort) makes
  /// the task end as errc::aborted, with no stderr line, yet its exception is still kept
  /// as dropped_error() if it is the first. With cancel_on_error an exception still
  /// aborts the others.
  bool keep_results = true;
};

namespace detail {

/// What a task of a group reports when its frame ends: its id, and its exception when it
/// ended with one of its own (not one thrown after it was aborted).
struct task_group_end {
  std::uint64_t id;
  std::exception_ptr error;
};

/// What a group and its tasks share (a task may end after its group is gone).
struct task_group_shared {
  explicit task_group_shared(std::size_t max_running) noexcept
      : bounded(max_running != task_group_unlimited), slots(bounded ? max_running : 0) {}
  bool bounded;
  // Set (release) by a group task that ended with an exception; read (acquire) by the
  // owner's spawn and try_spawn for cancel_on_error. A flag, nothing else published.
  std::atomic<bool> failed{false};
  semaphore slots;  // free running slots, when bounded
  channel<task_group_end> ended{unbounded_capacity};  // the tasks whose frame ended
};

/// A parameter of a group task's wrapper frame: its destructor runs when that frame ends
/// however it ends (finished, aborted before it first ran, destroyed by shutdown) and
/// reports its id (and its own exception, see note_failure) and frees the task's slot. It
/// runs just before the task's join handle completes, so next() then waits a moment at
/// most. Out of memory in the report (the channel's buffer growing) terminates.
class task_group_exit {
 public:
  task_group_exit(std::shared_ptr<task_group_shared> shared, std::uint64_t id) noexcept
      : m_shared(std::move(shared)), m_id(id) {}
  task_group_exit(task_group_exit&& o) noexcept
      : m_shared(std::move(o.m_shared)), m_id(o.m_id), m_error(std::move(o.m_error)) {}
  task_group_exit(const task_group_exit&) = delete;
  task_group_exit& operator=(const task_group_exit&) = delete;
  task_group_exit& operator=(task_group_exit&&) = delete;
  /// The task ended with `error`, its own (cancel_on_error: the owner's next spawn aborts
  /// the others and refuses; keep_results = false: a spawn that drops the task keeps it).
  void note_failure(std::exception_ptr error) noexcept {
    m_error = std::move(error);
    m_shared->failed.store(true, std::memory_order_release);
  }
  ~task_group_exit() {
    if (m_shared) {
      // The id before the slot: a spawn that got the slot then finds the id (see
      // keep_results), so a group that drops finished tasks holds <= max_running.
      (void)m_shared->ended.try_send(task_group_end{m_id, std::move(m_error)});  // unbounded, never closed
      if (m_shared->bounded) {
        m_shared->slots.release();
      }
    }
  }

 private:
  std::shared_ptr<task_group_shared> m_shared;
  std::uint64_t m_id;
  std::exception_ptr m_error;  // the task's own exception, if it ended with one
};

/// The task a group spawns: awaits `body`; `exit` reports the end (see task_group_exit).
/// An exception thrown after the task was aborted (abort_all, the destructor,
/// cancel_on_error) is how its body gave up, not a failure of its own: it does not make
/// cancel_on_error refuse later spawns. (The token check costs the task's stop source,
/// made once, on that path only.)
template <class T>
task<T> run_in_group(task_group_exit exit, task<T> body) {
  std::exception_ptr error;
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(body);
      co_return;
    } else {
      co_return co_await std::move(body);
    }
  } catch (...) {
    error = std::current_exception();
  }
  std::stop_token own = co_await get_stop_token();  // an abort requests this token
  if (!own.stop_requested()) {
    exit.note_failure(error);
  }
  std::rethrow_exception(error);
}

}  // namespace detail

/// A group of spawned tasks yielding T, owned by one task; see the header.
template <class T>
class task_group {
 public:
  /// What next() yields: for non-void T the value (empty when the group is empty); for
  /// void T, true when a task finished, false when the group is empty.
  using next_type = std::conditional_t<std::is_void_v<T>, bool, std::optional<T>>;
  /// What join_all() yields: the values in completion order (nothing for void T).
  using all_type = std::conditional_t<std::is_void_v<T>, void, std::vector<T>>;

  /// An empty group; see task_group_options. Throws std::invalid_argument for
  /// max_running == 0 (misuse: see the error convention in runtime/result.hpp).
  explicit task_group(task_group_options options = {})
      : m_options(checked(options)), m_shared(std::make_shared<detail::task_group_shared>(options.max_running)) {}
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;
  /// Aborts every task still in the group (abort_all) and lets go of them, as Tokio's
  /// JoinSet does: each task's current and later waits end as cancelled, and the task
  /// ends when its body returns — soon after for a body that gives up on a cancelled
  /// wait, not inside this destructor, and not at all for one that ignores cancellation
  /// (an uncancellable lock, shield, a running spawn_blocking job, a loop that never
  /// waits). So a task must not use the owner's locals by reference unless the owner
  /// ends the group with `co_await g.join_all()` (the structured exit) before they go.
  /// An exception of a finished task nobody took is reported on stderr. Precondition: no
  /// member of the group is being awaited.
  ~task_group() { abort_all(); }

  /// Spawns `t` into the group once fewer than max_running of its tasks run (at once
  /// when unlimited). Cancellation: the token inherited by the awaiting task (timeout,
  /// when_any, an abort) ends a wait for a slot with operation_canceled; `t` is then
  /// destroyed without running. Errors: operation_canceled. Must be awaited on a worker
  /// thread by the group's owner.
  task<result<void>> spawn(task<T> t) { return spawn(std::stop_token{}, std::move(t)); }

  /// spawn(t), whose wait for a slot `token` also ends (operation_canceled): a server's
  /// accept loop passes its shutdown token, so that Ctrl-C at the connection limit does
  /// not wait for a connection to end.
  task<result<void>> spawn(std::stop_token token, task<T> t) {
    if (refuse_after_failure()) {
      co_return unexpected(make_error_code(errc::aborted));
    }
    if (m_shared->bounded) {
      auto permit = co_await m_shared->slots.acquire(1, std::move(token));
      if (!permit) {
        co_return unexpected(permit.error());
      }
      permit->forget();  // the task's task_group_exit gives the slot back
      if (refuse_after_failure()) {
        m_shared->slots.release(1);
        co_return unexpected(make_error_code(errc::aborted));
      }
    }
    launch(std::move(t));
    co_return result<void>{};
  }

  /// Spawns `f(args...)`, `f` and `args` kept in the task's frame (as
  /// corio::spawn(callable, args...)); otherwise as spawn(task).
  template <class F, class... Args>
    requires detail::task_callable<F, Args...> &&
             std::same_as<detail::callable_task_t<std::decay_t<F>, std::decay_t<Args>...>, task<T>>
  task<result<void>> spawn(F&& f, Args&&... args) {
    return spawn(detail::owned_call(std::forward<F>(f), std::forward<Args>(args)...));
  }

  /// Spawns `t` if fewer than max_running tasks of the group run; false (and `t`
  /// destroyed without running) otherwise. Never waits. Worker thread, owner only.
  bool try_spawn(task<T> t) {
    if (refuse_after_failure() || (m_shared->bounded && !m_shared->slots.try_acquire())) {
      return false;
    }
    launch(std::move(t));
    return true;
  }

  /// try_spawn for `f(args...)` (see the callable spawn).
  template <class F, class... Args>
    requires detail::task_callable<F, Args...> &&
             std::same_as<detail::callable_task_t<std::decay_t<F>, std::decay_t<Args>...>, task<T>>
  bool try_spawn(F&& f, Args&&... args) {
    return try_spawn(detail::owned_call(std::forward<F>(f), std::forward<Args>(args)...));
  }

  /// Waits for the next task of the group to finish and removes it: yields its value
  /// (see next_type), or rethrows its exception — std::system_error(errc::aborted) for an
  /// aborted task, errc::shut_down for one the runtime destroyed. Each task is yielded
  /// once, in the order they finish. With cancel_on_error, an exception first aborts the
  /// other tasks. An empty group yields at once (empty / false). Cancellation: the
  /// inherited token ends the wait with std::system_error(operation_canceled) and takes
  /// nothing. Owner only; the group must outlive the await.
  task<next_type> next() {
    next_type out{};
    std::exception_ptr error;
    co_await take_one(out, error);
    if (error) {
      std::rethrow_exception(error);
    }
    co_return out;
  }

  /// Waits until every task of the group has finished (tasks spawned meanwhile are
  /// impossible: the owner is here) and yields their values in completion order. If any
  /// ended with an exception, rethrows the first one (in completion order) once all have
  /// ended; with cancel_on_error the others are aborted as soon as it is taken, so this
  /// returns promptly. Cancellation: as next(); the tasks not yet taken stay in the
  /// group and the values taken so far are lost.
  task<all_type> join_all() {
    std::exception_ptr first;
    [[maybe_unused]] std::conditional_t<std::is_void_v<T>, bool, std::vector<T>> values{};
    while (!m_tasks.empty()) {
      next_type out{};
      std::exception_ptr error;
      co_await take_one(out, error);
      if (error && !first) {
        first = error;
      }
      if constexpr (!std::is_void_v<T>) {
        if (out) {
          values.push_back(std::move(*out));
        }
      }
    }
    if (first) {
      std::rethrow_exception(first);
    }
    if constexpr (!std::is_void_v<T>) {
      co_return values;
    }
  }

  /// Aborts every task in the group (join_handle::abort); they stay in it until next()
  /// or join_all() takes them (as errc::aborted, or their result if they finished
  /// first). Does not wait. Owner only.
  void abort_all() noexcept {
    for (auto& entry : m_tasks) {
      entry.second.abort();
    }
  }

  /// Tasks spawned and not yet taken by next()/join_all() (nor dropped by keep_results =
  /// false): those running and those finished but not collected.
  [[nodiscard]] std::size_t size() const noexcept { return m_tasks.size(); }
  /// size() == 0.
  [[nodiscard]] bool empty() const noexcept { return m_tasks.empty(); }

  /// keep_results = false: the exception of the first task a spawn dropped that had ended
  /// with an exception of its own (not one thrown after it was aborted), or empty. Only
  /// the first is kept; every one is also reported on stderr when dropped, except one
  /// whose task an abort reached between its wrapper's token check and the end of its
  /// frame (the task then ends as errc::aborted, silently, but its exception is kept
  /// here). with_task_group rethrows it. Owner only.
  [[nodiscard]] std::exception_ptr dropped_error() const noexcept { return m_dropped_error; }

 private:
  static task_group_options checked(task_group_options options) {
    if (options.max_running == 0) {
      throw std::invalid_argument("corio::task_group: max_running must be at least 1");
    }
    return options;
  }

  void launch(task<T> t) {
    if (!m_options.keep_results) {
      drop_finished();
    }
    const std::uint64_t id = m_next_id++;
    // The exit first, so that a throw below still frees the slot (its id, unknown to
    // m_tasks, is then skipped by next()).
    detail::task_group_exit exit{m_shared, id};
    // Abortable (corio::abortable): abort_all, cancel_on_error and the destructor stop it.
    auto handle = corio::spawn(corio::abortable, detail::run_in_group<T>(std::move(exit), std::move(t)));
    m_tasks.emplace(id, std::move(handle));
  }

  /// cancel_on_error and a task failed: abort the others, refuse new ones.
  bool refuse_after_failure() noexcept {
    // acquire: pairs with note_failure()'s release (a flag only).
    if (!m_options.cancel_on_error || !m_shared->failed.load(std::memory_order_acquire)) {
      return false;
    }
    abort_all();
    return true;
  }

  void drop_finished() {
    // A handle not yet completed detaches; its task completes at once.
    if (m_pending) {
      drop(*m_pending);  // received by a next() whose wait was then cancelled
      m_pending.reset();
    }
    while (auto end = m_shared->ended.try_recv()) {
      drop(*end);
    }
  }

  void drop(const detail::task_group_end& end) {
    m_tasks.erase(end.id);
    if (end.error && !m_dropped_error) {
      m_dropped_error = end.error;
    }
  }

  // Takes the next finished task into `out` (or its exception into `error`); leaves
  // `out` empty when the group is empty. Throws only when its own wait is cancelled.
  task<void> take_one(next_type& out, std::exception_ptr& error) {
    if (m_taking) {
      throw std::logic_error(
          "corio::task_group: next() or join_all() awaited while another is in progress (a group has one owner)");
    }
    m_taking = true;
    struct clear_on_exit {
      bool* flag;
      ~clear_on_exit() { *flag = false; }
    } clear{&m_taking};
    while (!m_tasks.empty()) {
      if (!m_pending) {
        auto end = co_await m_shared->ended.recv();
        if (!end) {
          throw std::system_error(end.error());
        }
        m_pending = std::move(*end);  // its error comes through its handle too
      }
      auto it = m_tasks.find(m_pending->id);
      if (it == m_tasks.end()) {
        m_pending.reset();  // a launch that threw
        continue;
      }
      co_await await_handle(it->second, out, error);
      if (it->second.valid()) {
        std::rethrow_exception(error);  // our wait was cancelled; the task stays pending
      }
      m_tasks.erase(it);
      m_pending.reset();
      if (error && m_options.cancel_on_error) {
        abort_all();
      }
      co_return;
    }
  }

  // Awaits `h` into `out`, or its exception (or our wait's cancellation) into `error`.
  static task<void> await_handle(join_handle<T>& h, next_type& out, std::exception_ptr& error) {
    try {
      if constexpr (std::is_void_v<T>) {
        co_await h;
        out = true;
      } else {
        out.emplace(co_await h);
      }
    } catch (...) {
      error = std::current_exception();
    }
  }

  task_group_options m_options;
  std::shared_ptr<detail::task_group_shared> m_shared;
  std::unordered_map<std::uint64_t, join_handle<T>> m_tasks;  // running or not yet taken
  std::optional<detail::task_group_end> m_pending;  // received, its handle not yet taken
  std::exception_ptr m_dropped_error;  // see dropped_error()
  bool m_taking = false;  // a next() or join_all() is in progress (the one-owner check)
  std::uint64_t m_next_id = 0;
};

namespace detail {
/// with_task_group's error: the body's (`failure`), else, unless the scope aborted the
/// group, the first one a spawn dropped (it ended before the body's last spawn), else the
/// first one taken at the end. Returns when there is none.
inline void rethrow_scope_error(const std::exception_ptr& failure, bool aborting, const std::exception_ptr& dropped,
                                const std::exception_ptr& first) {
  if (failure) {
    std::rethrow_exception(failure);
  }
  if (aborting) {
    return;
  }
  if (dropped) {
    std::rethrow_exception(dropped);
  }
  if (first) {
    std::rethrow_exception(first);
  }
}
}  // namespace detail

/// The structured scope of a group — Python's `async with asyncio.TaskGroup() as g:`,
/// Trio's nursery: runs `body(g)` on a new group made with `options`, then waits until
/// every task of the group has ended, however the body ended. If the body throws, or the
/// awaiting task was cancelled (timeout, when_any, an abort), the group's tasks are
/// aborted first (how they then end is not reported). Yields the body's value; rethrows
/// the body's exception if it threw, else — unless the scope aborted them — the first
/// exception of a group task that ended on its own: the first one a spawn dropped
/// (keep_results = false, task_group::dropped_error()), else the first in completion
/// order among those taken at the end, not counting errc::aborted (a task aborted by the
/// body, abort_all or cancel_on_error ended as meant). Only that one comes back; the
/// others are lost (those dropped by keep_results = false were reported on stderr).
/// What the exceptions become when the scope aborts the group (the body threw, or the
/// caller was cancelled): all are lost, silently — those thrown after the abort (as
/// errc::aborted), and also one a task threw on its own before the abort and nobody had
/// taken; the body's exception, or the caller's cancellation, is what the caller sees.
/// (A dropped task's exception was still reported on stderr when it was dropped.) Values
/// the body did not take with next() are dropped. No task of the group outlives the
/// call, so the tasks may use the caller's locals by reference. The wait at the end
/// ignores the caller's cancellation (it only waits for aborted tasks to end; a task
/// that ignores cancellation holds it up, as in Trio). `body` is kept in the scope's
/// frame, so a capturing lambda is safe here.
///   int n = co_await corio::with_task_group<int>({.max_running = 8},
///       [&](corio::task_group<int>& g) -> corio::task<int> {
///         for (auto& item : items) { (void)co_await g.spawn(work, std::ref(item)); }
///         co_return static_cast<int>(items.size());
///       });
/// Cost: one coroutine frame beside the group's own; the final join as join_all().
template <class T, class Body>
  requires std::invocable<Body&, task_group<T>&> && detail::is_task<std::invoke_result_t<Body&, task_group<T>&>>::value
std::invoke_result_t<Body&, task_group<T>&> with_task_group(task_group_options options, Body body) {
  using R = typename std::invoke_result_t<Body&, task_group<T>&>::value_type;
  task_group<T> group(options);
  std::exception_ptr failure;
  [[maybe_unused]] std::conditional_t<std::is_void_v<R>, bool, std::optional<R>> value{};
  try {
    if constexpr (std::is_void_v<R>) {
      co_await body(group);
    } else {
      value.emplace(co_await body(group));
    }
  } catch (...) {
    failure = std::current_exception();
  }
  std::stop_token caller = co_await get_stop_token();
  bool aborting = failure || caller.stop_requested();
  if (aborting) {
    group.abort_all();  // how the tasks then end (errc::aborted, or how they gave up) is not news
  }
  // Every task taken, in completion order; an abort (by the body, cancel_on_error or the
  // scope) is how a task was meant to end, not an error. Until the scope aborts, the
  // caller's stop ends the wait (next() then takes nothing) and aborts the group; after,
  // the wait is shielded: it only waits for aborted tasks to end.
  std::exception_ptr first;
  while (!group.empty()) {
    bool caller_stopped = false;
    try {
      if (aborting) {
        (void)co_await shield(group.next());
      } else {
        (void)co_await group.next();
      }
    } catch (const std::system_error& e) {
      if (!aborting && caller.stop_requested() && e.code() == std::errc::operation_canceled) {
        caller_stopped = true;
      } else if (e.code() != make_error_code(errc::aborted) && !first) {
        first = std::current_exception();
      }
    } catch (...) {
      if (!first) {
        first = std::current_exception();
      }
    }
    if (caller_stopped) {
      aborting = true;
      group.abort_all();
    }
  }
  detail::rethrow_scope_error(failure, aborting, group.dropped_error(), first);
  if constexpr (!std::is_void_v<R>) {
    co_return std::move(*value);
  }
}

/// with_task_group with default options.
template <class T, class Body>
  requires std::invocable<Body&, task_group<T>&> && detail::is_task<std::invoke_result_t<Body&, task_group<T>&>>::value
std::invoke_result_t<Body&, task_group<T>&> with_task_group(Body body) {
  return with_task_group<T>(task_group_options{}, std::move(body));
}

}  // namespace corio
