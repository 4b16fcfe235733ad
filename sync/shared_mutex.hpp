// corio::shared_mutex: an asynchronous readers/writer lock.
//
// Concept: many tasks may hold it shared (`co_await m.lock_shared()`), or one task
// exclusively (`co_await m.lock()`); each yields a guard that unlocks on destruction.
// Policy: writer preference with phase alternation. A new reader waits as soon as a
// writer waits (so a stream of readers cannot starve writers); when a writer unlocks,
// every reader waiting at that moment is admitted together before the next writer (so a
// stream of writers cannot starve readers). Writers are served FIFO among themselves.
// Thread-safety: every member from any thread (off a worker, locking blocks the thread).
// Cost: every lock/unlock takes the internal spin lock once (a few pointer writes); no
// allocation.
// Resumes on: woken waiters are rescheduled, never resumed inline inside unlock*():
// onto the unlocking worker's LIFO slot (others behind it in the local queue) when it is
// a worker of their runtime, else through their runtime's global queue.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cassert>
#include <cstddef>
#include <stop_token>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/sync/detail/wait_operation.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio {

class shared_mutex;

/// How a shared_mutex is held: by one writer, or by any number of readers.
enum class lock_kind {
  exclusive,  ///< one owner (lock(), write_guard)
  shared,     ///< many owners at once (lock_shared(), read_guard)
};

/// Owns shared_mutex in `Kind` mode; unlocks on destruction. Spelled read_guard and
/// write_guard below.
template <lock_kind Kind>
class [[nodiscard]] shared_mutex_guard {
 public:
  shared_mutex_guard() noexcept = default;
  explicit shared_mutex_guard(shared_mutex& m) noexcept : m_mutex(&m) {}  ///< adopts
  /// Takes over `o`'s lock; `o` owns nothing afterwards.
  shared_mutex_guard(shared_mutex_guard&& o) noexcept : m_mutex(std::exchange(o.m_mutex, nullptr)) {}
  /// Unlocks what was held so far (if anything), then takes over `o`'s lock.
  shared_mutex_guard& operator=(shared_mutex_guard&& o) noexcept {
    if (this != &o) {
      unlock();
      m_mutex = std::exchange(o.m_mutex, nullptr);
    }
    return *this;
  }
  shared_mutex_guard(const shared_mutex_guard&) = delete;
  shared_mutex_guard& operator=(const shared_mutex_guard&) = delete;
  ~shared_mutex_guard() { unlock(); }
  /// Unlocks now (no-op if not owning).
  void unlock() noexcept;
  /// True while the guard holds a lock.
  [[nodiscard]] bool owns_lock() const noexcept { return m_mutex != nullptr; }

 private:
  shared_mutex* m_mutex = nullptr;
};

/// Shared (reader) ownership of a shared_mutex, from lock_shared().
using read_guard = shared_mutex_guard<lock_kind::shared>;
/// Exclusive (writer) ownership of a shared_mutex, from lock().
using write_guard = shared_mutex_guard<lock_kind::exclusive>;

namespace detail {

/// Awaiter of shared_mutex::lock() (lock_kind::exclusive) and lock_shared() (shared).
template <lock_kind Kind>
class shared_mutex_lock_operation : public wait_operation<shared_mutex_lock_operation<Kind>> {
  using base = wait_operation<shared_mutex_lock_operation<Kind>>;

 public:
  shared_mutex_lock_operation(shared_mutex& m, waiter_list& waiters, std::stop_token token) noexcept
      : base(waiters, std::move(token)), m_mutex(&m) {}
  shared_mutex_lock_operation(shared_mutex_lock_operation&& o) noexcept : base(std::move(o)), m_mutex(o.m_mutex) {}

  [[nodiscard]] result<shared_mutex_guard<Kind>> await_resume() noexcept {
    this->reset_callbacks();
    if (this->status != wait_status::granted) {
      return unexpected(cancelled_error());
    }
    return shared_mutex_guard<Kind>(*m_mutex);
  }
  bool try_now(wake_batch& batch) noexcept;

 private:
  shared_mutex* m_mutex;
};

}  // namespace detail

/// An asynchronous reader-writer lock with writer preference; see the header.
class shared_mutex {
 public:
  shared_mutex() noexcept = default;
  shared_mutex(const shared_mutex&) = delete;
  shared_mutex& operator=(const shared_mutex&) = delete;
  /// Precondition: nobody waits (see mutex::~mutex).
  ~shared_mutex() = default;

  /// Awaitable yielding result<write_guard> (exclusive ownership).
  /// Cancellation: operation_canceled; the place in the queue is lost, and readers held
  /// back only by this writer are admitted.
  [[nodiscard]] detail::shared_mutex_lock_operation<lock_kind::exclusive> lock(std::stop_token token = {}) noexcept {
    return {*this, m_writers, std::move(token)};
  }
  /// Awaitable yielding result<read_guard> (shared ownership). Cancellation: as lock().
  [[nodiscard]] detail::shared_mutex_lock_operation<lock_kind::shared> lock_shared(
      std::stop_token token = {}) noexcept {
    return {*this, m_readers, std::move(token)};
  }

  /// Takes exclusive ownership if that needs no wait; the caller then adopts it with
  /// write_guard(m).
  [[nodiscard]] bool try_lock() noexcept {
    m_lock.lock();
    bool ok = try_lock_locked();
    m_lock.unlock();
    return ok;
  }
  /// Takes shared ownership if that needs no wait (no writer holds or waits); the caller
  /// then adopts it with read_guard(m).
  [[nodiscard]] bool try_lock_shared() noexcept {
    m_lock.lock();
    bool ok = try_lock_shared_locked();
    m_lock.unlock();
    return ok;
  }
  /// Precondition: held exclusively. Misuse (not held exclusively): debug builds abort
  /// with a message; release builds ignore the call (no-op).
  void unlock() noexcept;
  /// Precondition: held shared. Misuse (no reader holds it): debug builds abort with a
  /// message; release builds ignore the call (no-op; the reader count never wraps).
  void unlock_shared() noexcept;

 private:
  template <lock_kind>
  friend class detail::shared_mutex_lock_operation;

  bool try_lock_locked() noexcept {
    if (!m_writer && m_active_readers == 0 && m_writers.empty()) {
      m_writer = true;
      return true;
    }
    return false;
  }
  bool try_lock_shared_locked() noexcept {
    if (!m_writer && m_writers.empty()) {
      ++m_active_readers;
      return true;
    }
    return false;
  }
  void dispatch_locked(detail::wake_batch& batch, bool readers_first) noexcept;
  static void on_unlinked(void* self, detail::wake_batch& batch) noexcept {
    static_cast<shared_mutex*>(self)->dispatch_locked(batch, false);
  }

  detail::sync_spin_lock m_lock;
  std::size_t m_active_readers = 0;  // guarded by m_lock
  bool m_writer = false;             // guarded by m_lock
  detail::waiter_list m_readers{m_lock, this, &shared_mutex::on_unlinked};
  detail::waiter_list m_writers{m_lock, this, &shared_mutex::on_unlinked};
};

template <lock_kind Kind>
void shared_mutex_guard<Kind>::unlock() noexcept {
  if (m_mutex != nullptr) {
    if constexpr (Kind == lock_kind::shared) {
      std::exchange(m_mutex, nullptr)->unlock_shared();
    } else {
      std::exchange(m_mutex, nullptr)->unlock();
    }
  }
}

namespace detail {
template <lock_kind Kind>
bool shared_mutex_lock_operation<Kind>::try_now(wake_batch&) noexcept {
  bool ok = Kind == lock_kind::shared ? m_mutex->try_lock_shared_locked() : m_mutex->try_lock_locked();
  if (ok) {
    this->status = wait_status::granted;
  }
  return ok;
}
}  // namespace detail

}  // namespace corio
