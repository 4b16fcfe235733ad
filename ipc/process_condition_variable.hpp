// corio::ipc::process_condition_variable: a condition variable whose whole state is one
// 32-bit word in memory that several processes map, used with a process_mutex.
//
// Concept: the tutorial's multiprocessing.Condition. `co_await cv.wait(guard, pred)`
// releases the process_mutex held by `guard`, suspends the task (never its worker) until
// notified, re-locks and re-checks `pred`, until it holds. notify_one() / notify_all()
// wake waiters in any process. Built in place by construct(), found again by attach()
// (see process_mutex.hpp for placement and why these live in ipc/).
// State: 8 bytes, 4-aligned: a layout word and the futex word (sequence * 2 + waiters
// bit). No pointers.
// Waiting: under the mutex the waiter sets the waiters bit and reads the word, then
// releases the mutex and awaits the word with that value (IORING_OP_FUTEX_WAIT, shared;
// the blocking pool before Linux 6.7). A notify changes the word before it wakes, in one
// FUTEX_WAKE_OP syscall (notify_one: a second one when the first woke nobody, see the
// .cpp), so a notify that comes after the waiter read the word is never lost, and a
// notifier killed at any point either notified or did not. notify_*() with no waiter
// registered is one load. Spurious wake-ups happen (use the predicate forms).
// Death: a waiter killed while waiting leaves nothing behind: the predicate is the
// caller's data under the mutex, untouched; notify_all() still wakes every live waiter.
// A notify_one() whose woken waiter is killed before it re-checks is consumed by it (as
// if the waiter had returned and died). A waiter that re-locks a mutex whose holder died
// gets owner_dead and returns without the lock.
// Thread forms: wait_blocking(guard[, pred], limit) for plain threads and runtime-less
// children, with an optional time limit.
// Errors (result<T>): operation_canceled (timed_out under corio::timeout), or
// corio::errc::timed_out (wait_blocking's limit passed), or the OS error of a futex wait
// the kernel refuses (ENOSYS or EPERM under a seccomp filter, EFAULT): the wait ends, the
// mutex is re-locked first (the guard owns it again); owner_dead: the re-lock
// found the mutex abandoned (the guard is empty); invalid_argument for a guard that owns
// no lock; operation_not_permitted for a guard inherited through fork (the lock is the
// parent's: waiting would release nothing); plus the placement errors of process_mutex.hpp.
// Thread-safety: every member from any thread or process; a guard belongs to one owner.
// Cost: notify without waiters: one load; with waiters: one syscall (notify_one: two
// when the first found nobody asleep, a waiter that gave up having left the bit set).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stop_token>
#include <utility>

#include <corio/ipc/detail/shared_word.hpp>
#include <corio/ipc/memory_map.hpp>
#include <corio/ipc/process_mutex.hpp>
#include <corio/ipc/shared_memory.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc {

namespace detail {

struct condition_state {
  shared_word magic{0};
  shared_word word{0};  ///< sequence * 2 + waiters bit
};

}  // namespace detail

/// A condition variable in shared memory, used with a process_mutex by tasks and
/// threads of several processes; see the header.
class process_condition_variable {
 public:
  /// Bytes the shared object takes in the mapping (reserve this much at its offset).
  static constexpr std::size_t storage_size = sizeof(detail::condition_state);
  /// The alignment its offset in the mapping needs.
  static constexpr std::size_t storage_alignment = alignof(detail::condition_state);

  process_condition_variable() noexcept = default;

  /// Builds a condition variable at `offset` of `region` (overwriting what is there:
  /// never while another process uses an object at that place).
  [[nodiscard]] static result<process_condition_variable> construct(std::span<std::byte> region,
                                                                    std::size_t offset = 0) noexcept;
  /// construct() in a memory map (a file, anonymous or shared memory).
  [[nodiscard]] static result<process_condition_variable> construct(memory_map& map, std::size_t offset = 0) noexcept;
  /// construct() in a named shared-memory object.
  [[nodiscard]] static result<process_condition_variable> construct(shared_memory& shm,
                                                                    std::size_t offset = 0) noexcept {
    return construct(shm.map(), offset);
  }
  /// Recognises the condition variable another process (or this one) built at `offset`.
  [[nodiscard]] static result<process_condition_variable> attach(std::span<std::byte> region,
                                                                 std::size_t offset = 0) noexcept;
  /// attach() in a memory map.
  [[nodiscard]] static result<process_condition_variable> attach(memory_map& map, std::size_t offset = 0) noexcept;
  /// attach() in a named shared-memory object.
  [[nodiscard]] static result<process_condition_variable> attach(shared_memory& shm, std::size_t offset = 0) noexcept {
    return attach(shm.map(), offset);
  }

  /// False for an empty handle.
  [[nodiscard]] bool valid() const noexcept { return m_state != nullptr; }

  /// Releases `guard`'s mutex, waits for a notify (or a spurious wake-up), re-locks.
  /// Precondition: guard.owns_lock(); `guard` outlives the await. See the header for
  /// the errors and what the guard holds after each.
  [[nodiscard]] task<result<void>> wait(process_mutex_guard& guard, std::stop_token token = {}) const;
  /// Waits until pred() holds (checked under the mutex). Returns at once if it does.
  template <class Pred>
  [[nodiscard]] task<result<void>> wait(process_mutex_guard& guard, Pred pred, std::stop_token token = {}) const {
    while (!pred()) {
      auto woke = co_await wait(guard, token);
      if (!woke) {
        co_return woke;
      }
    }
    co_return result<void>{};
  }

  /// Thread forms, for plain threads and child processes that run no runtime: block the
  /// calling thread (never call them on a worker). Releases `guard`'s mutex, sleeps until
  /// a notify or for at most `limit` (saturating: hours::max() is no limit; the default
  /// never gives up), then re-takes the mutex, without a limit, whatever ended the wait:
  /// on return the guard holds the mutex again (as after std::condition_variable::
  /// wait_for), except after owner_dead. The limit is one deadline taken at the call.
  /// The wait ends (success) once any notify_one() or notify_all() has changed the word
  /// since this waiter registered, even one that woke another waiter (re-check the
  /// predicate); signals (EINTR) and wake-ups that find the word unchanged neither end it
  /// early nor extend it. Errors: corio::errc::timed_out (no notify came before the
  /// limit; the mutex is held again), the OS error of a futex wait the kernel refuses
  /// (ENOSYS or EPERM under a seccomp filter, EFAULT: returned, not retried, with the
  /// mutex held again, as the task form returns it), owner_dead (the re-lock found the
  /// mutex abandoned: the guard is empty), invalid_argument and operation_not_permitted
  /// (see the header).
  /// Thread-safety: any thread, with its own guard. Cost: a FUTEX_WAIT syscall, and the
  /// re-lock (as process_mutex::lock_blocking).
  [[nodiscard]] result<void> wait_blocking(process_mutex_guard& guard,
                                           saturating_duration limit = clock::duration::max()) const noexcept;
  /// wait_blocking() until pred() holds (checked under the mutex; returns at once if it
  /// does). `limit` is one deadline for the whole wait, not one per wake-up: once it has
  /// passed, pred() is checked a last time under the re-taken mutex, and timed_out is
  /// returned only if it still does not hold (the guard holds the mutex either way); a
  /// false pred() after the deadline returns timed_out without waiting again.
  template <class Pred>
    requires std::predicate<Pred&>
  [[nodiscard]] result<void> wait_blocking(process_mutex_guard& guard, Pred pred,
                                           saturating_duration limit = clock::duration::max()) const {
    const clock::time_point deadline = deadline_after(limit.get());
    while (!pred()) {
      if (detail::deadline_passed(deadline)) {
        return unexpected(make_error_code(errc::timed_out));
      }
      if (auto woke = wait_blocking_until(guard, deadline); !woke) {
        if (woke.error() == errc::timed_out && pred()) {
          return {};
        }
        return woke;
      }
    }
    return {};
  }

  /// Wakes one waiter (the oldest the kernel holds), if any.
  void notify_one() const noexcept;
  /// Wakes every waiter.
  void notify_all() const noexcept;

 private:
  explicit process_condition_variable(detail::condition_state* s) noexcept : m_state(s) {}

  /// wait_blocking() until `deadline` (time_point::max(): no limit).
  result<void> wait_blocking_until(process_mutex_guard& guard, clock::time_point deadline) const noexcept;
  /// Under the mutex: registers a waiter (sets the waiters bit); the value to sleep on.
  std::uint32_t prepare_wait() const noexcept;

  detail::condition_state* m_state = nullptr;
};

}  // namespace corio::ipc
