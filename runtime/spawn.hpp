// Spawning tasks onto the runtime: corio::spawn, join_handle<T>.
//
// spawn(task) makes the task a root: it runs on some worker (and may be stolen by
// another) independently of the spawner. The returned join_handle<T> is awaitable and
// yields the task's value (or rethrows its exception); dropping it detaches the task,
// which still runs to completion. An exception escaping a detached task is reported on
// stderr. If the runtime shuts down first, the task's frame is destroyed (its locals'
// destructors run) and awaiting the handle throws std::system_error(errc::shut_down).
// Thread-safety: a join_handle has one owner; the task may finish on any thread.
// Cost: one frame (recycled) + one join state (recycled) + one registry insert/remove
// under a per-worker spinlock; no syscalls, and a wake only if a worker is idle.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <new>
#include <semaphore>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>

#include <corio/runtime/detail/frame_allocator.hpp>
#include <corio/runtime/detail/scheduling.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio {

namespace detail {

/// Blocks a plain thread (block_on) until a root task finishes.
struct thread_waiter {
  std::binary_semaphore done{0};
};

/// Shared by a spawned task's top frame and its join_handle (reference counted: 2).
struct join_state_base {
  // waiter word values:
  //   0              task running, nobody waiting
  //   kDone (1)      task finished (result published)
  //   ptr            a coroutine (frame address) awaits the result
  //   ptr | kThread  a thread_waiter* (block_on) awaits the result
  static constexpr std::uintptr_t kDone = 1;
  static constexpr std::uintptr_t kThread = 2;

  std::atomic<std::uintptr_t> waiter{0};
  std::atomic<std::uint32_t> refs{2};
  std::coroutine_handle<> frame{};
  runtime_core* runtime = nullptr;
  runtime_core* waiter_runtime = nullptr;  // where the awaiting coroutine runs
  // Registry links (owned by the registry shard's lock).
  join_state_base* reg_prev = nullptr;
  join_state_base* reg_next = nullptr;
  unsigned reg_shard = 0;
  std::exception_ptr error{};
  bool cancelled = false;   // destroyed by runtime shutdown before it finished
  bool observed = false;    // the result was taken through a join_handle
  void (*free_self)(join_state_base*) noexcept = nullptr;

  /// Publishes completion and wakes the waiter. Called once, by the finishing worker
  /// (or by shutdown with cancelled = true).
  void complete(bool from_shutdown) noexcept;
  void release() noexcept;
};

template <class T>
struct join_state : join_state_base {
  alignas(T) unsigned char storage[sizeof(T)];
  bool has_value = false;

  join_state() {
    free_self = [](join_state_base* b) noexcept {
      auto* s = static_cast<join_state*>(b);
      s->~join_state();
      frame_deallocate(s, sizeof(join_state));
    };
  }
  ~join_state() {
    if (has_value) {
      std::launder(reinterpret_cast<T*>(storage))->~T();
    }
  }
  static join_state* create() { return ::new (frame_allocate(sizeof(join_state))) join_state(); }
  T& value() { return *std::launder(reinterpret_cast<T*>(storage)); }
};

template <>
struct join_state<void> : join_state_base {
  join_state() {
    free_self = [](join_state_base* b) noexcept {
      auto* s = static_cast<join_state*>(b);
      s->~join_state();
      frame_deallocate(s, sizeof(join_state));
    };
  }
  static join_state* create() { return ::new (frame_allocate(sizeof(join_state))) join_state(); }
};

template <class T>
void finish_root(std::coroutine_handle<> frame, join_state_base* root, promise_base& p,
                 T* value) noexcept {
  auto* st = static_cast<join_state<T>*>(root);
  if (p.exception) {
    st->error = std::move(p.exception);
  } else if constexpr (!std::is_void_v<T>) {
    ::new (static_cast<void*>(st->storage)) T(std::move(*value));
    st->has_value = true;
  }
  st->frame = {};
  frame.destroy();  // allowed: the frame is suspended at its final suspend point
  st->complete(false);
}

/// Registers `st` and queues its frame. Returns false (and does nothing) if the runtime
/// is shutting down.
bool spawn_root(runtime_core* rt, join_state_base* st) noexcept;
runtime_core* current_runtime_or_throw();

[[noreturn]] void throw_shut_down();

}  // namespace detail

/// Awaitable handle to a spawned task's result. Move-only; dropping it detaches.
template <class T>
class [[nodiscard]] join_handle {
 public:
  join_handle() noexcept = default;
  explicit join_handle(detail::join_state<T>* st) noexcept : m_state(st) {}
  join_handle(join_handle&& o) noexcept : m_state(std::exchange(o.m_state, nullptr)) {}
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

  /// True once the task has finished (value, exception or shutdown).
  [[nodiscard]] bool is_finished() const noexcept {
    // acquire: pairs with the acq_rel exchange in join_state_base::complete().
    return m_state != nullptr &&
           m_state->waiter.load(std::memory_order_acquire) == detail::join_state_base::kDone;
  }

  [[nodiscard]] bool valid() const noexcept { return m_state != nullptr; }

  struct awaiter {
    detail::join_state<T>* st;
    bool await_ready() const noexcept {
      // acquire: pairs with the acq_rel exchange in complete(); makes the value visible.
      return st->waiter.load(std::memory_order_acquire) == detail::join_state_base::kDone;
    }
    bool await_suspend(std::coroutine_handle<> h) noexcept {
      st->waiter_runtime = detail::current_runtime();
      std::uintptr_t expected = 0;
      // acq_rel: release publishes our frame to the finisher; acquire (on failure, the
      // state is kDone) makes the result visible before we resume inline.
      return st->waiter.compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(h.address()),
                                                std::memory_order_acq_rel, std::memory_order_acquire);
    }
    T await_resume() {
      st->observed = true;
      if (st->cancelled) {
        detail::throw_shut_down();
      }
      if (st->error) {
        std::rethrow_exception(st->error);
      }
      if constexpr (!std::is_void_v<T>) {
        return std::move(st->value());
      }
    }
  };

  /// Waits for the task. Returns its value or rethrows its exception; throws
  /// std::system_error(errc::shut_down) if the runtime destroyed it first.
  /// Precondition: valid(), and no other coroutine is awaiting this handle.
  awaiter operator co_await() noexcept { return awaiter{m_state}; }

 private:
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
