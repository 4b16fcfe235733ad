// corio::ipc::process_mutex: a mutex whose whole state lives in memory that several
// processes map, and that survives the death of its holder.
//
// Concept: the tutorial's multiprocessing.Lock. construct() builds one in place at an
// offset of a shared mapping (a shared_memory, a memory_map of a file, or an anonymous
// MAP_SHARED mapping inherited by fork); attach() recognises it from another process —
// or from garbage, or from another type, which are errors, not undefined behaviour.
// `auto g = co_await m.lock();` suspends the task (never its worker) until this process
// owns the mutex and yields a process_mutex_guard that unlocks on destruction.
// Why ipc/ and not sync/: these objects are defined by their shared-memory layout and by
// how processes find and outlive each other (placement, layout word, owner death), which
// is the ipc/ side of corio; sync/'s primitives are in-process waiter lists. The two
// families share no code.
// State: 24 bytes, 8-aligned (storage_size / storage_alignment): a layout word and a
// 32-bit futex word with a robust-list node beside it. No pointers that another process
// reads (the node is scratch space of the owning process); the object may sit at a
// different address in every process.
// Waiting: a contended lock spins briefly, then sets the word's waiters bit and awaits it
// with IORING_OP_FUTEX_WAIT (shared futex) through the worker's ring; an unlock that
// sees the bit wakes one waiter (FUTEX_WAKE, from any process); one that woke nobody
// (often the last of a contended run: a woken waiter relocks with the bit set) clears
// the bit with a second syscall (FUTEX_WAKE_OP, which also wakes whoever queued since).
// Before Linux 6.7 the wait runs on the blocking pool (ipc/detail/shared_word.hpp: one
// pool thread per waiting task). lock_blocking() is for plain threads and child
// processes that run no runtime; it takes an optional time limit (timed_out).
// Owner death: ownership belongs to the process (any task or thread of it may unlock). A
// process that dies holding the mutex (kill -9 included) is reported by the kernel
// itself, at its death, through the robust futex list of a per-process sentinel thread
// (ipc/detail/robust_owner.hpp): the word is marked owner-died and a waiter woken, so
// every waiting or later lock() returns std::errc::owner_dead at once — bounded by the
// kernel's exit path, no polling. The mutex stays *abandoned* (every lock() fails with
// owner_dead) until one process takes it with recover(), repairs the data it guards,
// calls guard.mark_consistent() and unlocks; unlocking without mark_consistent() leaves
// it abandoned for the next one to try. A process that dies while recovering leaves it
// abandoned too.
// Guarantee and its limits: death is detected for every cause of process exit; all
// users must share one pid namespace; at most 2048 locks held at once per process are
// covered (the kernel's robust-list walk limit); a thread that acquires the word after
// SIGKILL reached its process but after the kernel walked the sentinel's list (the
// kernel kills threads one by one; a window of microseconds) is not reported; a waiter
// killed in the instant between being woken and retrying takes that wake-up with it
// (the mutex is free; the next lock or unlock moves things on). Do not unmap the memory
// while holding the mutex.
// Fairness: the kernel wakes waiters in FIFO order, but a woken waiter competes with
// newcomers (no hand-off: a hand-off to a waiter killed before it runs would wedge the
// mutex). Under sustained contention a waiter may lose several rounds.
// Errors (result<T>): operation_canceled (stop token, or timed_out under
// corio::timeout), corio::errc::timed_out (lock_blocking's limit passed), owner_dead
// (abandoned), device_or_resource_busy (try_lock on a held mutex; recover() while
// another process recovers), invalid_argument (recover() of a mutex that is not
// abandoned), and for construct/attach: invalid_argument (out of
// bounds or misaligned), permission_denied (read-only mapping), wrong_protocol_type
// (another type or garbage), resource_unavailable_try_again (nothing constructed yet).
// Thread-safety: every member from any thread or process; a guard belongs to one owner.
// Cost: an uncontended lock or unlock is one CAS on the shared word plus a process-local
// spin lock (an exchange) around the robust-list update: two atomic read-modify-writes,
// tens of ns when the cache lines are local; the first lock of a process
// starts its sentinel thread (~50 us, once). A contended lock adds a futex wait and a
// wake syscall (~µs).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <utility>

#include <corio/ipc/detail/robust_owner.hpp>
#include <corio/ipc/detail/shared_word.hpp>
#include <corio/ipc/memory_map.hpp>
#include <corio/ipc/shared_memory.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc {

namespace detail {

struct mutex_state {
  shared_word magic{0};
  std::uint32_t reserved = 0;
  robust_word lock;
};

}  // namespace detail

class process_mutex;
class process_condition_variable;

/// Owns a locked process_mutex; unlocks it on destruction. Move-only.
class [[nodiscard]] process_mutex_guard {
 public:
  process_mutex_guard() noexcept = default;
  /// Takes over `o`'s lock; `o` owns nothing afterwards.
  process_mutex_guard(process_mutex_guard&& o) noexcept
      : m_state(std::exchange(o.m_state, nullptr)),
        m_generation(o.m_generation),
        m_recovering(o.m_recovering),
        m_consistent(o.m_consistent) {}
  /// Unlocks what was held so far (if anything), then takes over `o`'s lock.
  process_mutex_guard& operator=(process_mutex_guard&& o) noexcept {
    if (this != &o) {
      unlock();
      m_state = std::exchange(o.m_state, nullptr);
      m_generation = o.m_generation;
      m_recovering = o.m_recovering;
      m_consistent = o.m_consistent;
    }
    return *this;
  }
  process_mutex_guard(const process_mutex_guard&) = delete;
  process_mutex_guard& operator=(const process_mutex_guard&) = delete;
  ~process_mutex_guard() { unlock(); }

  /// Unlocks now (no-op if not owning). A recovering guard without mark_consistent()
  /// leaves the mutex abandoned. A guard a child inherited through fork() unlocks nothing
  /// (the lock stays its parent's, and a lock the child took itself stays the child's).
  void unlock() noexcept;
  /// After recover(): the data is repaired; unlocking makes the mutex usable again.
  void mark_consistent() noexcept { m_consistent = true; }
  /// True while the guard holds the mutex (false for a guard inherited through fork).
  [[nodiscard]] bool owns_lock() const noexcept;
  /// True for a guard from recover() (the previous owner died).
  [[nodiscard]] bool recovering() const noexcept { return m_recovering; }

 private:
  friend class process_mutex;
  friend class process_condition_variable;
  /// A guard of a lock just taken by this process (m_generation: its sentinel's).
  explicit process_mutex_guard(detail::mutex_state* s, bool recovering = false) noexcept;

  detail::mutex_state* m_state = nullptr;
  std::uint32_t m_generation = 0;  // owner_generation() at the lock (robust_release)
  bool m_recovering = false;
  bool m_consistent = false;
};

/// A mutex in shared memory, usable by tasks and threads of several processes, which
/// notices an owner that died; see the header.
class process_mutex {
 public:
  /// Bytes the shared object takes in the mapping (reserve this much at its offset).
  static constexpr std::size_t storage_size = sizeof(detail::mutex_state);
  /// The alignment its offset in the mapping needs.
  static constexpr std::size_t storage_alignment = alignof(detail::mutex_state);

  /// An empty handle (valid() is false); use construct() or attach().
  process_mutex() noexcept = default;

  /// Builds an unlocked mutex at `offset` of `region` (overwriting what is there: never
  /// while another process uses an object at that place).
  [[nodiscard]] static result<process_mutex> construct(std::span<std::byte> region, std::size_t offset = 0) noexcept;
  /// construct() in a memory map (a file, anonymous or shared memory).
  [[nodiscard]] static result<process_mutex> construct(memory_map& map, std::size_t offset = 0) noexcept;
  /// construct() in a named shared-memory object.
  [[nodiscard]] static result<process_mutex> construct(shared_memory& shm, std::size_t offset = 0) noexcept {
    return construct(shm.map(), offset);
  }
  /// Recognises the mutex another process (or this one) built at `offset`.
  [[nodiscard]] static result<process_mutex> attach(std::span<std::byte> region, std::size_t offset = 0) noexcept;
  /// attach() in a memory map.
  [[nodiscard]] static result<process_mutex> attach(memory_map& map, std::size_t offset = 0) noexcept;
  /// attach() in a named shared-memory object.
  [[nodiscard]] static result<process_mutex> attach(shared_memory& shm, std::size_t offset = 0) noexcept {
    return attach(shm.map(), offset);
  }

  /// False for an empty handle.
  [[nodiscard]] bool valid() const noexcept { return m_state != nullptr; }

  /// The awaitable operation of lock() (an implementation detail; see lock()).
  struct lock_op {
    ///@{
    /// Used by detail::fast_or_wait: the awaited result type, what the operation works on,
    /// one attempt without waiting, and the waiting path.
    using value_type = result<process_mutex_guard>;
    detail::mutex_state* state;
    bool cancellable = true;  ///< false: ignores every stop (condition variables re-lock)
    std::optional<value_type> try_now() noexcept;
    task<value_type> wait_slow(std::stop_token token) const;
    ///@}
  };

  /// Awaitable yielding result<process_mutex_guard> once this process owns the mutex.
  /// Cancellation: `token` or the inherited one makes a waiting lock return
  /// operation_canceled (timed_out under corio::timeout); a free mutex is taken even if
  /// the token is stopped; a wake-up that raced the stop is never lost (the lock is
  /// tried again, and a failed try leaves the waiters bit set for the next unlock).
  /// Errors: operation_canceled, owner_dead, and those of the sentinel's start.
  /// Precondition: valid(), and the mapping outlives the await and the guard.
  [[nodiscard]] detail::fast_or_wait<lock_op> lock(std::stop_token token = {}) const noexcept {
    return {lock_op{m_state}, std::move(token)};
  }
  /// Takes the mutex if it is free. Errors: device_or_resource_busy, owner_dead.
  [[nodiscard]] result<process_mutex_guard> try_lock() const noexcept;
  /// Thread form of lock(), for plain threads and child processes that run no runtime:
  /// blocks the calling thread (never call it on a worker) until the mutex is ours, for
  /// at most `limit` (saturating: hours::max() is no limit; the default never gives up;
  /// zero takes a free mutex and otherwise fails at once). The limit is one deadline
  /// taken at the call: spurious wake-ups and signals (EINTR) neither end the wait early
  /// nor extend it. Errors: corio::errc::timed_out (the limit passed with the mutex
  /// still held by another; nothing is taken), owner_dead (abandoned: reported as soon as
  /// it is seen, also after a wait, never as timed_out), those of the sentinel's start,
  /// and the OS error of a futex wait the kernel refuses (ENOSYS or EPERM under a seccomp
  /// filter, EFAULT: returned, not retried; nothing is taken). Thread-safety: any
  /// thread. Cost: as lock() uncontended; contended, one FUTEX_WAIT syscall per wake-up
  /// (plus a clock read per pass when limited).
  [[nodiscard]] result<process_mutex_guard> lock_blocking(
      saturating_duration limit = clock::duration::max()) const noexcept;
  /// Takes an abandoned mutex (its owner died) to repair it: the guard is recovering().
  /// Errors: invalid_argument (not abandoned), device_or_resource_busy (another process
  /// is recovering it).
  [[nodiscard]] result<process_mutex_guard> recover() const noexcept;

  ///@{
  /// Snapshots, for tests and diagnostics: held by someone; its owner died holding it.
  [[nodiscard]] bool is_locked() const noexcept;
  [[nodiscard]] bool is_abandoned() const noexcept;
  ///@}

 private:
  friend class process_condition_variable;
  explicit process_mutex(detail::mutex_state* s) noexcept : m_state(s) {}

  /// lock() that no stop can cut short (a condition variable re-locking).
  [[nodiscard]] detail::fast_or_wait<lock_op> relock() const noexcept { return {lock_op{m_state, false}, {}}; }

  detail::mutex_state* m_state = nullptr;
};

}  // namespace corio::ipc
