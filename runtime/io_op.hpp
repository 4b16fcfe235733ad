// corio::io_op: the generic awaitable io_uring operation that every corio I/O call uses.
//
// io_op<Prep> holds a callable that fills one SQE. Nothing happens until it is awaited;
// then it takes an SQE on the current worker's ring (submitted with the worker's next
// batch), suspends, and resumes on that worker when the CQE arrives. The result is the
// CQE's res: result<int> with the non-negative value, or the error.
//
// Ownership: the SQE points into the awaiting frame (this object, and any buffers the
// caller passed). The frame cannot be destroyed before the CQE arrives: cancellation
// submits IORING_OP_ASYNC_CANCEL and still waits for the original CQE; runtime shutdown
// cancels and drains every ring before it destroys frames.
//
// Cancellation: the explicit std::stop_token and the token inherited from the awaiting
// task (when_any, timeout) both cancel. A stop request from any thread is forwarded to
// the owning worker (never written into its SQ); the operation then returns
// std::errc::operation_canceled, unless it completed first (then its real result: no
// data is lost). Must be awaited on a worker thread (else errc::no_runtime).
// Thread-safety: one awaiter. Cost: one SQE and one CQE, no allocation; the stop
// callbacks are registered only for tokens that can be stopped.
//
// try_first_op (below) wraps a ring operation for descriptors that are often ready
// (pipes, listeners, a connection's first send): it tries a non-blocking syscall first
// and uses the ring only when that finds nothing to do, guided by a policy (the handle's
// ready_hint for pipes; always for a non-blocking listener and a connection's send).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <liburing.h>

#include <atomic>
#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <utility>

#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio {

namespace detail {

/// The state shared by all io_op instantiations.
class io_operation : public io_completion, public cancellable {
 public:
  io_operation() noexcept {
    on_cqe = &cqe_arrived;
    on_cancel_drained = &cancel_drained;
    on_resume = &resume;
  }
  io_operation(const io_operation&) = delete;
  io_operation& operator=(const io_operation&) = delete;

 protected:
  struct stop_fn {
    io_operation* op;
    void operator()() const noexcept { op->request_cancel(); }
  };

  /// Returns false (do not suspend) when the operation finished without an SQE.
  template <class P, class Prep>
  bool start(std::coroutine_handle<P> h, const std::stop_token& token, Prep& prep) {
    worker* w = port::current_worker();
    if (w == nullptr) {
      m_no_runtime = true;
      return false;
    }
    const inherited_stop inherited = inherited_token_of(h);
    if (stop_link<stop_fn>::stopped(token, inherited)) {
      m_res = -ECANCELED;
      return false;
    }
    owner = w;
    m_waiter = h;
    io_uring_sqe* sqe = port::get_sqe(w);
    prep(sqe);
    io_uring_sqe_set_data(sqe, static_cast<io_completion*>(this));
    m_stop.arm(token, inherited, stop_fn{this});
    return true;
  }

  result<int> finish() noexcept {
    m_stop.disarm();
    if (m_no_runtime) {
      return unexpected(make_error_code(errc::no_runtime));
    }
    if (m_res == -ECANCELED) {
      return unexpected(cancelled_error());
    }
    if (m_res < 0) {
      return unexpected(os_error(m_res));
    }
    return m_res;
  }

  int m_res = 0;
  std::uint32_t m_cqe_flags = 0;

 private:
  static void cqe_arrived(io_completion* c, int res, std::uint32_t flags) noexcept {
    auto* op = static_cast<io_operation*>(c);
    op->m_res = res;
    op->m_cqe_flags = flags;
    op->finished();
  }
  static void cancel_drained(cancellable* c) noexcept {
    auto* op = static_cast<io_operation*>(c);
    port::cancel(op->owner, op);
  }
  static void resume(cancellable* c) noexcept {
    auto* op = static_cast<io_operation*>(c);
    port::resume_later(op->owner, op->m_waiter);
  }

  std::coroutine_handle<> m_waiter{};
  stop_link<stop_fn> m_stop;
  bool m_no_runtime = false;
};

}  // namespace detail

/// An awaitable io_uring operation whose SQE is filled by `prep(io_uring_sqe*)`.
/// `co_await` yields result<int> (the CQE's res). See the header comment.
template <class Prep>
class [[nodiscard]] io_op : public detail::io_operation {
 public:
  /// `prep` fills the SQE when the op is awaited; `token` cancels it (IORING_OP_ASYNC_CANCEL).
  explicit io_op(Prep prep, std::stop_token token = {}) : m_prep(std::move(prep)), m_token(std::move(token)) {}
  /// Moves a not-yet-awaited operation.
  io_op(io_op&& other) noexcept : m_prep(std::move(other.m_prep)), m_token(std::move(other.m_token)) {}

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    return start(h, m_token, m_prep);
  }
  [[nodiscard]] result<int> await_resume() noexcept { return finish(); }

  /// CQE flags of the completion (IORING_CQE_F_*), valid after the await.
  [[nodiscard]] std::uint32_t cqe_flags() const noexcept { return m_cqe_flags; }

 private:
  Prep m_prep;
  std::stop_token m_token;
};

/// Deduction guide: `io_op{prep}` takes the type of the lambda.
template <class Prep>
io_op(Prep) -> io_op<Prep>;
/// Deduction guide: `io_op{prep, token}` takes the type of the lambda.
template <class Prep>
io_op(Prep, std::stop_token) -> io_op<Prep>;

/// The ready hint of a handle whose operations try the syscall first (try_first_op):
/// whether the next operation should try it before using the ring. Off after a try found
/// the descriptor not ready (EAGAIN); on again after a ring completion that moved every
/// byte asked for (there may be more); off for good after the descriptor refused the try
/// (EOPNOTSUPP). Thread-safety: any thread. The flags are relaxed atomics because they are
/// only a hint: a stale value costs one EAGAIN or one ring round trip, never a wrong
/// result. Cost: a byte; a load per operation, a store when it changes. Copying copies
/// the current value (handles stay movable).
class ready_hint {
 public:
  ready_hint() noexcept = default;
  /// Copies `other`'s current value.
  ready_hint(const ready_hint& other) noexcept : m_state(other.m_state.load(std::memory_order_relaxed)) {}
  /// Copies `other`'s current value.
  ready_hint& operator=(const ready_hint& other) noexcept {
    m_state.store(other.m_state.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return *this;
  }

  /// Whether the next operation should try the syscall first.
  [[nodiscard]] bool ready() const noexcept { return m_state.load(std::memory_order_relaxed) == k_ready; }
  /// A try found the descriptor not ready: use the ring until it reports progress.
  void not_ready() noexcept { set_unless_unsupported(k_not_ready); }
  /// A ring completion moved every byte asked for: try first again.
  void ready_again() noexcept { set_unless_unsupported(k_ready); }
  /// The descriptor refuses non-blocking tries: the ring only, for good.
  void unsupported() noexcept { m_state.store(k_unsupported, std::memory_order_relaxed); }

 private:
  static constexpr std::uint8_t k_ready = 0;
  static constexpr std::uint8_t k_not_ready = 1;
  static constexpr std::uint8_t k_unsupported = 2;
  void set_unless_unsupported(std::uint8_t v) noexcept {
    // relaxed: a hint (see the class comment); a racing unsupported() may be overwritten
    // only by a value it would have overwritten, so the load-then-store is enough.
    std::uint8_t cur = m_state.load(std::memory_order_relaxed);
    if (cur != v && cur != k_unsupported) {
      m_state.store(v, std::memory_order_relaxed);
    }
  }
  std::atomic<std::uint8_t> m_state{k_ready};
};

/// try_first_op's policy for descriptors that are usually ready but not always (pipes):
/// try while the handle's ready_hint says so, and keep the hint up to date. A try that
/// finds the descriptor not ready (EAGAIN) turns it off, one the descriptor refuses
/// (EOPNOTSUPP) turns it off for good (both then use the ring), and a ring completion
/// that moved all `want` bytes (there may be more) turns it back on.
class hinted_try {
 public:
  /// `hint` must outlive the await: keep it where the operation holds a reference, not
  /// in a handle that may be destroyed meanwhile (ipc keeps it in the descriptor's
  /// operations record: tracked_op::hint()). `want`: the bytes asked for.
  hinted_try(ready_hint* hint, std::size_t want) noexcept : m_hint(hint), m_want(want) {}

  /// Whether to try the syscall before the ring.
  [[nodiscard]] bool should_try() const noexcept { return m_hint->ready(); }
  /// The try found nothing to do (EAGAIN).
  void not_ready() noexcept { m_hint->not_ready(); }
  /// Whether a try's result (other than EAGAIN and EINTR) settles the operation.
  [[nodiscard]] bool settles(int res) noexcept {
    if (res == -EOPNOTSUPP) {
      m_hint->unsupported();
      return false;
    }
    return true;
  }
  /// The ring path's result `r` (a result<N> for an integer N).
  template <class R>
  void ring_completed(const R& r) noexcept {
    if (r && static_cast<std::size_t>(*r) == m_want && m_want != 0) {
      m_hint->ready_again();
    }
  }

 private:
  ready_hint* m_hint;
  std::size_t m_want;
};

/// try_first_op's policy for descriptors where one failed try costs less than a ring
/// round trip whenever the descriptor is ready (listeners: accept4(2) before the ring's
/// accept; a connection's first sendmsg): try every time if `enabled`, never otherwise;
/// no hint to keep. Every result but EAGAIN and EINTR settles the operation.
class fixed_try {
 public:
  /// `enabled`: try the syscall first (e.g. the descriptor is non-blocking).
  explicit fixed_try(bool enabled) noexcept : m_enabled(enabled) {}

  /// Whether to try the syscall before the ring.
  [[nodiscard]] bool should_try() const noexcept { return m_enabled; }
  /// The try found nothing to do (EAGAIN): nothing to remember.
  void not_ready() noexcept {}
  /// Every result other than EAGAIN and EINTR settles the operation.
  [[nodiscard]] bool settles(int) noexcept { return true; }
  /// The ring path's result: nothing to remember.
  template <class R>
  void ring_completed(const R&) noexcept {}

 private:
  bool m_enabled;
};

/// An operation that tries a non-blocking syscall before the ring: `attempt()` returns
/// the syscall's result (a count or a descriptor, or a negative errno). When it settles
/// the operation (anything but EAGAIN and EINTR, and what `Policy::settles` refuses) the
/// awaiter resumes without an SQE, a CQE or a trip through the run queue; otherwise
/// `ring` (an awaitable yielding result<N>, such as an io_op or an ipc tracked_op; the
/// settled result is N(res)) runs as usual. `Policy` (hinted_try for pipes, fixed_try
/// for listeners and connection sends) says whether to try at all and keeps what the
/// results teach.
/// The try happens only on a worker thread, with neither the explicit nor the inherited
/// stop token stopped (the ring path reports no_runtime and operation_canceled), and
/// while the policy says so. If `ring` has `attempt_now(f)` (ipc's tracked_op), the try
/// runs through it: under the descriptor's close lock, and not at all once the
/// descriptor was closed (the ring path then reports it). Fairness: every settled try
/// charges the task's cooperative budget (port::consume_budget); once it is spent the
/// task still gets its result but yields to the back of its worker's queue first, so a
/// loop on an always-ready descriptor cannot starve the worker's other tasks.
/// Thread-safety: one awaiter. Cost: one syscall when ready; one failed syscall more
/// than the ring operation alone when not.
template <class Ring, class Attempt, class Policy>
class [[nodiscard]] try_first_op {
 public:
  /// `policy` is kept in the operation (see hinted_try for what must outlive the await).
  try_first_op(Ring ring, Attempt attempt, Policy policy, std::stop_token token) noexcept
      : m_ring(std::move(ring)), m_attempt(std::move(attempt)), m_token(std::move(token)), m_policy(policy) {}

  bool await_ready() noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    if (m_policy.should_try() && settled_now(detail::inherited_token_of(h))) {
      if (!port::consume_budget()) {
        return false;  // resume at once with the result
      }
      port::yield(h);  // budget spent: the worker's other tasks first (touch nothing after this)
      return true;
    }
    return m_ring.await_suspend(h);
  }

  [[nodiscard]] auto await_resume() {
    using R = decltype(m_ring.await_resume());
    using N = typename R::value_type;
    if (!m_done) {
      R r = m_ring.await_resume();
      m_policy.ring_completed(r);
      return r;
    }
    if (m_res < 0) {
      return R(unexpected(os_error(m_res)));
    }
    return R(static_cast<N>(m_res));
  }

 private:
  // True when the syscall settled the operation (m_res holds its result).
  bool settled_now(detail::inherited_stop inherited) {
    if (port::current_worker() == nullptr || m_token.stop_requested() || inherited.stop_requested()) {
      return false;
    }
    int res = -EAGAIN;
    bool open = true;
    if constexpr (requires { m_ring.attempt_now([] {}); }) {
      open = m_ring.attempt_now([&] { res = m_attempt(); });
    } else {
      res = m_attempt();
    }
    if (!open || res == -EINTR) {
      return false;
    }
    if (res == -EAGAIN || res == -EWOULDBLOCK) {
      m_policy.not_ready();
      return false;
    }
    if (!m_policy.settles(res)) {
      return false;
    }
    m_res = res;
    m_done = true;
    return true;
  }

  Ring m_ring;
  Attempt m_attempt;
  std::stop_token m_token;
  Policy m_policy;
  int m_res = 0;
  bool m_done = false;
};

/// Makes a try_first_op (deduces the types).
template <class Ring, class Attempt, class Policy>
try_first_op<Ring, Attempt, Policy> make_try_first(Ring ring, Attempt attempt, Policy policy, std::stop_token token) {
  return try_first_op<Ring, Attempt, Policy>(std::move(ring), std::move(attempt), policy, std::move(token));
}

}  // namespace corio
