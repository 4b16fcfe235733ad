// The join state of a spawned task: what its top frame and its join_handle share (the
// result, the waiter word, the references), and finish_root(), the entry point a task's
// final suspend calls when it is the top of a spawned task.
//
// Kept apart from spawn.hpp so that task.hpp can call finish_root without including
// spawn.hpp (which includes task.hpp): the typed part (moving the value into the state)
// is store_root_value<T>, inline; the rest (publishing, waking the waiter, releasing the
// references) is the non-template finish_root in runtime/join_state.cpp.
// Thread-safety: the task may finish on any worker while its handle is awaited on another;
// the waiter word and the reference count are atomics (join_state.cpp explains each
// order). Abort (join_handle::abort) may come from any thread: abort_bits and the parked
// join wait are atomics too. Cost: one allocation from the frame allocator (recycled)
// per spawn; the task's std::stop_source is created only when something inside the task
// needs a std::stop_token (get_stop_token, a combinator; see inherited_stop).
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <new>
#include <stop_token>
#include <type_traits>
#include <utility>

#include <corio/runtime/detail/frame_allocator.hpp>

namespace corio::detail {

class runtime_core;

/// Raises std::system_error(errc::aborted) (join_state.cpp).
[[noreturn]] void throw_aborted();

/// A wait's stop callback registered directly on the spawned task it runs in
/// (join_state_base::park, used by stop_link), instead of a std::stop_callback on the
/// task's token: fire(self) runs once on abort.
struct abort_hook {
  void (*fire)(abort_hook* self) noexcept = nullptr;
};

/// Shared by a spawned task's top frame and its join_handle (reference counted: 2).
struct join_state_base {
  // waiter word values:
  //   0              task running, nobody waiting
  //   kDone (1)      task finished (result published)
  //   ptr            a coroutine (frame address) awaits the result
  //   ptr | kThread  a thread_waiter* (block_on) awaits the result
  //   kCancelled (5) an awaiter's wait was stopped before it published its frame
  static constexpr std::uintptr_t kDone = 1;
  static constexpr std::uintptr_t kThread = 2;
  static constexpr std::uintptr_t kCancelled = 5;

  std::atomic<std::uintptr_t> waiter{0};
  // References: the running task and the join_handle (count in the low bits), plus the
  // registry's while kRegistered is set (see runtime_core's registry).
  static constexpr std::uint32_t kRegistered = 0x100;
  std::atomic<std::uint32_t> refs{2};
  std::coroutine_handle<> frame{};
  runtime_core* runtime = nullptr;
  runtime_core* waiter_runtime = nullptr;  // where the awaiting coroutine runs
  // Registry links (touched only by the shard's worker, or by shutdown; see runtime_core).
  join_state_base* reg_prev = nullptr;
  join_state_base* reg_next = nullptr;
  unsigned reg_shard = 0;   // fixed at spawn
  std::exception_ptr error{};
  bool cancelled = false;   // destroyed by runtime shutdown before it finished
  bool observed = false;    // the result was taken through a join_handle
  bool aborted = false;     // finished after abort() was requested (its result is dropped)
  bool abortable = false;   // spawned with corio::abortable: its waits watch for abort()

  // Abort. abort_bits: kAbortRequested (set once, by request_abort), kHasSource (set
  // once, by the task, after it created `source`). `token` is the task's view of
  // `source`, touched only by the task. `parked` holds the abort_hook of the wait this
  // task is in (stop_link parks it there; at most one at a time, a second concurrent
  // wait uses the token), or kFiring while request_abort runs that hook.
  static constexpr std::uint8_t kAbortRequested = 1;
  static constexpr std::uint8_t kHasSource = 2;
  static constexpr std::uintptr_t kFiring = 1;
  std::atomic<std::uint8_t> abort_bits{0};
  std::atomic<std::uintptr_t> parked{0};
  std::stop_source source{std::nostopstate};
  std::stop_token token{};
  void (*free_self)(join_state_base*) noexcept = nullptr;

  /// Publishes completion and wakes the waiter. Called once, by the finishing worker
  /// (or by shutdown with cancelled = true).
  void complete(bool from_shutdown) noexcept;
  /// Drops the task's or the handle's reference.
  void release() noexcept;
  /// Drops the registry's reference (its owner worker, or shutdown).
  void drop_registry() noexcept;
  void destroy() noexcept;

  /// join_handle::abort: marks the task aborted, stops its token if it has one and wakes
  /// its parked join wait. Any thread; only the first call does anything.
  void request_abort() noexcept;
  /// True once abort was requested. Any thread.
  [[nodiscard]] bool abort_requested() const noexcept {
    // acquire: pairs with request_abort's read-modify-write.
    return (abort_bits.load(std::memory_order_acquire) & kAbortRequested) != 0;
  }
  /// The task's abort token, creating its stop source on first use. Only the task itself
  /// (its await chain runs one frame at a time) calls it.
  const std::stop_token* abort_token() noexcept;
  /// Registers `hook` to fire on abort. False if another wait holds the slot (then
  /// use abort_token()). If abort was already requested, the hook has fired when this
  /// returns true. The caller must unpark() before `hook` dies.
  bool park(abort_hook* hook) noexcept;
  /// Withdraws `hook` (parked by park), waiting for a firing on another thread to return.
  void unpark(abort_hook* hook) noexcept;
};

template <class T>
struct join_state : join_state_base {
  // Made by frame_allocate, aligned to __STDCPP_DEFAULT_NEW_ALIGNMENT__ (as task_promise).
  static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__,
                "corio: a spawned task's result type cannot be over-aligned: return it in a std::unique_ptr");
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

/// The stop a wait inside a task honours besides its own token: the token inherited from
/// a combinator or timeout, or (root non-null, token null) the abort of the spawned task
/// it runs in. stop_link parks on the latter directly; the conversion to a token pointer
/// (for code that needs a std::stop_token) creates the task's stop source.
struct inherited_stop {
  const std::stop_token* token = nullptr;
  join_state_base* root = nullptr;

  operator const std::stop_token*() const noexcept { return root != nullptr ? root->abort_token() : token; }
  [[nodiscard]] bool stop_requested() const noexcept {
    return root != nullptr ? root->abort_requested() : token != nullptr && token->stop_requested();
  }
};

/// Moves a finished root's value into its join state (before its frame is destroyed).
template <class T>
void store_root_value(join_state_base* root, T* value) noexcept {
  auto* st = static_cast<join_state<T>*>(root);
  ::new (static_cast<void*>(st->storage)) T(std::move(*value));
  st->has_value = true;
}

/// The final step of a spawned task (join_state.cpp): records `error` (if any), destroys
/// `frame` (suspended at its final suspend point), and publishes the result to the
/// handle, waking its waiter. Called once, on the worker that ran the task to its end.
void finish_root(std::coroutine_handle<> frame, join_state_base* root, std::exception_ptr error) noexcept;

}  // namespace corio::detail
