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
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <liburing.h>

#include <cerrno>
#include <coroutine>
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
    const std::stop_token* inherited = inherited_token_of(h);
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
  result<int> await_resume() noexcept { return finish(); }

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

}  // namespace corio
