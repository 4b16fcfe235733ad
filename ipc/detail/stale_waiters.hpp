// Dropping a stale waiters bit, which process_semaphore.cpp, the auto-reset process_event
// (process_event.cpp) and process_mutex's unlock (process_mutex.cpp) share, and a test
// hook in front of it. Defined in process_sync.cpp. Not installed; private to ipc/ and
// its tests.
// Thread-safety: any thread, any process (the word is in shared memory); the hook is a
// relaxed atomic pointer a test sets before the threads it affects start. Cost: only on
// the path that found the waiters bit stale (a wake that woke fewer than it could): one
// relaxed load and one FUTEX_WAKE_OP syscall.
#pragma once

#include <atomic>

#include <corio/ipc/detail/shared_word.hpp>

namespace corio::ipc::detail {

/// Called, when set, by drop_stale_waiters_bit() before it acts: tests run other takers,
/// sleepers and releases there (tests/ipc/process_sync_test.cpp), the interleaving that
/// once left a sleeper asleep beside an available unit.
inline std::atomic<void (*)()> g_stale_waiters_hook{nullptr};

/// After a wake on `word` woke fewer sleepers than it could: clears its waiters `bit` and
/// wakes every sleeper queued at that moment, in one FUTEX_WAKE_OP (the definition says
/// why a CAS is wrong there). `bit`: 0..2047 or a power of two (futex_wake_op).
void drop_stale_waiters_bit(shared_word& word, std::uint32_t bit) noexcept;

}  // namespace corio::ipc::detail
