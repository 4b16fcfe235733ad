// wait_operation<Derived>: the awaiter skeleton every sync/ wait is built on.
//
// Protocol of one wait (see waiter_list.hpp for the invariants):
//   1. await_ready: the primitive's fast path (Derived), no callbacks registered.
//   2. await_suspend → wait(): register the stop callbacks (explicit token and the token
//      inherited from the awaiting task) *before* the node can be published; then, under
//      the lock, try again (`Derived::try_now`, which must be noexcept: nothing may
//      leave the spin lock held; a failure is recorded and reported by await_resume,
//      as a channel send's failed allocation is), else report a stop that already
//      happened, else link the node and suspend. An immediate success wins over a stop.
//   3. A waker (unlock, release, send, notify, close) marks the node and wakes it; or the
//      stop callback, under the same lock, unlinks a still-queued node, marks it
//      cancelled and wakes it. Whoever takes the lock first decides.
//   4. await_resume (Derived) destroys the callbacks first — std::stop_callback's
//      destructor waits for a callback running on another thread — then reads `status`.
// On a thread that is not a corio worker, wait() blocks the thread instead of
// suspending (thread_parker), so the same awaiters back the *_blocking calls.
// Destroying a queued operation (runtime shutdown destroying the frame) unlinks it.
#pragma once

#include <coroutine>
#include <optional>
#include <stop_token>
#include <utility>

#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio::detail {

/// The stop callback of a wait: `self->cancel()`.
template <class Op>
struct wait_cancel_fn {
  Op* self;
  void operator()() const noexcept { self->cancel(); }
};

/// No action after a node is queued (the default for Derived::after_queued_action()).
struct no_action {
  void operator()() const noexcept {}
};

/// How wait() ended.
enum class wait_outcome {
  completed,  ///< never queued: completed or cancelled at once (after_queued_action not run)
  suspended,  ///< queued and the coroutine stays suspended (after_queued_action ran)
  unblocked,  ///< queued, the thread blocked and was woken (after_queued_action ran)
};

/// Whether a wait listens to the token it inherits from the awaiting task (when_any,
/// timeout). An explicit token is always honoured; an uncancellable wait is given none.
enum class cancel_mode {
  cancellable,    ///< the inherited token cancels the wait
  uncancellable,  ///< the inherited token is ignored: the wait ends only when granted
};

template <class Derived>
class wait_operation : public waiter {
 public:
  wait_operation(waiter_list& target, std::stop_token token) noexcept : m_token(std::move(token)) {
    list = &target;
  }
  /// Awaiters are moved before they are awaited (timeout(), when_any): copy the
  /// parameters only. Precondition: `o` is not waiting.
  wait_operation(wait_operation&& o) noexcept : m_token(std::move(o.m_token)), m_yield(o.m_yield) {
    list = o.list;
    amount = o.amount;
    status = o.status;
  }
  wait_operation(const wait_operation&) = delete;
  wait_operation& operator=(const wait_operation&) = delete;
  wait_operation& operator=(wait_operation&&) = delete;
  ~wait_operation() { end_wait(); }

  /// Derived may shadow this to run something right after its node is queued and the
  /// lock dropped (condition_variable releases its mutex there). It must not touch the
  /// operation: it is built from copies taken before queueing.
  no_action after_queued_action() const noexcept { return {}; }
  /// Derived may shadow this to finish an immediate completion once the lock is dropped
  /// (barrier runs its completion function there). Called by wait() only.
  void after_completed() noexcept {}
  /// Derived may shadow this to undo what a failed try_now() did when the wait is then
  /// cancelled before it is queued (barrier takes its arrival back). Under the lock.
  void cancelled_before_queueing() noexcept {}

  /// Default awaiter members; a Derived shadows the ones it does differently (a barrier
  /// never completes in await_ready, a condition variable releases its mutex on suspend).
  bool await_ready() { return ready_under_lock(); }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    return suspend(h);
  }

  /// Stop callback body (any thread).
  void cancel() noexcept { list->cancel(*this); }

 protected:
  /// The outcome of a finished wait: granted → success, closed → errc::closed, anything
  /// else (a stop won) → operation_canceled.
  result<void> outcome() const noexcept {
    switch (status) {
      case wait_status::granted: return {};
      case wait_status::closed: return unexpected(make_error_code(errc::closed));
      default: return unexpected(cancelled_error());
    }
  }

  /// await_resume body of a wait that ends granted or cancelled, never closed (event,
  /// barrier, condition_variable): success, or operation_canceled.
  result<void> granted_or_cancelled() noexcept {
    reset_callbacks();
    if (status != wait_status::granted) {
      return unexpected(cancelled_error());
    }
    return {};
  }

  /// await_resume body of a wait that delivers a value into `value` (channel recv,
  /// oneshot): the value, or the error of outcome().
  template <class T>
  result<T> take_outcome(std::optional<T>& value) {
    reset_callbacks();
    if (auto done = outcome(); !done) {
      return unexpected(done.error());
    }
    return std::move(*value);
  }

  /// Fast path for await_ready: try under the lock, without registering callbacks. When
  /// it succeeds but the task's budget is spent, the awaiter still suspends and
  /// reschedules itself at the back of the queue (await_suspend sees m_yield).
  bool ready_under_lock() noexcept {
    static_assert(noexcept(derived().try_now(std::declval<wake_batch&>())),
                  "Derived::try_now runs under the spin lock and must not throw");
    wake_batch batch;
    sync_spin_lock& lk = list->lock();
    lk.lock();
    bool done = derived().try_now(batch);
    lk.unlock();
    batch.wake_all();
    return done && !budget_spent();
  }

  /// Records that a synchronous completion must still yield (budget spent).
  bool budget_spent() noexcept {
    if (status != wait_status::idle && port::consume_budget()) {
      m_yield = true;
      return true;
    }
    return false;
  }

  /// await_suspend body. Returns true when the coroutine stays suspended.
  template <class P>
  bool suspend(std::coroutine_handle<P> h, cancel_mode mode = cancel_mode::cancellable) {
    return suspend_outcome(h, mode) == wait_outcome::suspended;
  }
  /// Like suspend(), but tells a thread that blocked while queued (after_queued_action
  /// ran, the wait is over) from a wait that never queued.
  template <class P>
  wait_outcome suspend_outcome(std::coroutine_handle<P> h, cancel_mode mode = cancel_mode::cancellable) {
    if (m_yield) {
      port::yield(h);
      return wait_outcome::suspended;
    }
    return wait(h, mode == cancel_mode::cancellable ? detail::inherited_token_of(h) : detail::inherited_stop{});
  }

  /// Thread form of suspend() for the *_blocking calls: blocks until the wait ends.
  /// Called on a worker thread it blocks the worker (allowed, but it stalls every task
  /// queued there).
  void block() {
    if (!m_yield) {
      (void)wait({}, {});
    }
  }

  /// The slow path: queue and suspend (coroutine on a worker) or block (a thread, or a
  /// coroutine running outside any corio runtime).
  wait_outcome wait(std::coroutine_handle<> h, detail::inherited_stop inherited) {
    home = h ? port::current_runtime() : nullptr;
    if (home == nullptr) {
      return wait_on_thread(inherited);
    }
    handle = h;
    return wait_queued(inherited, nullptr);
  }

  /// wait() on a thread: blocks in a thread_parker. Out of line, so that a coroutine's
  /// wait does not build one (g++ zeroed a 104-byte std::optional<thread_parker> on every
  /// wait, right before the primitive's lock).
  [[gnu::noinline]] wait_outcome wait_on_thread(detail::inherited_stop inherited) {
    thread_parker parked;
    parker = &parked;
    return wait_queued(inherited, &parked);
  }

  /// The body of wait(): `parked` is the blocking thread's parker, null for a coroutine.
  wait_outcome wait_queued(detail::inherited_stop inherited, thread_parker* parked) {
    m_stop.arm(m_token, inherited, wait_cancel_fn<wait_operation>{this});
    auto after_queued = derived().after_queued_action();
    wake_batch batch;
    sync_spin_lock& lk = list->lock();
    lk.lock();
    bool queued = false;
    if (derived().try_now(batch)) {
      // completed at once (status set by try_now)
    } else if (status == wait_status::cancelled || m_token.stop_requested() ||
               inherited.stop_requested()) {
      status = wait_status::cancelled;
      derived().cancelled_before_queueing();
    } else {
      list->push_back(this);
      m_published = true;  // owner-only flag: other threads may now touch `status`
      queued = true;
    }
    lk.unlock();
    batch.wake_all();
    if (!queued) {
      if (status == wait_status::granted) {
        derived().after_completed();
      }
      return wait_outcome::completed;
    }
    // From here on another thread may wake (and resume) us: `this` is off limits.
    after_queued();
    if (parked != nullptr) {
      parked->wait();  // the waker's notify() orders its writes (status) before us
      return wait_outcome::unblocked;
    }
    return wait_outcome::suspended;
  }

  /// Debug/defensive: a node destroyed while queued (shutdown) leaves its list.
  /// A node that was never queued was only ever touched by its owner: no lock. Once
  /// published, `status` is read under the lock (a granter or canceller on another
  /// thread writes it under the lock); a detached node points at the dead list.
  void abandon() noexcept {
    if (!m_published || list == nullptr) {
      return;
    }
    if (m_resumed) {
      // The wait ended and await_resume read its final status: nobody writes the node
      // any more and it is off every list, so no lock. Only a waker may still be between
      // its wake and its last read of the node.
      wait_wake_done();
      return;
    }
    // A waker that took us off the list (granted, closed, cancelled by a stop callback)
    // may still be reading this node on another thread when shutdown destroys our frame.
    list->abandon(*this);
  }

  /// Takes the node out of the wait for good: stop callbacks dropped, off its list, no
  /// waker still reading it. Idempotent. A Derived whose own members a waker writes or
  /// reads (a value received into it, a value sent from it) calls it from its destructor,
  /// so those members outlive every waker (a frame destroyed at shutdown while another
  /// thread's send takes the node); the base destructor then finds nothing left to do.
  void end_wait() noexcept {
    m_stop.disarm();
    abandon();
    m_published = false;
  }

  /// Drops the stop callbacks; call first in await_resume. After it the status is final
  /// (std::stop_callback's destructor waits for a callback running on another thread).
  void reset_callbacks() noexcept {
    m_stop.disarm();
    m_resumed = true;
  }

  std::stop_token m_token;
  port::stop_link<wait_cancel_fn<wait_operation>> m_stop;
  bool m_yield = false;
  bool m_published = false;  ///< was queued at some point (owner thread only)
  bool m_resumed = false;    ///< await_resume ran: the wait is over (owner thread only)

 private:
  Derived& derived() noexcept { return static_cast<Derived&>(*this); }
};

/// The wait of a receive that delivers a T into m_value (channel recv, oneshot recv):
/// Derived supplies the constructors and try_now(), which points `slot` at m_value.
template <class Derived, class T>
class value_wait_operation : public wait_operation<Derived> {
 public:
  using wait_operation<Derived>::wait_operation;
  /// Precondition: `o` is not waiting (its m_value is still empty).
  value_wait_operation(value_wait_operation&& o) noexcept : wait_operation<Derived>(std::move(o)) {}
  value_wait_operation(const value_wait_operation&) = delete;
  value_wait_operation& operator=(const value_wait_operation&) = delete;
  value_wait_operation& operator=(value_wait_operation&&) = delete;
  ~value_wait_operation() { this->end_wait(); }  // before m_value goes: a sender may be filling it

  [[nodiscard]] result<T> await_resume() { return this->take_outcome(m_value); }
  void block() { wait_operation<Derived>::block(); }

 protected:
  std::optional<T> m_value;
};

/// The body of a *_blocking call: builds the operation from `args`, blocks the calling
/// thread until it is done (see wait_operation::block) and returns its result.
template <class Op, class... Args>
auto block_on(Args&&... args) {
  Op op(std::forward<Args>(args)...);
  if (!op.await_ready()) {
    op.block();
  }
  return op.await_resume();
}

}  // namespace corio::detail
