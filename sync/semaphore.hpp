// corio::semaphore: an asynchronous counting semaphore.
//
// Concept: a count of permits. `co_await s.acquire(n)` suspends the task until n permits
// can be taken; `release(n)` returns them. semaphore(1) is a binary semaphore; the
// tutorial's Semaphore(3) admits at most three tasks at a time.
// Thread-safety: every member may be called from any thread (off a worker, acquire()
// blocks the calling thread instead of suspending).
// Cost: every operation takes the semaphore's spin lock once (a few pointer writes); no
// allocation.
// Fairness: strict FIFO. A waiter for n permits blocks those behind it until n are
// free (no barging: try_acquire fails while anyone waits), so large requests cannot
// starve.
// Resumes on: a woken waiter is rescheduled, never resumed inline inside release(): onto
// the releasing worker's LIFO slot when it is a worker of the waiter's runtime, else
// through the waiter's runtime's global queue.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stop_token>
#include <system_error>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/sync/detail/wait_operation.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio {

class semaphore;

/// `count()` permits taken from a semaphore; released when destroyed (so an acquire
/// whose result is dropped — e.g. the losing side of when_any/timeout — gives them back).
/// Move-only.
class [[nodiscard]] semaphore_permit {
 public:
  semaphore_permit() noexcept = default;
  semaphore_permit(semaphore& s, std::size_t n) noexcept : m_sem(&s), m_count(n) {}  ///< adopts
  /// Takes over `o`'s permits; `o` holds none afterwards.
  semaphore_permit(semaphore_permit&& o) noexcept
      : m_sem(std::exchange(o.m_sem, nullptr)), m_count(std::exchange(o.m_count, 0)) {}
  /// Returns the permits held so far (if any), then takes over `o`'s.
  semaphore_permit& operator=(semaphore_permit&& o) noexcept {
    if (this != &o) {
      release();
      m_sem = std::exchange(o.m_sem, nullptr);
      m_count = std::exchange(o.m_count, 0);
    }
    return *this;
  }
  semaphore_permit(const semaphore_permit&) = delete;
  semaphore_permit& operator=(const semaphore_permit&) = delete;
  ~semaphore_permit() { release(); }

  /// Returns the permits now (no-op if empty).
  void release() noexcept;
  /// Keeps the permits taken (the caller will call semaphore::release itself); returns
  /// how many.
  std::size_t forget() noexcept {
    m_sem = nullptr;
    return std::exchange(m_count, 0);
  }
  /// How many permits this holds.
  [[nodiscard]] std::size_t count() const noexcept { return m_count; }
  /// True while this holds permits of a semaphore.
  [[nodiscard]] bool owns() const noexcept { return m_sem != nullptr; }

 private:
  semaphore* m_sem = nullptr;
  std::size_t m_count = 0;
};

namespace detail {

class semaphore_acquire_operation : public wait_operation<semaphore_acquire_operation> {
 public:
  semaphore_acquire_operation(semaphore& s, waiter_list& waiters, std::size_t n, std::stop_token token) noexcept
      : wait_operation(waiters, std::move(token)), m_sem(&s) {
    amount = n;
  }
  semaphore_acquire_operation(semaphore_acquire_operation&& o) noexcept
      : wait_operation(std::move(o)), m_sem(o.m_sem) {}

  bool await_ready() noexcept;
  [[nodiscard]] result<semaphore_permit> await_resume() noexcept {
    reset_callbacks();
    if (m_invalid) {
      return unexpected(std::make_error_code(std::errc::invalid_argument));
    }
    if (status != wait_status::granted) {
      return unexpected(cancelled_error());
    }
    return semaphore_permit(*m_sem, amount);
  }

  bool try_now(wake_batch& batch) noexcept;

 private:
  semaphore* m_sem;
  bool m_invalid = false;  // more permits asked than the semaphore can ever hold
};

}  // namespace detail

/// An asynchronous counting semaphore for tasks (and threads); see the header.
class semaphore {
 public:
  /// The default `max`: no limit on the permits held.
  static constexpr std::size_t no_max = std::numeric_limits<std::size_t>::max();

  /// `initial` permits; `max` (optional) is the most permits it may ever hold.
  /// Misuse: release() past `max` aborts with a message in debug builds; release builds
  /// clamp the count to `max`. acquire(n) / try_acquire(n) with n > max fail (see them).
  explicit semaphore(std::size_t initial, std::size_t max = no_max) noexcept : m_count(initial), m_max(max) {
    assert(initial <= max && "corio::semaphore: initial count above the declared maximum");
  }
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;
  /// Precondition: nobody waits (see mutex::~mutex).
  ~semaphore() = default;

  /// Awaitable yielding result<semaphore_permit> once `n` permits are taken; the permit
  /// returns them when destroyed (or call permit.forget() and release() by hand).
  /// Cancellation: `token` or the inherited token ends a waiting acquire with
  /// operation_canceled; it takes nothing and loses its place (waiters behind it may then
  /// be served). Errors: operation_canceled; std::errc::invalid_argument at once, without
  /// queueing, when `n` exceeds the semaphore's `max` (it could never be satisfied, and
  /// as the FIFO head it would block every waiter behind it forever).
  /// Resumes on: see the header.
  [[nodiscard]] detail::semaphore_acquire_operation acquire(std::size_t n = 1, std::stop_token token = {}) noexcept {
    return {*this, m_waiters, n, std::move(token)};
  }

  /// Takes `n` permits if available and nobody waits (false for n > max).
  [[nodiscard]] bool try_acquire(std::size_t n = 1) noexcept {
    m_lock.lock();
    bool ok = take_locked(n);
    m_lock.unlock();
    return ok;
  }

  /// Returns `n` permits and wakes the waiters they satisfy, oldest first.
  /// Precondition: the count stays <= max (debug: abort with a message; release builds
  /// clamp the count to max).
  void release(std::size_t n = 1) noexcept;

  /// Permits available now (a snapshot).
  [[nodiscard]] std::size_t available() noexcept {
    m_lock.lock();
    std::size_t c = m_count;
    m_lock.unlock();
    return c;
  }

 private:
  friend class detail::semaphore_acquire_operation;

  bool take_locked(std::size_t n) noexcept {
    if (m_waiters.empty() && m_count >= n) {
      m_count -= n;
      return true;
    }
    return false;
  }
  void grant_locked(detail::wake_batch& batch) noexcept;
  static void on_unlinked(void* self, detail::wake_batch& batch) noexcept {
    static_cast<semaphore*>(self)->grant_locked(batch);
  }

  detail::sync_spin_lock m_lock;
  std::size_t m_count;  // guarded by m_lock
  const std::size_t m_max;
  detail::waiter_list m_waiters{m_lock, this, &semaphore::on_unlinked};
};

inline void semaphore_permit::release() noexcept {
  if (m_sem != nullptr) {
    std::exchange(m_sem, nullptr)->release(std::exchange(m_count, 0));
  }
}

namespace detail {
inline bool semaphore_acquire_operation::await_ready() noexcept {
  if (amount > m_sem->m_max) {
    m_invalid = true;  // fail fast: never queue a request that can never be granted
    return true;
  }
  return ready_under_lock();
}
inline bool semaphore_acquire_operation::try_now(wake_batch&) noexcept {
  if (m_sem->take_locked(amount)) {
    status = wait_status::granted;
    return true;
  }
  return false;
}
}  // namespace detail

}  // namespace corio
