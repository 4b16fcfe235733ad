// The steps of a shm_queue transfer that both the per-call paths
// (shm_queue_transfer.cpp) and the claims (shm_queue_claim.cpp) run, defined in
// shm_queue_steps.cpp: the locked attempts, the sleep preparation, the side locks with
// their recovery, and the argument checks.
// Not installed, private to ipc/ (like shm_queue_layout.hpp, whose protocol these steps
// implement). Thread-safety and cost: as each function says; none allocates.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <system_error>

#include <corio/ipc/detail/shm_queue_layout.hpp>
#include <corio/ipc/process_mutex.hpp>
#include <corio/ipc/shm_queue.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc::detail::shm {

/// What a locked attempt found.
enum class outcome { done, closed, would_wait };
/// A queue's two sides, each with its lock.
enum class side { send, receive };

/// Producers, under the send lock: fills the next slot with `message` and publishes it.
/// On would_wait, `sleep_value` is the consumed word as seen: the queue stays full until
/// it changes.
outcome send_locked(queue_header* h, const queue_geometry& g, std::span<const std::byte> message,
                    std::uint32_t& sleep_value) noexcept;
/// Consumers, under the receive lock: takes the oldest message into `buffer` (its size in
/// `size`). On would_wait, `sleep_value` is the published word as seen: the queue stays
/// empty until it changes. closed means closed and empty.
outcome receive_locked(queue_header* h, const queue_geometry& g, std::span<std::byte> buffer, std::size_t& size,
                       std::uint32_t& sleep_value) noexcept;
/// Consumers, with the receive lock held, after receive_locked found the queue closed and
/// empty ("The end of a closed queue", shm_queue_layout.hpp): true when no send can
/// publish any more, so that one more receive_locked is final; false while a live
/// producer is between its last look at the closed bit and its publish (look again after
/// next_settle_pause). Spins up to the spin budget; takes the send lock only with try_lock.
bool senders_settled(queue_header* h, const process_mutex& send_lock) noexcept;
/// Producers (and the recovery of their lock): clears the `publishing` mark with a
/// seq_cst exchange and, when a consumer asked to be woken (settle_waiter_bit), wakes
/// every sleeper of the mark (FUTEX_WAKE); nothing more otherwise.
void unmark(queue_header* h) noexcept;
/// Consumers, after senders_settled() said "not yet": asks the marking producer's unmark
/// to wake us (sets settle_waiter_bit on a mark of 1). The value to sleep on for the
/// pause (futex wait), or nothing when the mark is gone already (look again at once).
std::optional<std::uint32_t> prepare_settle_wait(queue_header* h) noexcept;
/// How long a consumer that senders_settled() told "not yet" pauses before it looks
/// again (at most: prepare_settle_wait's sleep ends early at the producer's unmark):
/// 50 µs at first (a live producer's wake is a syscall long), doubling at each pause of
/// the same call up to 1 ms, so a producer stopped in the middle of its wake
/// (SIGSTOP, a debugger) costs each waiting consumer about a thousand wake-ups a second
/// instead of twenty thousand. `pause` starts at settle_pause_first_ns; returns the pause
/// to take now and doubles `pause` for the next one (saturating at settle_pause_max_ns).
inline constexpr long long settle_pause_first_ns = 50'000;
inline constexpr long long settle_pause_max_ns = 1'000'000;
inline long long next_settle_pause(long long& pause) noexcept {
  const long long now = pause;
  pause = now >= settle_pause_max_ns / 2 ? settle_pause_max_ns : now * 2;
  return now;
}
/// A blocking call's futex timeout until `deadline`: -1 for never (time_point::max()),
/// 0 once it has passed (compared first: a deadline far in the past, which a limit of
/// hours::min() saturates to, minus now would overflow). One clock read.
inline long long wait_ns(clock::time_point deadline) noexcept {
  if (deadline == clock::time_point::max()) {
    return -1;
  }
  const clock::time_point now = clock::now();
  if (deadline <= now) {
    return 0;
  }
  return std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now).count();
}
/// A consumer's pause after senders_settled() said "not yet", from a thread: sleeps on
/// the mark (prepare_settle_wait) for next_settle_pause(`pause`), cut to `left_ns` (-1:
/// no deadline), so that the producer's unmark ends it; returns at once when the mark is
/// gone already; a wait the kernel refuses (seccomp) is slept out instead.
void settle_pause_blocking(queue_header* h, long long& pause, long long left_ns) noexcept;
/// settle_pause_blocking for a task: awaits the mark under a timeout of the pause where
/// the ring waits on futexes (Linux 6.7+); before that a plain timed sleep (the blocking
/// pool's stop would wake every sleeper of the mark). operation_canceled on a stop of
/// `token` or the inherited token; the OS error of a wait the ring refuses.
task<result<void>> settle_pause_awaited(queue_header* h, long long& pause, std::stop_token token);
/// After would_wait: spins (once per call, `spun`) while `word` still holds `seen`, then
/// sets its waiters bit. The value to sleep on, or nothing if the word moved (look again).
std::optional<std::uint32_t> prepare_sleep(shared_word& word, std::uint32_t seen, bool& spun) noexcept;
/// Runs the test hook (g_shm_queue_test_hook) at `step`, if one is set.
void test_hook(queue_step step) noexcept;
/// Takes a side's lock without waiting, recovering it from a dead holder
/// (device_or_resource_busy while another process recovers it).
result<process_mutex_guard> try_lock_side(queue_header* h, const process_mutex& lock, side which) noexcept;
/// try_lock_side for the try_* calls: a side another holds is "try again".
result<process_mutex_guard> try_lock_or_again(queue_header* h, const process_mutex& lock, side which) noexcept;
/// Awaits a side's lock, recovering it from a dead holder; `token` (and the awaiting
/// task's own) cancel the wait.
task<result<process_mutex_guard>> lock_side(queue_header* h, const process_mutex& lock, side which,
                                            std::stop_token token);
/// lock_side for a plain thread (the queue's blocking forms and the blocking claims):
/// blocks it, asleep in the kernel on the lock's word (process_mutex::lock_blocking, so
/// a release wakes it), until the lock is taken or `deadline` passes
/// (corio::errc::timed_out, having taken nothing). One deadline: each wait, including
/// the one after a recovery that found another process recovering, is for what is left
/// of it; time_point::max() never gives up; a passed deadline still tries once.
result<process_mutex_guard> lock_side_until(queue_header* h, const process_mutex& lock, side which,
                                            clock::time_point deadline) noexcept;

/// try_now body of the send and receive awaitables: the try_* call's result, or nothing
/// when the call would have to wait (`would_wait`, or the side's lock held by another).
template <class R>
inline std::optional<R> unless_would_wait(R r, errc would_wait) noexcept {
  if (!r && (r.error() == would_wait || r.error() == std::errc::resource_unavailable_try_again)) {
    return std::nullopt;
  }
  return r;
}

// Both check against the handle's max_message, which receive_locked clamps with.
inline result<void> check_message(const queue_geometry& g, std::span<const std::byte> message) noexcept {
  if (message.size() > g.max_message) {
    return unexpected(error(std::errc::message_size));
  }
  return {};
}

inline result<void> check_buffer(const queue_geometry& g, std::span<std::byte> buffer) noexcept {
  if (buffer.size() < g.max_message) {
    return unexpected(error(std::errc::message_size));
  }
  return {};
}


}  // namespace corio::ipc::detail::shm
