// The waiter queue every corio wait is built on: a small spin lock, an intrusive FIFO list
// of waiter nodes, and the batch of waiters to wake once the lock is dropped. Used by the
// sync/ primitives and by the layers above (ipc's multishot waits); a building block for
// writing a primitive, not something an application needs (hence namespace detail).
//
// Design note
// -----------
// Every primitive keeps its waiters in one or more `waiter_list`s guarded by one
// `sync_spin_lock` (Tokio builds Mutex, RwLock and Semaphore on one batch_semaphore; we
// share the list instead). A waiter node lives inside the awaiter, i.e. in the waiting
// coroutine's frame (or on a blocked thread's stack): no allocation per wait.
//
// Invariants (all under the primitive's lock):
//   - a node is linked in `list` iff `status == queued`;
//   - only the thread that changes `status` from `queued` to a final value (granted,
//     cancelled, closed) wakes the node, and it does so after dropping the lock, as its
//     last access to the node. So a node is woken exactly once, and a hand-off (granted)
//     and a cancellation can never both happen: whoever takes the lock first decides.
//
// Waking never resumes a coroutine inline: it goes through port::wake (the waker's LIFO
// slot when it is a worker of the waiter's runtime, else the global queue).
// A plain thread blocked in a *_blocking call is woken through its thread_parker.
//
// Cost: lock = one atomic fetch_or when free, unlock = one store; critical sections are a few pointer writes.
// Contended, the lock spins with `pause` and yields the CPU after 64 spins.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include <corio/runtime/port.hpp>

namespace corio::detail {

/// Test-and-test-and-set lock guarding a primitive's waiter lists and state.
///
/// The lock word also carries a few bits of the owner's state ("published bits") that
/// lock-free readers may load (event's flag): the holder changes them with
/// set_bits() (invisible until unlock) and unlock() publishes them in the very store that
/// releases the lock. So a reader that sees a bit a holder set knows that the holder has
/// already made its last access to the lock (and to the primitive around it): the
/// primitive may be destroyed right away. Primitives that never set bits see 0.
class sync_spin_lock {
 public:
  sync_spin_lock() noexcept = default;
  /// A lock whose published bits start as `bits` (< 128).
  explicit sync_spin_lock(std::uint8_t bits) noexcept : m_word(static_cast<std::uint8_t>(bits << 1)), m_bits(bits) {}

  void lock() noexcept {
    // acquire: pairs with unlock()'s release; the previous holder's writes are visible.
    // fetch_or, not exchange: the published bits stay readable while the lock is held.
    if ((m_word.fetch_or(kLockedBit, std::memory_order_acquire) & kLockedBit) == 0) {
      return;
    }
    lock_slow();
  }
  void unlock() noexcept {
    // release: publishes the writes of the critical section (and the bits) to the next
    // lock() and to published_bits()' acquire load. The holder's last access.
    m_word.store(static_cast<std::uint8_t>(m_bits << 1), std::memory_order_release);
  }

  /// Under the lock: the bits as this holder sees them (including its own set_bits()).
  [[nodiscard]] std::uint8_t bits() const noexcept { return m_bits; }
  /// Under the lock: changes the bits; lock-free readers see them at unlock().
  void set_bits(std::uint8_t bits) noexcept { m_bits = bits; }
  /// Lock-free: the bits as of the last unlock(). acquire: pairs with unlock()'s release;
  /// the writes of the critical section that published them are visible after it.
  [[nodiscard]] std::uint8_t published_bits() const noexcept {
    return static_cast<std::uint8_t>(m_word.load(std::memory_order_acquire) >> 1);
  }

 private:
  static constexpr std::uint8_t kLockedBit = 1;
  void lock_slow() noexcept;
  std::atomic<std::uint8_t> m_word{0};  // kLockedBit | published bits << 1
  std::uint8_t m_bits = 0;              // the bits, read and written under the lock only
};

/// Wakes a plain (non-worker) thread blocked in a *_blocking call.
struct thread_parker {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  void wait() {
    std::unique_lock lk(m);
    cv.wait(lk, [this] { return done; });
  }
  // Notifies under the mutex so the waiter cannot return (and destroy us) before we are
  // done with the condition variable.
  void notify() {
    std::lock_guard lk(m);
    done = true;
    cv.notify_one();
  }
};

enum class wait_status : std::uint8_t {
  idle,       ///< not yet waiting
  queued,     ///< linked in a waiter_list
  granted,    ///< the wait succeeded (lock handed over, value delivered, ...)
  cancelled,  ///< a stop request won
  closed,     ///< the primitive was closed (channels, oneshot)
};

class waiter_list;

/// One waiting coroutine or thread. Fields other than the links are set by the owner
/// before it is queued; `status` is read and written under the primitive's lock.
struct waiter {
  waiter* prev = nullptr;
  waiter* next = nullptr;
  waiter_list* list = nullptr;        ///< the list this waiter queues on
  std::coroutine_handle<> handle{};   ///< the waiting coroutine, or null for a thread
  runtime_core* home = nullptr;       ///< the coroutine's runtime (where it is rescheduled)
  thread_parker* parker = nullptr;    ///< the waiting thread, or null for a coroutine
  std::size_t amount = 1;             ///< semaphore units, or 0/1 for readers/writers
  void* slot = nullptr;               ///< channel: where a value is taken from / put to
  wait_status status = wait_status::idle;
  /// Set under the lock when the node is put in a wake_batch; cleared by the waker as its
  /// last access, after the wake (the "wake done" hand-off). The owner waits for it in
  /// abandon() before the node goes — whether it was resumed (usually the flag is clear
  /// long before) or destroyed unresumed by runtime shutdown — so a waker on another
  /// thread never touches a freed node or a destroyed runtime.
  std::atomic<bool> waking{false};

  /// Reschedules the coroutine (never inline) or unparks the thread. The caller's last
  /// access to this node.
  void wake() noexcept;
  /// Like wake(), but a coroutine of this worker's runtime goes to the back of the
  /// worker's queue instead of its LIFO slot.
  void wake_behind() noexcept;

  /// Waits until no waker is between taking this node off its list and its last read of
  /// it. Call after observing a final status under the lock.
  void wait_wake_done() const noexcept {
    // acquire: pairs with the waker's release store in wake_batch::wake_all(); after it,
    // the waker no longer reads this node.
    for (unsigned spins = 0; waking.load(std::memory_order_acquire); ++spins) {
      if (spins < 64) {
        port::cpu_relax();
      } else {
        yield_cpu();  // the waker may be preempted (inside a futex wake, say): let it run
      }
    }
  }

 private:
  static void yield_cpu() noexcept;
};

/// What waking a node needs, copied out of it (see wake_batch::wake_all).
struct wake_target {
  std::coroutine_handle<> handle;
  runtime_core* home;
  thread_parker* parker;
  /// `front`: the LIFO slot (waiter::wake); else behind (waiter::wake_behind).
  void wake(bool front) const noexcept;
};

#ifndef NDEBUG
/// Fault-injection hook for tests (debug builds only): when set, wake_batch::wake_all()
/// calls it after the lock is dropped and before it reads the batch's nodes, to widen the
/// window in which a node's frame may be destroyed under the waker.
inline std::atomic<void (*)()> g_test_hook_before_wake{nullptr};
#endif

/// Waiters taken off their lists under the lock, woken after it is dropped.
class wake_batch {
 public:
  wake_batch() = default;
  wake_batch(const wake_batch&) = delete;
  wake_batch& operator=(const wake_batch&) = delete;
  ~wake_batch() { wake_all(); }

  /// Under the lock.
  void push(waiter* w) noexcept {
    // relaxed: written and read under the primitive's lock (abandon() reads it after
    // taking the same lock); the lock orders it.
    w->waking.store(true, std::memory_order_relaxed);
    w->next = nullptr;
    if (m_tail != nullptr) {
      m_tail->next = w;
    } else {
      m_head = w;
    }
    m_tail = w;
  }
  /// Wakes in push order (FIFO). Releases each node (`waking = false`) as the last thing
  /// it does with it, after the wake: the woken owner may run at once, but it waits for
  /// that release before its node goes (abandon()), and so does a frame that shutdown
  /// destroys unresumed — which also keeps the runtime alive while we schedule onto it.
  /// The first goes through the LIFO slot, the others to the back of this worker's queue
  /// when they belong to its runtime: the LIFO slot holds one task, and filling it one by
  /// one would run the batch last-woken-first.
  void wake_all() noexcept {
    waiter* w = m_head;
    m_head = m_tail = nullptr;
#ifndef NDEBUG
    if (w != nullptr) {
      if (auto hook = g_test_hook_before_wake.load(std::memory_order_relaxed)) {
        hook();
      }
    }
#endif
    bool first = true;
    while (w != nullptr) {
      waiter* next = w->next;
      wake_target{w->handle, w->home, w->parker}.wake(first);
      // Our last access to the node. release: everything above (the reads of the node and
      // the use of its runtime) happens before abandon() lets the node, its frame or, at
      // shutdown, its runtime go.
      w->waking.store(false, std::memory_order_release);
      first = false;
      w = next;
    }
  }

 private:
  waiter* m_head = nullptr;
  waiter* m_tail = nullptr;
};

/// Intrusive FIFO of waiters. All members except the constructor and destructor must be
/// called with the owning primitive's lock held.
class waiter_list {
 public:
  /// Called under the lock after a cancelled or destroyed waiter left the list, so the
  /// primitive can fix its state or grant the waiters behind it (into `batch`).
  using unlinked_fn = void (*)(void* owner, wake_batch& batch) noexcept;

  waiter_list(sync_spin_lock& lock, void* owner = nullptr, unlinked_fn on_unlinked = nullptr) noexcept
      : m_lock(&lock), m_owner(owner), m_on_unlinked(on_unlinked) {}
  waiter_list(const waiter_list&) = delete;
  waiter_list& operator=(const waiter_list&) = delete;
  /// A list destroyed with waiters is a bug (the primitive died under them), except when
  /// their runtime is shutting down and destroys frames in arbitrary order: see
  /// waiter_list.cpp. Remaining waiters are detached (detach_all) and never resumed.
  ~waiter_list();

  /// Takes every waiter off this list without waking it: each is marked cancelled and
  /// pointed at dead_list(), so a later stop callback or destructor of its operation is a
  /// no-op instead of touching this (dying) list. Takes the lock itself. Returns whether
  /// a detached waiter was not part of a runtime shutdown (i.e. the primitive's owner
  /// destroyed it under its waiters: a bug).
  bool detach_all() noexcept;

  /// The list detached waiters point at: a real lock, never any waiter linked.
  static waiter_list& dead_list() noexcept;

  /// Stop-callback body of every wait on this list (any thread; takes the lock): a
  /// queued `w` leaves the list (the primitive's unlinked hook runs), is marked cancelled
  /// and woken; an idle one is only marked, so its wait sees the stop before queueing.
  /// Whoever takes the lock first — waker or canceller — decides.
  void cancel(waiter& w) noexcept;
  /// Destructor body of a wait that was published on this list (takes the lock): a
  /// still-queued `w` leaves it (cancelled, not woken: its frame is going), then we wait
  /// until no waker is still reading `w` (waiter::wait_wake_done).
  void abandon(waiter& w) noexcept;

  /// Under the lock, for a primitive's close(): takes every waiter off the list, marked
  /// closed and added to `batch` — except one whose runtime is shutting down (frames are
  /// then destroyed in arbitrary order, its own is about to go): marked cancelled, not
  /// woken.
  void close_all(wake_batch& batch) noexcept;

  [[nodiscard]] bool empty() const noexcept { return m_head == nullptr; }
  [[nodiscard]] waiter* front() const noexcept { return m_head; }
  [[nodiscard]] sync_spin_lock& lock() const noexcept { return *m_lock; }

  void push_back(waiter* w) noexcept {
    w->next = nullptr;
    w->prev = m_tail;
    if (m_tail != nullptr) {
      m_tail->next = w;
    } else {
      m_head = w;
    }
    m_tail = w;
    w->status = wait_status::queued;
  }
  waiter* pop_front() noexcept {
    waiter* w = m_head;
    if (w != nullptr) {
      remove(w);
    }
    return w;
  }
  /// Pops the head and marks it `status`, adding it to `batch`.
  waiter* pop_into(wake_batch& batch, wait_status status) noexcept {
    waiter* w = pop_front();
    if (w != nullptr) {
      w->status = status;
      batch.push(w);
    }
    return w;
  }
  void remove(waiter* w) noexcept {
    if (w->prev != nullptr) {
      w->prev->next = w->next;
    } else {
      m_head = w->next;
    }
    if (w->next != nullptr) {
      w->next->prev = w->prev;
    } else {
      m_tail = w->prev;
    }
    w->prev = w->next = nullptr;
  }
  void unlinked(wake_batch& batch) noexcept {
    if (m_on_unlinked != nullptr) {
      m_on_unlinked(m_owner, batch);
    }
  }

 private:
  /// Under the lock: a queued `w` leaves (cancelled; the unlinked hook runs). Returns
  /// whether it was queued.
  bool unlink_cancelled(waiter& w, wake_batch& batch) noexcept;

  waiter* m_head = nullptr;
  waiter* m_tail = nullptr;
  sync_spin_lock* m_lock;
  void* m_owner;
  unlinked_fn m_on_unlinked;
};

}  // namespace corio::detail
