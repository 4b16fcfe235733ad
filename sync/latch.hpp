// corio::latch: a single-use countdown; tasks wait until it reaches zero.
//
// Concept: latch(n); count_down() n times (from any tasks or threads) releases every
// task in wait(), now and later. Like std::latch, but waiting suspends the task.
// Thread-safety: every member from any thread. Cost: count_down = one atomic RMW (the
// last one also sets the internal event); wait on an open latch = one acquire load.
// Lifetime: the count_down() that opens the latch makes its last access to it with the
// store that publishes "open", so a thread that sees it open (try_wait, a wait) may
// destroy it at once.
// Fairness: all waiters are released together, in the order they arrived.
// Resumes on: waiters are rescheduled by the task that counts to zero, never inline:
// onto its worker's LIFO slot (the rest behind it in the local queue) when it is a
// worker of the waiters' runtime, else through their runtime's global queue.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <cassert>
#include <cstddef>
#include <stop_token>
#include <utility>

#include <corio/sync/event.hpp>

namespace corio {

/// A single-use countdown that tasks wait on until it reaches zero; see the header.
class latch {
 public:
  /// Opens after `count` (>= 0) count-downs; a latch of 0 is open from the start.
  explicit latch(std::ptrdiff_t count) noexcept : m_count(count), m_open(event_reset::manual, count == 0) {
    assert(count >= 0 && "corio::latch: negative count");
  }
  latch(const latch&) = delete;
  latch& operator=(const latch&) = delete;

  /// Decrements the count by `n`; at zero, releases the waiters.
  /// Precondition: 0 <= n <= the current count. Misuse: counting below zero — debug
  /// builds abort with a message; release builds treat it as reaching zero (the
  /// decrement that crosses zero opens the latch, later ones change nothing visible).
  /// A negative n — debug builds abort with a message; release builds ignore the call
  /// (it would raise the count).
  void count_down(std::ptrdiff_t n = 1) noexcept {
    if (n < 0) {
      assert(!"corio::latch::count_down: negative n");
      return;  // release builds: ignored
    }
    // acq_rel: release publishes our writes to whoever sees zero; acquire (for the one
    // that reaches zero) gathers everyone's before it opens the latch.
    std::ptrdiff_t before = m_count.fetch_sub(n, std::memory_order_acq_rel);
    assert(before >= n && "corio::latch::count_down: below zero");
    // The one decrement that takes the count from positive to <= 0 opens the latch.
    if (before > 0 && before <= n) {
      m_open.set();
    }
  }

  /// True once the count is zero.
  [[nodiscard]] bool try_wait() const noexcept { return m_open.is_set(); }

  /// Awaitable yielding result<void> once the count is zero.
  /// Cancellation: operation_canceled if stopped first (the count is unaffected).
  [[nodiscard]] detail::event_wait_operation wait(std::stop_token token = {}) noexcept {
    return m_open.wait(std::move(token));
  }

  /// count_down(n), then wait(). Note: the count_down happens when this is called,
  /// before the awaitable is awaited.
  [[nodiscard]] detail::event_wait_operation arrive_and_wait(std::ptrdiff_t n = 1,
                                                             std::stop_token token = {}) noexcept {
    count_down(n);
    return wait(std::move(token));
  }

 private:
  std::atomic<std::ptrdiff_t> m_count;
  event m_open;
};

}  // namespace corio
