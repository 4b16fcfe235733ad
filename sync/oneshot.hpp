// corio::oneshot<T>: a single value handed from one producer to one consumer, once.
//
// Concept: send(v) stores (or hands over) the value; `co_await os.recv()` waits for it.
// One value per oneshot: a second send fails with errc::full, a second recv gets
// errc::closed (receivers already waiting when the value is handed to the oldest of them
// are woken with errc::closed at once). close() without a value wakes the receiver with errc::closed (a value
// already sent stays receivable). Plain threads use recv_blocking().
// Thread-safety: every member from any thread.
// Cost: one spin-lock section per operation; the value is moved at most twice; no
// allocation.
// Resumes on: a waiting receiver is rescheduled by send()/close(), never inline: onto the
// sender's LIFO slot when it is a worker of the receiver's runtime, else through the
// receiver's runtime's global queue.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/sync/detail/wait_operation.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio {

template <class T>
class oneshot;

namespace detail {

template <class T>
class oneshot_recv_operation : public value_wait_operation<oneshot_recv_operation<T>, T> {
  using base = value_wait_operation<oneshot_recv_operation<T>, T>;

 public:
  oneshot_recv_operation(oneshot<T>& o, std::stop_token token) noexcept
      : base(o.m_waiters, std::move(token)), m_oneshot(&o) {}
  oneshot_recv_operation(oneshot_recv_operation&& o) noexcept : base(std::move(o)), m_oneshot(o.m_oneshot) {}

  bool try_now(wake_batch&) noexcept {
    this->slot = &this->m_value;
    return m_oneshot->take_locked(*this, this->m_value);
  }

 private:
  oneshot<T>* m_oneshot;
};

}  // namespace detail

/// One value, handed from one producer to one consumer, once; see the header.
template <class T>
class oneshot {
  static_assert(std::is_nothrow_move_constructible_v<T>, "corio::oneshot<T>: T must be nothrow move-constructible");

 public:
  oneshot() noexcept = default;
  oneshot(const oneshot&) = delete;
  oneshot& operator=(const oneshot&) = delete;
  /// Precondition: nobody waits (see mutex::~mutex).
  ~oneshot() = default;

  /// Delivers `value`. Errors: errc::full (a value was already sent), errc::closed.
  /// On failure the value is destroyed.
  result<void> send(T value) noexcept {
    detail::wake_batch batch;
    m_lock.lock();
    result<void> r;
    if (m_state == state::closed || m_state == state::taken) {
      r = unexpected(make_error_code(m_state == state::closed ? errc::closed : errc::full));
    } else if (m_state == state::has_value) {
      r = unexpected(make_error_code(errc::full));
    } else if (detail::waiter* w = m_waiters.pop_into(batch, detail::wait_status::granted)) {
      static_cast<std::optional<T>*>(w->slot)->emplace(std::move(value));
      m_state = state::taken;
      // The value is gone: every other waiting receiver ends now with errc::closed, as a
      // later recv would.
      m_waiters.close_all(batch);
    } else {
      m_value.emplace(std::move(value));
      m_state = state::has_value;
    }
    m_lock.unlock();
    return r;
  }

  /// Awaitable yielding result<T>. Errors: errc::closed (closed without a value, or the
  /// value was already taken), operation_canceled (a waiting recv was stopped; a value
  /// sent later stays receivable).
  /// recv is not cancel-safe as a losing branch of when_any: a value it took is dropped
  /// with the branch (and the oneshot is spent); use timeout() — which returns a value
  /// that arrived — or try_recv.
  [[nodiscard]] detail::oneshot_recv_operation<T> recv(std::stop_token token = {}) noexcept {
    return {*this, std::move(token)};
  }

  /// Errors: errc::empty (nothing yet), errc::closed.
  [[nodiscard]] result<T> try_recv() {
    std::optional<T> out;
    m_lock.lock();
    detail::waiter probe;
    bool done = take_locked(probe, out);
    m_lock.unlock();
    if (!done) {
      return unexpected(make_error_code(errc::empty));
    }
    if (probe.status == detail::wait_status::closed) {
      return unexpected(make_error_code(errc::closed));
    }
    return std::move(*out);
  }

  /// Thread form of recv(): blocks the calling thread.
  result<T> recv_blocking(std::stop_token token = {}) {
    return detail::block_on<detail::oneshot_recv_operation<T>>(*this, std::move(token));
  }

  /// Closes: a waiting receiver gets errc::closed; a later send fails. Idempotent.
  void close() noexcept {
    detail::wake_batch batch;
    m_lock.lock();
    if (m_state == state::empty) {
      m_state = state::closed;
    }
    m_waiters.close_all(batch);
    m_lock.unlock();
  }

 private:
  friend class detail::oneshot_recv_operation<T>;
  enum class state { empty, has_value, taken, closed };

  /// Under m_lock: completes a receive (status granted + value, or closed), or false.
  bool take_locked(detail::waiter& w, std::optional<T>& out) noexcept {
    switch (m_state) {
      case state::has_value:
        out.emplace(std::move(*m_value));
        m_value.reset();
        m_state = state::taken;
        w.status = detail::wait_status::granted;
        return true;
      case state::taken:
      case state::closed:
        w.status = detail::wait_status::closed;
        return true;
      case state::empty:
        return false;
    }
    return false;
  }

  detail::sync_spin_lock m_lock;
  state m_state = state::empty;   // guarded by m_lock
  std::optional<T> m_value;       // guarded by m_lock
  detail::waiter_list m_waiters{m_lock};
};

}  // namespace corio
