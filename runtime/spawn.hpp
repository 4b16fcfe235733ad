// Spawning tasks onto the runtime: corio::spawn, join_handle<T>, abort.
//
// spawn(task) makes the task a root: it runs on some worker (and may be stolen by
// another) independently of the spawner. The returned join_handle<T> is awaitable and
// yields the task's value (or rethrows its exception) once: awaiting consumes it, and
// awaiting an empty handle throws std::logic_error; dropping it detaches the task,
// which still runs to completion. An exception escaping a detached task is reported on
// stderr. If the runtime shuts down first, the task's frame is destroyed (its locals'
// destructors run) and awaiting the handle throws std::system_error(errc::shut_down).
// `co_await handle.join()` is the same wait with a result<T>: a cancelled wait, shutdown and
// abort come back as error codes instead (the task's own exception is still rethrown; the
// error convention and its reason are at the top of runtime/result.hpp).
//
// LIFETIME RULE — a coroutine lambda's captures live in the lambda object, not in the
// coroutine frame. `spawn([x]() -> task<int> { co_return x; }())` compiles, but the
// lambda temporary dies at the end of that statement while the task still runs: the
// task then reads freed memory. The same holds for a lambda's reference parameters and
// for any coroutine taking references to temporaries. Write instead
//   corio::spawn([x]() -> task<int> { co_return x; });           // no call parentheses
//   corio::spawn([](std::string s) -> task<std::size_t> { co_return s.size(); }, std::string("x"));
// spawn(callable, args...) moves the callable and its arguments into the spawned task's
// frame (a wrapper coroutine that takes them by value and awaits the callable's task),
// so they live as long as the task. spawn(task) cannot tell a task made by a lambda call
// from one made by a plain coroutine function (whose by-value parameters are safe), so it
// stays as it is; only the form without the call compiles into the safe path. A linter
// can find the dangerous form: clang-tidy's cppcoreguidelines-avoid-capturing-lambda-
// coroutines (clang-tidy 17+; Debian 12: clang-tidy-19) flags every capturing coroutine
// lambda, e.g. `clang-tidy-19 -p build -checks='-*,cppcoreguidelines-avoid-capturing-
// lambda-coroutines' app.cpp`. corio's examples pass it with no finding: their coroutine
// lambdas capture nothing and take what they need as arguments. It also flags a capturing
// lambda given to spawn(callable, args...), which is safe: pass arguments there too, or
// silence that line (NOLINT).
//
// Abort: a task spawned with corio::abortable (`spawn(corio::abortable, t)`, also with a
// callable, and runtime::spawn) can be stopped from its handle: handle.abort() requests
// the task's stop token; the wait it is in and every later one (sleep, I/O, locks,
// channels, joins, anything honouring the token a task inherits, and `co_await
// corio::get_stop_token()`) ends as cancelled, and awaiting the handle throws
// std::system_error(errc::aborted) — see join_handle::abort for the exact rule. Tasks
// spawned by an aborted task are independent and are not aborted. abort() on a task
// spawned without the tag throws std::logic_error: its waits do not watch for an abort.
// Opt-in because watching costs every wait of the task something (below), and a plain
// spawn keeps corio's fork-join and ping-pong figures.
//
// Thread-safety: a join_handle has one owner; the task may finish on any thread; abort()
// may be called from any thread (see join_handle::abort).
// Cost: one frame (recycled) + one join state (recycled) + a push onto the spawning
// worker's registry list (no lock); no syscalls, and a wake only if a worker is idle.
// An abortable task costs no allocation per spawn; per wait, one recycled block from the
// frame allocator (a list pop and push: the stop link keeps its hook there, so that a
// plain task's awaiters stay one pointer) and no lock: the join state holds an abort word
// and a slot where the task's current wait parks its stop callback (stop_link: a CAS and
// a load to park, a CAS to leave; a std::stop_callback would cost a lock in a stop state
// per wait besides, which made fork-join 1.9x slower in an earlier attempt). Its std::stop_source is created (one allocation, once)
// only when something in it needs a std::stop_token: get_stop_token, a combinator
// (when_all, when_any, timeout), an ipc wait that takes a token pointer, or a second
// wait of the same task while the slot is taken; waits that then register on the
// token pay as for a token from when_any. Measured with every task abortable, on a
// shared, loaded 2-core machine (release, alternating with a build without abort,
// medians of 5 to 7): `runtime_bench tree` +8% to +23%, `pingpong` (two event waits per
// round trip) 86 -> 124 ns per round trip with 1 worker (with the hook inline in the
// awaiter, before the per-wait block; not measured since). A plain spawn pays no CAS and
// no allocation, and its awaiters carry no hook: an inline hook (three pointers in every
// stop link) had cost 3-4% of the 1-worker ping-pong of plain tasks.
// spawn(callable, args...) costs one more frame and resume than spawn(task).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <functional>
#include <stop_token>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>

#include <corio/runtime/detail/frame_allocator.hpp>
#include <corio/runtime/detail/join_state.hpp>
#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio {

namespace detail {

/// The type-independent part of a join_handle's awaiter (spawn.cpp). Protocol on the
/// state's waiter word: the awaiter publishes its frame with a CAS 0 -> frame; the task's
/// completion exchanges it for kDone and wakes the frame; a stop request takes it back
/// with a CAS frame -> 0 (and wakes the frame itself) or, before publication, marks the
/// word kCancelled so that the publication fails. Exactly one side wins each CAS, so the
/// frame is resumed once.
class join_wait {
 public:
  join_wait(join_state_base* state, std::stop_token token) noexcept : m_state(state), m_token(std::move(token)) {}
  /// Moves an awaiter that has not been awaited yet (e.g. into timeout()).
  join_wait(join_wait&& o) noexcept : m_state(o.m_state), m_token(std::move(o.m_token)) {}
  join_wait(const join_wait&) = delete;
  join_wait& operator=(const join_wait&) = delete;
  ~join_wait();

  [[nodiscard]] join_state_base* state() const noexcept { return m_state; }

 protected:
  bool ready() noexcept;
  bool suspend(std::coroutine_handle<> h, inherited_stop inherited);
  /// True when this wait (not the task) was stopped; valid after finish().
  [[nodiscard]] bool cancelled() const noexcept { return m_cancelled; }
  /// Throws for a cancelled wait, a task destroyed by shutdown or aborted, or the task's
  /// exception.
  void finish();
  /// The same, but returns the runtime's outcomes (operation_canceled, errc::shut_down,
  /// errc::aborted) instead of throwing them; rethrows the task's own exception; {} when
  /// the task's value is ready.
  std::error_code finish_code();

  join_state_base* m_state;

 private:
  struct stop_fn {
    join_wait* self;
    void operator()() const noexcept { self->on_stop(); }
  };
  void on_stop() noexcept;

  std::stop_token m_token;
  std::coroutine_handle<> m_waiter{};
  runtime_core* m_home = nullptr;
  stop_link<stop_fn> m_stop;
  bool m_yield = false;      // the result is ready but the task's budget is spent
  bool m_published = false;  // our frame is in the waiter word
  bool m_cancelled = false;  // this wait (not the task) was stopped
};

/// Registers `st` and queues its frame. Returns false (and does nothing) if the runtime
/// is shutting down.
bool spawn_root(runtime_core* rt, join_state_base* st) noexcept;
runtime_core* current_runtime_or_throw();

[[noreturn]] void throw_shut_down();
/// std::logic_error: a join_handle without a task was awaited.
[[noreturn]] void throw_empty_join_handle();
/// std::logic_error: abort() on a task not spawned with corio::abortable.
[[noreturn]] void throw_not_abortable();

}  // namespace detail

/// Awaitable handle to a spawned task's result. Move-only; awaiting consumes it; dropping
/// it detaches.
template <class T>
class [[nodiscard]] join_handle {
 public:
  join_handle() noexcept = default;
  /// Used by spawn(); users get handles from spawn() or runtime::spawn().
  explicit join_handle(detail::join_state<T>* st) noexcept : m_state(st) {}
  /// Takes over `o`'s task; `o` becomes invalid.
  join_handle(join_handle&& o) noexcept : m_state(std::exchange(o.m_state, nullptr)) {}
  /// Detaches the task held so far, then takes over `o`'s.
  join_handle& operator=(join_handle&& o) noexcept {
    if (this != &o) {
      detach();
      m_state = std::exchange(o.m_state, nullptr);
    }
    return *this;
  }
  join_handle(const join_handle&) = delete;
  join_handle& operator=(const join_handle&) = delete;
  ~join_handle() { detach(); }

  /// Lets the task run on without anyone waiting for it.
  void detach() noexcept {
    if (m_state != nullptr) {
      std::exchange(m_state, nullptr)->release();
    }
  }

  /// True once the task has finished (value, exception or shutdown). Any thread.
  [[nodiscard]] bool is_finished() const noexcept {
    // acquire: pairs with the acq_rel exchange in join_state_base::complete().
    return m_state != nullptr &&
           m_state->waiter.load(std::memory_order_acquire) == detail::join_state_base::kDone;
  }

  /// False for a default-constructed, moved-from or detached handle.
  [[nodiscard]] bool valid() const noexcept { return m_state != nullptr; }

  /// True when abort() can stop the task: it was spawned with corio::abortable (and the
  /// handle is valid). Owner only, as the handle.
  [[nodiscard]] bool abortable() const noexcept { return m_state != nullptr && m_state->abortable; }

  /// Aborts the task: requests its stop token, so that the wait it is in (sleep, I/O,
  /// lock, channel, join) and every later one ends as cancelled; a task aborted before it
  /// first ran never runs its body. If abort() came before the task finished, awaiting
  /// this handle throws std::system_error(errc::aborted), whatever the body then returned
  /// or threw (its value is destroyed, its exception dropped unreported); a task that
  /// finished first yields its result as usual. Does not wait; a task that ignores its
  /// token (a loop never awaiting) runs on until it ends. Tasks it spawned are not
  /// aborted. No-op on an empty handle and when called again. Only for a task spawned
  /// with corio::abortable (spawn(corio::abortable, ...)): on any other task it throws
  /// std::logic_error saying so, since that task's waits do not watch for an abort.
  /// Thread-safety: any thread, concurrently with the task and with an await of another
  /// handle; not concurrently with a move, destruction, detach or finishing await of this
  /// handle (a handle has one owner). Cost: a few atomic operations.
  void abort() {
    if (m_state == nullptr) {
      return;
    }
    if (!m_state->abortable) {
      detail::throw_not_abortable();
    }
    m_state->request_abort();
  }

  /// How an awaiter reports the outcomes that are not the task's own (a cancelled wait,
  /// shutdown, abort): thrown as std::system_error (`co_await handle`, wait()) or returned
  /// as the error of a result<T> (join()).
  enum class report { throws, as_result };

  /// What `co_await handle`, `handle.wait(token)` and `handle.join()` await: yields the
  /// task's value, or rethrows its exception (always: it is the task's own outcome, as a
  /// function call's exception is). Finishing (value, exception, shut_down or aborted)
  /// consumes the handle: it is then empty (valid() false) and awaiting it again throws
  /// std::logic_error. A cancelled wait leaves the handle as it was.
  template <report Report>
  class basic_awaiter : detail::join_wait {
   public:
    /// What await_resume returns: T, or result<T> for join().
    using value_type = std::conditional_t<Report == report::throws, T, result<T>>;
    /// Made by join_handle's operator co_await, wait() and join(); `owner` must outlive
    /// the await.
    basic_awaiter(join_handle* owner, std::stop_token token)
        : join_wait(owner->m_state, std::move(token)), m_owner(owner) {}
    bool await_ready() noexcept { return ready(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
      return suspend(h, detail::inherited_token_of(h));
    }
    // [[nodiscard]] for join() and for a task returning a result (result.hpp, rule 4).
    value_type await_resume() requires(!detail::is_result_v<value_type>) { return take(); }
    [[nodiscard]] value_type await_resume() requires detail::is_result_v<value_type> { return take(); }
    using join_wait::state;

   private:
    value_type take() {
      consume_on_exit consume{this};
      if constexpr (Report == report::throws) {
        finish();
      } else if (std::error_code ec = finish_code()) {
        return unexpected(ec);
      }
      auto* typed = static_cast<detail::join_state<T>*>(m_state);
      if constexpr (!std::is_void_v<T>) {
        return std::move(typed->value());  // moved out before `consume` releases the state
      } else if constexpr (Report == report::as_result) {
        return {};
      }
    }

    // Releases the owner's task once the result (or its exception) has been taken;
    // a cancelled wait keeps it, so the handle can be awaited again.
    struct consume_on_exit {
      basic_awaiter* self;
      ~consume_on_exit() {
        if (!self->cancelled()) {
          self->m_owner->detach();
        }
      }
    };
    join_handle* m_owner;
  };
  /// The awaiter of `co_await handle` and wait(token).
  using awaiter = basic_awaiter<report::throws>;
  /// The awaiter of join() and join(token).
  using result_awaiter = basic_awaiter<report::as_result>;

  /// Waits for the task. Returns its value or rethrows its exception; throws
  /// std::system_error(errc::shut_down) if the runtime destroyed it first. Either way the
  /// handle is consumed (see awaiter). Cancellation: the token inherited from the
  /// awaiting task (when_any, timeout) stops the wait, not the task: the await throws
  /// std::system_error(operation_canceled) and the handle can be awaited again. Must be
  /// awaited on a worker thread; the handle must outlive the await.
  /// Throws std::logic_error (before suspending) when the handle holds no task: default-
  /// constructed, moved-from, detached or already awaited. Precondition: no other
  /// coroutine is awaiting this handle.
  awaiter operator co_await() { return awaiter{checked(), {}}; }

  /// The same wait, also stopped by `token`.
  awaiter wait(std::stop_token token) { return awaiter{checked(), std::move(token)}; }

  /// The same wait (optionally also stopped by `token`), with the runtime's outcomes as
  /// values: `result<T> r = co_await handle.join();` holds the task's value, or
  /// std::errc::operation_canceled (this wait was stopped; the handle is kept and can be
  /// awaited again), errc::shut_down (the runtime destroyed the task) or errc::aborted
  /// (abort() came first). An exception thrown by the task itself is still rethrown: it
  /// is the task's outcome, not the runtime's (see result.hpp, "the error convention").
  /// Throws std::logic_error (before suspending) on a handle without a task, as co_await.
  result_awaiter join(std::stop_token token = {}) { return result_awaiter{checked(), std::move(token)}; }

 private:
  join_handle* checked() {
    if (m_state == nullptr) {
      detail::throw_empty_join_handle();
    }
    return this;
  }

  detail::join_state<T>* m_state = nullptr;
};

namespace detail {
template <class T>
join_handle<T> spawn_on(runtime_core* rt, task<T>&& t, bool* accepted, bool abortable = false) {
  // The state first: when it cannot be allocated (std::bad_alloc), `t` still owns the
  // frame and destroys it, with the task's parameters.
  auto* st = join_state<T>::create();
  auto h = t.release();
  st->frame = h;
  st->runtime = rt;
  st->abortable = abortable;
  h.promise().root = st;
  if (abortable) {
    h.promise().abort_root = st;  // its waits park on the task's abort (see abort())
  }
  if (!spawn_root(rt, st)) {
    st->frame.destroy();  // (rather than h, which would then be kept across the call)
    st->cancelled = true;
    st->waiter.store(join_state_base::kDone, std::memory_order_relaxed);
    st->refs.store(1, std::memory_order_relaxed);
    *accepted = false;
  } else {
    *accepted = true;
  }
  return join_handle<T>{st};
}
}  // namespace detail

/// Spawns `t` on the runtime this thread belongs to. Must be called on a worker thread
/// (inside a task); from other threads use runtime::spawn(). Throws std::logic_error
/// outside a runtime, std::bad_alloc when there is no memory for the task's join state
/// (`t` is then destroyed, its parameters with it). `t` must not come from calling a
/// capturing coroutine lambda: see the header comment, and use spawn(callable, args...)
/// instead.
template <class T>
join_handle<T> spawn(task<T> t) {
  bool accepted = false;
  return detail::spawn_on(detail::current_runtime_or_throw(), std::move(t), &accepted);
}

/// The tag of spawn(corio::abortable, ...): a task whose handle can abort() it.
struct abortable_t {
  explicit abortable_t() = default;
};
/// Spawns a task that join_handle::abort() can stop: `corio::spawn(corio::abortable, t)`.
inline constexpr abortable_t abortable{};

/// spawn(t), abortable: join_handle::abort() stops it. Each wait inside the task then
/// parks its stop callback in the task's join state (a recycled block from the frame
/// allocator, a CAS to enter, a CAS to leave).
template <class T>
join_handle<T> spawn(abortable_t, task<T> t) {
  bool accepted = false;
  return detail::spawn_on(detail::current_runtime_or_throw(), std::move(t), &accepted, true);
}

namespace detail {
template <class>
struct is_task : std::false_type {};
template <class T>
struct is_task<task<T>> : std::true_type {};

/// A callable that, invoked with `Args` as rvalues, returns a corio::task.
template <class F, class... Args>
concept task_callable = !is_task<std::remove_cvref_t<F>>::value &&
                        std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>...> &&
                        is_task<std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>...>>::value;

template <class F, class... Args>
using callable_task_t = std::invoke_result_t<F&, Args...>;

/// The frame that owns a spawned callable and its arguments: they are parameters of this
/// coroutine, so they live in its frame until the task they made has finished.
template <class F, class... Args>
callable_task_t<F, Args...> invoke_owned(F f, Args... args) {
  if constexpr (std::is_void_v<typename callable_task_t<F, Args...>::value_type>) {
    co_await std::invoke(f, std::move(args)...);
  } else {
    co_return co_await std::invoke(f, std::move(args)...);
  }
}

/// The task spawn(callable, args...) spawns.
template <class F, class... Args>
auto owned_call(F&& f, Args&&... args) {
  return invoke_owned<std::decay_t<F>, std::decay_t<Args>...>(std::forward<F>(f), std::forward<Args>(args)...);
}
}  // namespace detail

/// Spawns `f(args...)` with `f` and `args` moved (or copied) into the spawned task's
/// frame, where they live until the task ends: a capturing coroutine lambda's captures
/// and reference parameters stay valid. `f` is invoked with the stored arguments as
/// rvalues and must return a corio::task. Same threads and errors as spawn(task).
/// Cost: one more frame (recycled) and one more resume than spawn(task).
template <class F, class... Args>
  requires detail::task_callable<F, Args...>
auto spawn(F&& f, Args&&... args) {
  return spawn(detail::owned_call(std::forward<F>(f), std::forward<Args>(args)...));
}

/// spawn(f, args...), abortable (see spawn(abortable_t, task)).
template <class F, class... Args>
  requires detail::task_callable<F, Args...>
auto spawn(abortable_t tag, F&& f, Args&&... args) {
  return spawn(tag, detail::owned_call(std::forward<F>(f), std::forward<Args>(args)...));
}

}  // namespace corio
