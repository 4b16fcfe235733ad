// Robust ownership of a lock word in shared memory: how a process-shared lock learns
// that its holder died (ipc/process_mutex.hpp, ipc/shm_queue.hpp).
//
// Design: the kernel's robust futex list (set_robust_list(2)), kept per *process*, not
// per thread. The first lock in a process starts one sentinel thread that registers a
// robust list head and then sleeps for the life of the process (all signals blocked,
// 256 KiB stack). A held lock word holds the sentinel's thread id (FUTEX_TID_MASK bits),
// so ownership belongs to the process — a task may lock on one worker and unlock on
// another — and every held word is linked on the sentinel's list through a node that
// sits next to it in shared memory. When the process dies (kill -9, exit, exec), its
// sentinel exits with it and the kernel walks the list: each word still holding the
// sentinel's id gets FUTEX_OWNER_DIED (owner bits cleared) and, if FUTEX_WAITERS is
// set, one waiter is woken — a shared futex wake, so io_uring FUTEX_WAIT waiters in
// other processes see it like any other wake. No polling, no pid that could be reused:
// the dead id is wiped from the word by the kernel itself.
// The list is process memory shared by all its threads, so it is changed under a small
// process-local spin lock, with list_op_pending set around each change so that a death
// in the middle of one is still handled (the kernel's documented protocol).
// Fork: the per-process state lives in a MADV_WIPEONFORK page, so a child (fork() or a
// raw clone) starts with no sentinel and makes its own on its first lock; a guard it
// inherited was locked under an older sentinel generation and releases nothing.
// Limits (documented in process_mutex.hpp): one pid namespace for all users of a lock;
// the kernel walks at most 2048 held locks per process; a thread that wins a lock
// word in the instant after SIGKILL reached its process but after the sentinel's list
// was walked is not reported (the kernel kills threads one by one).
// Thread-safety: any thread. Cost: acquire and release each take the process-local spin
// lock once (one exchange, a few stores); nothing when the word is busy.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <corio/ipc/detail/shared_word.hpp>
#include <corio/runtime/result.hpp>

namespace corio::ipc::detail {

inline constexpr std::uint32_t owner_waiters = 0x80000000u;  // FUTEX_WAITERS
inline constexpr std::uint32_t owner_died = 0x40000000u;     // FUTEX_OWNER_DIED
inline constexpr std::uint32_t owner_mask = 0x3fffffffu;     // FUTEX_TID_MASK

/// A lock word and its robust-list node, in shared memory. The layout is fixed (the
/// kernel finds the word at a constant offset from the node). `node` is scratch space
/// of the owning process only (a pointer in its address space, meaningless to others);
/// nothing else in corio's shared state is a pointer.
struct robust_word {
  shared_word word{0};
  std::uint32_t reserved = 0;
  std::atomic<std::uintptr_t> node{0};
};
static_assert(offsetof(robust_word, node) == 8 && sizeof(robust_word) == 16);

/// This process's owner id (its sentinel thread's id), starting the sentinel on first
/// use. Errors: pthread_create / set_robust_list failures (e.g.
/// resource_unavailable_try_again when no thread can be created).
result<std::uint32_t> process_owner_id() noexcept;

/// Which sentinel of this process's fork lineage is running (0: none yet), valid once
/// process_owner_id() succeeded. Every sentinel start takes a number above those of the
/// ancestors it was forked from, so a guard carried into a child by fork() holds a
/// generation the child never has: its unlock is refused (robust_release).
std::uint32_t owner_generation() noexcept;

/// Tries `word: expected -> desired` (desired holds our owner id) and, on success,
/// links the node on this process's robust list. On failure `expected` is the value
/// seen. acquire order on success.
bool robust_acquire(robust_word& w, std::uint32_t& expected, std::uint32_t desired) noexcept;

/// Releases a word this process holds, locked under `generation` (owner_generation() at
/// the acquire): unlinks the node, stores `released` (keeping the FUTEX_WAITERS bit),
/// wakes one waiter if it was set. Returns how many it woke (0, 1), -1 if no waiters, -2
/// if the word is not held by this process under that generation (nothing done: a guard
/// inherited through fork). release order.
int robust_release(robust_word& w, std::uint32_t released, std::uint32_t generation) noexcept;

}  // namespace corio::ipc::detail
