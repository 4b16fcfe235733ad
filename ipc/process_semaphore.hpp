// corio::ipc::process_semaphore: a counting semaphore whose whole state is one 32-bit
// word in memory that several processes map.
//
// Concept: the tutorial's multiprocessing.Semaphore / BoundedSemaphore. construct() builds
// it in place at an offset of a shared mapping with an initial count and a maximum;
// attach() recognises it from another process (see process_mutex.hpp for placement and
// why these live in ipc/). `co_await s.acquire()` takes one unit, suspending the task
// (never its worker) while the count is zero; release(n) adds n units and wakes up to n
// waiters in any process.
// State: 16 bytes, 4-aligned: a layout word, the futex word (count * 2 + waiters bit) and
// the maximum. No pointers.
// Waiting: a waiter sets the waiters bit while the count is zero and awaits the word
// (IORING_OP_FUTEX_WAIT, shared; the blocking pool before Linux 6.7). release() is one
// CAS when nobody waits; when the bit is set it is one FUTEX_WAKE_OP syscall that adds
// the units and wakes up to n sleepers atomically, so a releaser killed at any point
// either released (and woke) or did not. The bit stays set while sleepers may remain; a
// release that wakes fewer than it could drops it with a second FUTEX_WAKE_OP, which
// also wakes whoever queued since (one syscall more, once per stale bit).
// Death: a waiter killed while waiting leaves nothing behind (the kernel drops its
// futex wait; the count is untouched). A waiter killed in the instant between being
// woken and retrying takes that wake-up with it: the unit stays in the count (nothing is
// lost) and the next acquire takes it. A process killed while holding units does not
// give them back (a semaphore has no owner: as with POSIX semaphores; use a
// process_mutex where holders must be tracked).
// Fairness: the kernel wakes sleepers in FIFO order, but a woken waiter competes with
// newcomers for the unit.
// Limits: the maximum is at most max_count (2^30 - 1). release() beyond the maximum is
// refused (value_too_large) by a check against the count it read: concurrent releases
// near the maximum may overshoot it by their sum.
// Thread forms: acquire_blocking(limit) for plain threads and runtime-less children,
// with an optional time limit (corio::errc::timed_out, nothing taken).
// Errors (result<T>): operation_canceled (timed_out under corio::timeout),
// corio::errc::timed_out (acquire_blocking's limit passed), value_too_large,
// invalid_argument (release(0) is fine; a bad construct), plus the placement errors of
// process_mutex.hpp.
// Thread-safety: every member from any thread or process.
// Cost: acquire and release without waiting are one CAS each on the shared word.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>

#include <corio/ipc/detail/shared_word.hpp>
#include <corio/ipc/memory_map.hpp>
#include <corio/ipc/shared_memory.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc {

namespace detail {

struct semaphore_state {
  shared_word magic{0};
  shared_word word{0};  ///< count * 2 + waiters bit
  std::uint32_t max = 0;
  std::uint32_t reserved = 0;
};

/// The count word protocol, shared with process_event (an auto-reset event is a
/// semaphore whose maximum is 1). See process_semaphore.cpp.
bool count_try_take(shared_word& word) noexcept;
task<result<void>> count_take_slow(shared_word& word, std::stop_token token);
/// Takes a unit, blocking the thread until `deadline` (time_point::max(): never gives
/// up); corio::errc::timed_out with nothing taken once it passed.
result<void> count_take_blocking(shared_word& word, clock::time_point deadline) noexcept;

}  // namespace detail

/// A counting semaphore in shared memory for tasks and threads of several processes;
/// see the header.
class process_semaphore {
 public:
  /// Bytes the shared object takes in the mapping (reserve this much at its offset).
  static constexpr std::size_t storage_size = sizeof(detail::semaphore_state);
  /// The alignment its offset in the mapping needs.
  static constexpr std::size_t storage_alignment = alignof(detail::semaphore_state);
  /// The largest count a semaphore can hold.
  static constexpr std::uint32_t max_count = (1u << 30) - 1;

  process_semaphore() noexcept = default;

  /// Builds a semaphore holding `initial` units (at most `maximum`, at most max_count).
  [[nodiscard]] static result<process_semaphore> construct(std::span<std::byte> region, std::size_t offset,
                                                           std::uint32_t initial,
                                                           std::uint32_t maximum = max_count) noexcept;
  /// construct() in a memory map (a file, anonymous or shared memory).
  [[nodiscard]] static result<process_semaphore> construct(memory_map& map, std::size_t offset, std::uint32_t initial,
                                                           std::uint32_t maximum = max_count) noexcept;
  /// construct() in a named shared-memory object.
  [[nodiscard]] static result<process_semaphore> construct(shared_memory& shm, std::size_t offset,
                                                           std::uint32_t initial,
                                                           std::uint32_t maximum = max_count) noexcept {
    return construct(shm.map(), offset, initial, maximum);
  }
  /// Recognises the semaphore another process (or this one) built at `offset`.
  [[nodiscard]] static result<process_semaphore> attach(std::span<std::byte> region, std::size_t offset = 0) noexcept;
  /// attach() in a memory map.
  [[nodiscard]] static result<process_semaphore> attach(memory_map& map, std::size_t offset = 0) noexcept;
  /// attach() in a named shared-memory object.
  [[nodiscard]] static result<process_semaphore> attach(shared_memory& shm, std::size_t offset = 0) noexcept {
    return attach(shm.map(), offset);
  }

  /// False for an empty handle.
  [[nodiscard]] bool valid() const noexcept { return m_state != nullptr; }

  /// The awaitable operation of acquire() (an implementation detail).
  struct acquire_op {
    ///@{
    /// Used by detail::fast_or_wait: the awaited result type, what the operation works on,
    /// one attempt without waiting, and the waiting path.
    using value_type = result<void>;
    detail::semaphore_state* state;
    std::optional<value_type> try_now() noexcept;
    task<value_type> wait_slow(std::stop_token token) const;
    ///@}
  };

  /// Awaitable yielding result<void> once a unit is ours. Cancellation: `token` or the
  /// inherited one (operation_canceled; timed_out under corio::timeout); a unit that is
  /// there is taken even if the token is stopped, and a wake-up that raced the stop is
  /// never lost. Precondition: valid(); the mapping outlives the await.
  [[nodiscard]] detail::fast_or_wait<acquire_op> acquire(std::stop_token token = {}) const noexcept {
    return {acquire_op{m_state}, std::move(token)};
  }
  /// Takes a unit if there is one.
  [[nodiscard]] bool try_acquire() const noexcept;
  /// Thread form of acquire(), for plain threads and child processes that run no
  /// runtime: blocks the calling thread (never call it on a worker) until a unit is
  /// ours, for at most `limit` (saturating: hours::max() is no limit; the default never
  /// gives up; zero takes a unit that is there and otherwise fails at once). The limit
  /// is one deadline taken at the call: spurious wake-ups and signals (EINTR) neither
  /// end the wait early nor extend it. Errors: corio::errc::timed_out (the limit passed
  /// with no unit taken: the count is unchanged by this call), and the OS error of a
  /// futex wait the kernel refuses (ENOSYS or EPERM under a seccomp filter, EFAULT:
  /// returned, not retried; nothing taken). Thread-safety: any thread.
  /// Cost: as try_acquire() when a unit is there; otherwise a FUTEX_WAIT syscall per
  /// wake-up (plus a clock read per pass when limited).
  [[nodiscard]] result<void> acquire_blocking(saturating_duration limit = clock::duration::max()) const noexcept;
  /// Adds `n` units, waking up to `n` waiters. Errors: value_too_large past the maximum
  /// (nothing is added then).
  result<void> release(std::uint32_t n = 1) const noexcept;

  /// A snapshot of the count.
  [[nodiscard]] std::uint32_t value() const noexcept;
  /// The maximum it was built with.
  [[nodiscard]] std::uint32_t maximum() const noexcept { return m_state->max; }

 private:
  explicit process_semaphore(detail::semaphore_state* s) noexcept : m_state(s) {}

  detail::semaphore_state* m_state = nullptr;
};

}  // namespace corio::ipc
