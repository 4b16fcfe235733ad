// The idle accounting of the sleep/wake protocol, shared by a runtime's workers: how
// many search for work and how many are parked, and the store-load barrier the protocol
// rests on. The protocol, its invariant and every code path that upholds it:
// runtime/idle.cpp.
// Thread-safety: any thread (atomics; each use explains its order). Cost: a store-load
// barrier and two loads for a publisher that wakes nobody.
#pragma once

#include <atomic>
#include <cstdint>

namespace corio::detail {

/// The seq_cst store-load barrier of the sleep/wake protocol (idle.cpp design note).
/// ThreadSanitizer does not model atomic_thread_fence (and g++ rejects it under -Wtsan),
/// so TSan builds use a seq_cst read-modify-write on the shared `sleepers` word instead,
/// which orders the same way: RMWs on one location are totally ordered and synchronize.
inline void store_load_barrier(std::atomic<std::uint32_t>& shared_word) noexcept {
#if defined(__SANITIZE_THREAD__)
  shared_word.fetch_add(0, std::memory_order_seq_cst);
#else
  (void)shared_word;
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

/// The counters of one runtime (runtime_core::idle).
struct idle_state {
  /// Workers looking for work to steal (bounded to half the workers, rounded up). A
  /// worker woken by notify_one() starts counted here (its waker counted it).
  alignas(64) std::atomic<std::uint32_t> searching{0};
  /// Workers parked or about to park (their park word is 1 or being set).
  std::atomic<std::uint32_t> sleepers{0};
  /// Where notify_one() starts looking for a parked worker (spreads the wakes).
  std::atomic<std::uint32_t> wake_cursor{0};
  /// The parked worker that watches the other workers' timers (bounds its sleep by their
  /// earliest deadline plus the takeover delay), or -1: one watcher, so a timer wakes one
  /// idle worker, not all of them (runtime/timers.cpp).
  std::atomic<std::int32_t> timer_watcher{-1};
};

}  // namespace corio::detail
