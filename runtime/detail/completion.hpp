// Operation states shared by io_uring operations, timers and blocking jobs: the node types
// of the scheduler port (runtime/port.hpp).
//
// io_completion: what an SQE's user_data points to; the owning worker calls on_cqe()
// for each CQE it reaps.
// timer_node: a sleep's node in its worker's timer heap (a cancellable: a stop request
// takes it out of the heap on the owner).
// blocking_job: a job for the blocking pool; run() runs on a pool thread.
//
// cancellable: the hand-off between a stop request (any thread) and the owning worker
// (the only thread allowed to touch its ring and timer heap). A stop callback never
// touches the operation's kernel state; it flags the operation and pushes it on the
// owner's MPSC cancel list, and the owner acts on it. The three-way state makes sure the
// operation's coroutine is resumed exactly once and only after the owner has taken the
// operation off its cancel list (so the list never points into a destroyed frame):
//
//   idle ──stop callback──▶ requested ──owner drains list──▶ drained ──CQE/fire──▶ resume
//     │                        │
//     └──CQE/fire──▶ resume    └──CQE/fire first──▶ completed ──owner drains──▶ resume
//
// Thread-safety: request_cancel() from any thread; everything else on the owning worker,
// except that a timer_node may be fired by another worker taking over a late one
// (runtime/timers.cpp): that worker claims it with a CAS idle -> completed, sets `owner`
// to itself and resumes the waiter itself.
// Cost: one atomic exchange per completion; a cancel adds one CAS and one list push.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>

namespace corio::detail {

class worker;

struct io_completion {
  void (*on_cqe)(io_completion* self, int res, std::uint32_t flags) noexcept = nullptr;
};

struct cancellable {
  enum state : std::uint8_t { idle = 0, requested = 1, completed = 2, drained = 3 };

  std::atomic<std::uint8_t> cancel_state{idle};
  cancellable* next_cancel = nullptr;   // link in the owner's cancel list
  worker* owner = nullptr;
  /// Owner thread: the operation is taken off the cancel list and was still pending;
  /// stop it (ASYNC_CANCEL, or unlink from the timer heap).
  void (*on_cancel_drained)(cancellable* self) noexcept = nullptr;
  /// Owner thread: the operation may now resume its coroutine.
  void (*on_resume)(cancellable* self) noexcept = nullptr;

  /// Stop callback body (any thread).
  void request_cancel() noexcept;

  /// Owner thread: the kernel (or the timer heap) finished the operation. Resumes now,
  /// or leaves it to the drain if a cancel request is in flight.
  void finished() noexcept {
    // acq_rel: acquire pairs with request_cancel()'s CAS so we see its push; release lets
    // drain_cancel() see that the operation finished.
    std::uint8_t prev = cancel_state.exchange(completed, std::memory_order_acq_rel);
    if (prev != requested) {
      on_resume(this);
    }
  }
};

/// A node of a worker's timer heap; lives in the sleeping coroutine's frame.
struct timer_node : cancellable {
  std::int64_t deadline_ns = 0;   ///< steady clock, ns since its epoch
  std::uint64_t sequence = 0;     ///< arming order (equal deadlines fire in it)
  static constexpr std::size_t kNotInHeap = ~std::size_t{0};
  std::size_t heap_index = kNotInHeap;  ///< the heap's bookkeeping
  std::coroutine_handle<> waiter{};
  int res = 0;  ///< 0 fired, -ECANCELED cancelled
};

/// A job of the blocking pool (port::blocking_submit). run() is called once, on a pool
/// thread, unless the job is withdrawn first. A job object is submitted at most once: a
/// withdrawn or run job is never submitted again (a withdraw that missed it leaves it
/// flagged, and the pool refuses it for good).
struct blocking_job {
  virtual void run() noexcept = 0;
  /// Set by a withdraw that found the job not queued (not yet, or already started);
  /// a later submit then refuses it. Read and written only under the pool's mutex.
  bool withdrawn = false;

 protected:
  ~blocking_job() = default;
};

}  // namespace corio::detail
