// corio::ipc::process_event: an event (manual or auto reset) whose whole state is one
// 32-bit word in memory that several processes map.
//
// Concept: the tutorial's multiprocessing.Event (manual reset: set() releases every
// waiter, present and future, until reset()) and its auto-reset variant (set() releases
// exactly one waiter, or the next one to come, and the event resets as it does). Built
// in place by construct(), found again by attach() (see process_mutex.hpp for placement
// and why these live in ipc/).
// State: 12 bytes, 4-aligned: a layout word, the futex word (set bit 2, waiters bit 1)
// and the mode. No pointers.
// Waiting: a waiter sets the waiters bit and awaits the word (IORING_OP_FUTEX_WAIT,
// shared; the blocking pool before Linux 6.7). set() with nobody waiting is one CAS;
// with the bit set it is one FUTEX_WAKE_OP syscall that sets the event and wakes (all,
// or one for auto reset) atomically, so a setter killed at any point either set and
// woke, or did neither. set() on a set event changes nothing. An auto-reset set() that
// finds the bit set but wakes nobody drops it with a second FUTEX_WAKE_OP, which also
// wakes whoever queued since (one syscall more, once per stale bit).
// Death: a waiter killed while waiting leaves nothing behind; for auto reset, one killed
// between its wake-up and its retry leaves the event set for the next waiter (nothing
// lost, but the next sleeper wakes only at the next set() or wait()).
// Fairness (auto reset): the kernel wakes the oldest sleeper, which competes with a
// newcomer for the event.
// Thread form: wait_blocking(limit) for plain threads and runtime-less children, with an
// optional time limit.
// Errors (result<T>): operation_canceled (timed_out under corio::timeout),
// corio::errc::timed_out (wait_blocking's limit passed), plus the placement errors of
// process_mutex.hpp.
// Thread-safety: every member from any thread or process.
// Cost: wait on a set event and set/reset without waiters: one load or CAS.
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

/// How a process_event behaves once set.
enum class event_mode : std::uint32_t {
  manual_reset = 1,  ///< stays set until reset(); releases every waiter
  auto_reset = 2,    ///< releases one waiter per set(), resetting as it does
};

namespace detail {

struct event_state {
  shared_word magic{0};
  shared_word word{0};  ///< set bit (2) | waiters bit (1)
  event_mode mode = event_mode::manual_reset;
};

}  // namespace detail

/// An event in shared memory (manual or auto reset) that tasks and threads of several
/// processes wait for; see the header.
class process_event {
 public:
  /// Bytes the shared object takes in the mapping (reserve this much at its offset).
  static constexpr std::size_t storage_size = sizeof(detail::event_state);
  /// The alignment its offset in the mapping needs.
  static constexpr std::size_t storage_alignment = alignof(detail::event_state);

  process_event() noexcept = default;

  /// Builds an event of `mode` at `offset` of `region` (overwriting what is there: never
  /// while another process uses an object at that place), set if `initially_set`.
  [[nodiscard]] static result<process_event> construct(std::span<std::byte> region, std::size_t offset = 0,
                                                       event_mode mode = event_mode::manual_reset,
                                                       bool initially_set = false) noexcept;
  /// construct() in a memory map (a file, anonymous or shared memory).
  [[nodiscard]] static result<process_event> construct(memory_map& map, std::size_t offset = 0,
                                                       event_mode mode = event_mode::manual_reset,
                                                       bool initially_set = false) noexcept;
  /// construct() in a named shared-memory object.
  [[nodiscard]] static result<process_event> construct(shared_memory& shm, std::size_t offset = 0,
                                                       event_mode mode = event_mode::manual_reset,
                                                       bool initially_set = false) noexcept {
    return construct(shm.map(), offset, mode, initially_set);
  }
  /// Recognises the event another process (or this one) built at `offset`.
  [[nodiscard]] static result<process_event> attach(std::span<std::byte> region, std::size_t offset = 0) noexcept;
  /// attach() in a memory map.
  [[nodiscard]] static result<process_event> attach(memory_map& map, std::size_t offset = 0) noexcept;
  /// attach() in a named shared-memory object.
  [[nodiscard]] static result<process_event> attach(shared_memory& shm, std::size_t offset = 0) noexcept {
    return attach(shm.map(), offset);
  }

  /// False for an empty handle.
  [[nodiscard]] bool valid() const noexcept { return m_state != nullptr; }
  /// The mode it was built with. Precondition: valid().
  [[nodiscard]] event_mode mode() const noexcept { return m_state->mode; }

  /// The awaitable operation of wait() (an implementation detail).
  struct wait_op {
    ///@{
    /// Used by detail::fast_or_wait: the awaited result type, what the operation works on,
    /// one attempt without waiting, and the waiting path.
    using value_type = result<void>;
    detail::event_state* state;
    std::optional<value_type> try_now() noexcept;
    task<value_type> wait_slow(std::stop_token token) const;
    ///@}
  };

  /// Awaitable yielding result<void> once the event is set (auto reset: and taken by
  /// us). Cancellation: `token` or the inherited one (operation_canceled; timed_out
  /// under corio::timeout); a set event is taken even if the token is stopped.
  /// Precondition: valid(); the mapping outlives the await.
  [[nodiscard]] detail::fast_or_wait<wait_op> wait(std::stop_token token = {}) const noexcept {
    return {wait_op{m_state}, std::move(token)};
  }
  /// True (and, auto reset, resets it) if the event is set.
  [[nodiscard]] bool try_wait() const noexcept;
  /// Thread form of wait(), for plain threads and child processes that run no runtime:
  /// blocks the calling thread (never call it on a worker) until the event is set (auto
  /// reset: and taken by us), for at most `limit` (saturating: hours::max() is no limit;
  /// the default never gives up; zero succeeds on a set event and otherwise fails at
  /// once). The limit is one deadline taken at the call: spurious wake-ups and signals
  /// (EINTR) neither end the wait early nor extend it. Errors: corio::errc::timed_out
  /// (the limit passed with the event unset; an auto-reset event is not taken), and the
  /// OS error of a futex wait the kernel refuses (ENOSYS or EPERM under a seccomp filter,
  /// EFAULT: returned, not retried; nothing is taken). Thread-safety: any thread. Cost:
  /// one load (or CAS) on a set event; otherwise a FUTEX_WAIT syscall per wake-up (plus
  /// a clock read per pass when limited).
  [[nodiscard]] result<void> wait_blocking(saturating_duration limit = clock::duration::max()) const noexcept;
  /// Sets the event, waking every waiter (manual) or one (auto).
  void set() const noexcept;
  /// Clears the event (no effect on waiters).
  void reset() const noexcept;
  /// A snapshot.
  [[nodiscard]] bool is_set() const noexcept;

 private:
  explicit process_event(detail::event_state* s) noexcept : m_state(s) {}

  detail::event_state* m_state = nullptr;
};

}  // namespace corio::ipc
