// Spawning tasks onto the runtime: corio::spawn, join_handle<T>.
//
// spawn(task) makes the task a root: it runs on some worker (and may be stolen by
// another) independently of the spawner. The returned join_handle<T> is awaitable and
// yields the task's value (or rethrows its exception) once: awaiting consumes it, and
// awaiting an empty handle throws std::logic_error; dropping it detaches the task,
// which still runs to completion. An exception escaping a detached task is reported on
// stderr. If the runtime shuts down first, the task's frame is destroyed (its locals'
// destructors run) and awaiting the handle throws std::system_error(errc::shut_down).
// Thread-safety: a join_handle has one owner; the task may finish on any thread.
// Cost: one frame (recycled) + one join state (recycled) + a push onto the spawning
// worker's registry list (no lock); no syscalls, and a wake only if a worker is idle.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
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

/// The type-independent part of a join_handle's awaiter (runtime.cpp). Protocol on the
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
  bool suspend(std::coroutine_handle<> h, const std::stop_token* inherited);
  /// True when this wait (not the task) was stopped; valid after finish().
  [[nodiscard]] bool cancelled() const noexcept { return m_cancelled; }
  /// Throws for a cancelled wait, a task destroyed by shutdown, or the task's exception.
  void finish();

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

  /// What `co_await handle` and `co_await handle.wait(token)` await: yields the task's
  /// value, or rethrows its exception. Finishing (value, exception or shut_down) consumes
  /// the handle: it is then empty (valid() false) and awaiting it again throws
  /// std::logic_error. A cancelled wait leaves the handle as it was.
  class awaiter : detail::join_wait {
   public:
    /// Made by join_handle's operator co_await and wait(); `owner` must outlive the await.
    awaiter(join_handle* owner, std::stop_token token)
        : join_wait(owner->m_state, std::move(token)), m_owner(owner) {}
    bool await_ready() noexcept { return ready(); }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) {
      return suspend(h, detail::inherited_token_of(h));
    }
    T await_resume() {
      consume_on_exit consume{this};
      finish();
      auto* typed = static_cast<detail::join_state<T>*>(m_state);
      if constexpr (!std::is_void_v<T>) {
        return std::move(typed->value());  // moved out before `consume` releases the state
      }
    }
    using join_wait::state;

   private:
    // Releases the owner's task once the result (or its exception) has been taken;
    // a cancelled wait keeps it, so the handle can be awaited again.
    struct consume_on_exit {
      awaiter* self;
      ~consume_on_exit() {
        if (!self->cancelled()) {
          self->m_owner->detach();
        }
      }
    };
    join_handle* m_owner;
  };

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
join_handle<T> spawn_on(runtime_core* rt, task<T>&& t, bool* accepted) {
  auto h = t.release();
  auto* st = join_state<T>::create();
  st->frame = h;
  st->runtime = rt;
  h.promise().root = st;
  if (!spawn_root(rt, st)) {
    h.destroy();
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
/// outside a runtime.
template <class T>
join_handle<T> spawn(task<T> t) {
  bool accepted = false;
  return detail::spawn_on(detail::current_runtime_or_throw(), std::move(t), &accepted);
}

}  // namespace corio
