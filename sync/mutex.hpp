// corio::mutex: an asynchronous mutual-exclusion lock for coroutines.
//
// Concept: `auto g = co_await m.lock();` suspends the task (never the worker thread) until
// it owns the mutex and yields a mutex_guard that unlocks on destruction. The mutex is
// not tied to a thread: a task may lock on one worker and unlock on another.
// Thread-safety: every member may be called from any thread (off a worker, lock() blocks
// the calling thread instead of suspending).
// Cost: uncontended lock = one CAS, unlock = one CAS, no allocation. Contended: the
// waiter queue is guarded by a spin lock (a few pointer writes); unlock then hands the
// lock directly to the oldest waiter.
// Lifetime: unlock()'s last access to the mutex is the store that frees it, so a task
// that then takes it (try_lock) may unlock and destroy it at once (a last user).
// Fairness: strict FIFO. Once a task waits, the mutex is handed over, never released,
// so a newcomer cannot barge past the queue (no starvation; throughput under heavy
// contention is bounded by one reschedule per hand-off).
// Resumes on: a woken waiter is rescheduled, never resumed inline inside unlock(): onto
// the unlocking worker's LIFO slot when it is a worker of the waiter's runtime, else
// through the waiter's runtime's global queue.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <cassert>
#include <cstdint>
#include <stop_token>
#include <utility>

#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/sync/detail/wait_operation.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio {

class mutex;

/// Owns a locked corio::mutex; unlocks it on destruction. Move-only.
class [[nodiscard]] mutex_guard {
 public:
  mutex_guard() noexcept = default;
  explicit mutex_guard(mutex& m) noexcept : m_mutex(&m) {}  ///< adopts a held lock
  /// Takes over `o`'s lock; `o` owns nothing afterwards.
  mutex_guard(mutex_guard&& o) noexcept : m_mutex(std::exchange(o.m_mutex, nullptr)) {}
  /// Unlocks the mutex held so far (if any), then takes over `o`'s lock.
  mutex_guard& operator=(mutex_guard&& o) noexcept {
    if (this != &o) {
      unlock();
      m_mutex = std::exchange(o.m_mutex, nullptr);
    }
    return *this;
  }
  mutex_guard(const mutex_guard&) = delete;
  mutex_guard& operator=(const mutex_guard&) = delete;
  ~mutex_guard() { unlock(); }

  /// Unlocks now (no-op if not owning).
  void unlock() noexcept;
  /// Gives up ownership without unlocking; returns the mutex.
  mutex* release() noexcept { return std::exchange(m_mutex, nullptr); }
  /// True while the guard holds a lock.
  [[nodiscard]] bool owns_lock() const noexcept { return m_mutex != nullptr; }
  /// The mutex held, or nullptr.
  [[nodiscard]] mutex* get() const noexcept { return m_mutex; }

 private:
  mutex* m_mutex = nullptr;
};

namespace detail {

/// Awaiter of mutex::lock() (cancel_mode::cancellable, yields result<mutex_guard>) and
/// mutex::lock_uncancellable() (cancel_mode::uncancellable, yields a mutex_guard).
template <cancel_mode Mode>
class mutex_lock_operation : public wait_operation<mutex_lock_operation<Mode>> {
  using base = wait_operation<mutex_lock_operation<Mode>>;

 public:
  mutex_lock_operation(mutex& m, waiter_list& waiters, std::stop_token token) noexcept
      : base(waiters, std::move(token)), m_mutex(&m) {}
  mutex_lock_operation(mutex_lock_operation&& o) noexcept : base(std::move(o)), m_mutex(o.m_mutex) {}

  bool await_ready() noexcept;
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    return this->suspend(h, Mode);
  }
  [[nodiscard]] auto await_resume() noexcept {
    this->reset_callbacks();
    if constexpr (Mode == cancel_mode::cancellable) {
      if (this->status != wait_status::granted) {
        return result<mutex_guard>(unexpected(cancelled_error()));
      }
      return result<mutex_guard>(mutex_guard(*m_mutex));
    } else {
      return mutex_guard(*m_mutex);
    }
  }

  // under the waiter lock
  bool try_now(wake_batch& batch) noexcept;
  /// Under the waiter lock: try_now() may have marked the mutex kContended for a wait
  /// that then did not queue (its token was already stopped); undo that.
  void cancelled_before_queueing() noexcept;

 private:
  mutex* m_mutex;
};

}  // namespace detail

/// An asynchronous mutex for tasks: a waiting lock() suspends the task, not the thread;
/// see the header for hand-off, fairness and cancellation.
class mutex {
 public:
  mutex() noexcept = default;
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;
  /// Precondition: no task waits (debug: aborts with a message, except during runtime
  /// shutdown; release: the waiters are detached and never resumed, their frames are
  /// destroyed by their runtime's shutdown; see sync/waiter_list.cpp). Destroying
  /// a locked mutex is allowed.
  ~mutex() = default;

  /// Awaitable yielding result<mutex_guard>: the guard once the mutex is ours.
  /// Cancellation: `token`, or the awaiting task's inherited token (when_any, timeout),
  /// makes a waiting lock return std::errc::operation_canceled and lose its place in the
  /// queue; a lock handed over at the same moment is either returned or passed on, never
  /// lost. An already-free mutex is taken even if the token is stopped.
  /// A timed lock: `co_await corio::timeout(m.lock(), 10ms)` yields errc::timed_out
  /// if the mutex was not handed over in time (runtime/timeout.hpp).
  /// Errors: operation_canceled only. Resumes on: see the header comment.
  [[nodiscard]] detail::mutex_lock_operation<detail::cancel_mode::cancellable> lock(
      std::stop_token token = {}) noexcept {
    return {*this, m_waiters, std::move(token)};
  }

  /// Awaitable yielding a mutex_guard (not a result): not cancellable, it ignores the
  /// awaiting task's inherited token (when_any, timeout) and takes no token of its own,
  /// so it cannot fail; it waits until the mutex is handed over. condition_variable
  /// re-locks with it. Resumes on: see the header comment.
  [[nodiscard]] detail::mutex_lock_operation<detail::cancel_mode::uncancellable> lock_uncancellable() noexcept {
    return {*this, m_waiters, {}};
  }
  /// The former name of lock_uncancellable() ("scoped" elsewhere means "returns a guard",
  /// which lock() does too).
  [[deprecated("use lock_uncancellable()")]] [[nodiscard]] auto scoped_lock() noexcept {
    return lock_uncancellable();
  }

  /// Takes the mutex if it is free and nobody waits. One CAS.
  [[nodiscard]] bool try_lock() noexcept {
    std::uint32_t expected = kUnlocked;
    // acquire: pairs with the release CAS in unlock(); the previous owner's writes are
    // visible to us.
    return m_state.compare_exchange_strong(expected, kLocked, std::memory_order_acquire,
                                           std::memory_order_relaxed);
  }

  /// Takes the mutex if free; returns a guard that owns it, or an empty guard.
  [[nodiscard]] mutex_guard try_scoped_lock() noexcept { return try_lock() ? mutex_guard(*this) : mutex_guard(); }

  /// Releases the mutex, handing it to the oldest waiter if any.
  /// Precondition: the mutex is locked; not necessarily by this thread.
  /// Misuse: unlocking a free mutex aborts with a message in debug builds; release builds
  /// ignore it (no-op). (Unlocking a mutex someone else holds cannot be detected.)
  void unlock() noexcept {
    std::uint32_t expected = kLocked;
    // release: publishes our critical section to the next try_lock()'s acquire CAS.
    if (m_state.compare_exchange_strong(expected, kUnlocked, std::memory_order_release,
                                        std::memory_order_relaxed)) {
      return;
    }
    if (expected == kUnlocked) {
      assert(!"corio::mutex::unlock: the mutex is not locked");
      return;  // release builds: defined as a no-op
    }
    unlock_slow();
  }

  /// True while some task holds the mutex (a snapshot, for tests and diagnostics).
  [[nodiscard]] bool is_locked() const noexcept { return m_state.load(std::memory_order_relaxed) != kUnlocked; }

 private:
  template <detail::cancel_mode>
  friend class detail::mutex_lock_operation;

  // m_state values:
  //   kUnlocked (0)  free
  //   kLocked (1)    held, no waiter
  //   kContended (2) held, and the waiter list is (being made) non-empty; only changed
  //                  from or to this value under m_lock, so a non-empty list implies it.
  static constexpr std::uint32_t kUnlocked = 0;
  static constexpr std::uint32_t kLocked = 1;
  static constexpr std::uint32_t kContended = 2;

  /// Held by a task on another worker and nobody queued: critical sections are usually
  /// a few instructions, so spinning briefly is cheaper than a suspend + reschedule.
  /// Gives up as soon as a waiter is queued (FIFO: we would queue behind it anyway).
  bool spin_then_try_lock() noexcept {
    for (int i = 0; i < kSpins; ++i) {
      // relaxed: only a hint; try_lock()'s CAS is the acquire.
      std::uint32_t s = m_state.load(std::memory_order_relaxed);
      if (s == kUnlocked) {
        if (try_lock()) {
          return true;
        }
      } else if (s == kContended) {
        return false;
      }
      port::cpu_relax();
    }
    return false;
  }
  static constexpr int kSpins = 64;

  void unlock_slow() noexcept;
  bool try_lock_or_mark_contended() noexcept;
  void uncontend_if_no_waiter() noexcept;
  static void on_unlinked(void* self, detail::wake_batch& batch) noexcept;

  std::atomic<std::uint32_t> m_state{kUnlocked};
  detail::sync_spin_lock m_lock;
  detail::waiter_list m_waiters{m_lock, this, &mutex::on_unlinked};
};

inline void mutex_guard::unlock() noexcept {
  if (m_mutex != nullptr) {
    std::exchange(m_mutex, nullptr)->unlock();
  }
}

namespace detail {

template <cancel_mode Mode>
bool mutex_lock_operation<Mode>::await_ready() noexcept {
  if (m_mutex->try_lock() || m_mutex->spin_then_try_lock()) {
    this->status = wait_status::granted;
    return !this->budget_spent();
  }
  return false;
}

template <cancel_mode Mode>
bool mutex_lock_operation<Mode>::try_now(wake_batch&) noexcept {
  if (m_mutex->try_lock_or_mark_contended()) {
    this->status = wait_status::granted;
    return true;
  }
  return false;
}

template <cancel_mode Mode>
void mutex_lock_operation<Mode>::cancelled_before_queueing() noexcept {
  m_mutex->uncontend_if_no_waiter();
}

}  // namespace detail

}  // namespace corio
