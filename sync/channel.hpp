// corio::channel<T>: a multi-producer multi-consumer FIFO queue of values between tasks
// (and plain threads).
//
// Concept: `co_await ch.send(v)` / `co_await ch.recv()`; bounded (capacity n: send waits
// while n values are buffered), rendezvous (capacity 0: send waits until a receiver
// takes the value) or unbounded (corio::unbounded_capacity: send never waits). close()
// ends it: receivers first drain what is buffered, then get errc::closed; waiting and
// later senders get errc::closed (their values are not delivered — the error says so;
// try_send leaves the value with the caller). Plain threads use send_blocking /
// recv_blocking.
// Thread-safety: every member from any thread.
// Cost: every operation takes the channel's spin lock once (a few pointer writes and the
// value's move); a value meeting a waiting receiver is moved straight into it. Memory:
// the buffer is allocated when the first value is buffered, with min(16, capacity
// rounded up to a power of two) slots, and doubles when full; it never holds more than
// the capacity rounded up to a power of two slots (a capacity of 20 may allocate 32) and
// never shrinks. No allocation otherwise. A send (or try_send) that must grow the buffer
// and cannot allocate throws std::bad_alloc: nothing is sent, the channel stays usable.
// Fairness: FIFO for values, for waiting senders and for waiting receivers.
// Resumes on: a woken sender/receiver is rescheduled, never resumed inline: onto the
// waking worker's LIFO slot when it is a worker of the waiter's runtime (a ping-pong
// between two tasks stays on one worker), else through the waiter's runtime's global
// queue. An operation that completes at once still yields its worker every 128 operations
// (the task's cooperative budget).
// Cancel safety: recv is not cancel-safe as a losing branch of when_any: a value it took
// is dropped with the branch; use timeout() — which returns a value that arrived — or
// try_recv. (Likewise a send that completed in a losing branch has delivered its value.)
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/sync/detail/ring_buffer.hpp>
#include <corio/sync/detail/wait_operation.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio {

/// Capacity of a channel whose send never waits.
inline constexpr std::size_t unbounded_capacity = std::numeric_limits<std::size_t>::max();

template <class T>
class channel;

namespace detail {

template <class T>
class channel_send_operation : public wait_operation<channel_send_operation<T>> {
  using base = wait_operation<channel_send_operation<T>>;

 public:
  channel_send_operation(channel<T>& ch, T value, std::stop_token token)
      : base(ch.m_senders, std::move(token)), m_channel(&ch), m_value(std::move(value)) {}
  channel_send_operation(channel_send_operation&& o) noexcept(std::is_nothrow_move_constructible_v<T>)
      : base(std::move(o)), m_channel(o.m_channel), m_value(std::move(o.m_value)), m_no_memory(o.m_no_memory) {}
  channel_send_operation(const channel_send_operation&) = delete;
  channel_send_operation& operator=(const channel_send_operation&) = delete;
  channel_send_operation& operator=(channel_send_operation&&) = delete;
  ~channel_send_operation() { this->end_wait(); }  // before m_value goes: a receiver may be taking it

  /// Throws std::bad_alloc when the buffer had to grow and could not (nothing sent).
  [[nodiscard]] result<void> await_resume() {
    this->reset_callbacks();
    if (m_no_memory) {
      throw std::bad_alloc();
    }
    return this->outcome();
  }
  void block() { base::block(); }

  // noexcept: it runs under the channel's spin lock. A buffer that cannot grow ends the
  // operation here ("done", m_no_memory) and await_resume() throws, after the lock is gone.
  bool try_now(wake_batch& batch) noexcept {
    this->slot = &m_value;  // a receiver or a draining recv moves it from here
    if (m_channel->m_closed) {
      this->status = wait_status::closed;
      return true;
    }
    switch (m_channel->deliver_locked(m_value, batch)) {
      case channel<T>::delivery::done:
        this->status = wait_status::granted;
        return true;
      case channel<T>::delivery::no_memory:
        this->status = wait_status::granted;  // finished; m_no_memory says how
        m_no_memory = true;
        return true;
      case channel<T>::delivery::full:
        break;
    }
    return false;
  }

 private:
  channel<T>* m_channel;
  T m_value;
  bool m_no_memory = false;  // set by try_now() under the lock, read by await_resume()
};

template <class T>
class channel_recv_operation : public value_wait_operation<channel_recv_operation<T>, T> {
  using base = value_wait_operation<channel_recv_operation<T>, T>;

 public:
  channel_recv_operation(channel<T>& ch, std::stop_token token) noexcept
      : base(ch.m_receivers, std::move(token)), m_channel(&ch) {}
  channel_recv_operation(channel_recv_operation&& o) noexcept : base(std::move(o)), m_channel(o.m_channel) {}

  bool try_now(wake_batch& batch) noexcept {
    this->slot = &this->m_value;  // a sender moves its value in here
    if (m_channel->take_locked(this->m_value, batch)) {
      this->status = wait_status::granted;
      return true;
    }
    if (m_channel->m_closed) {
      this->status = wait_status::closed;
      return true;
    }
    return false;
  }

 private:
  channel<T>* m_channel;
};

}  // namespace detail

/// A multi-producer multi-consumer FIFO queue of T between tasks and threads; see the
/// header for capacities, close() and cancellation.
template <class T>
class channel {
  // Values are moved under the channel's spin lock, which must not be left held.
  static_assert(std::is_nothrow_move_constructible_v<T>, "corio::channel<T>: T must be nothrow move-constructible");

 public:
  /// `capacity` values may be buffered: 0 = rendezvous, unbounded_capacity = no limit.
  explicit channel(std::size_t capacity) noexcept : m_capacity(capacity), m_buffer(capacity == 0 ? 1 : capacity) {}
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;
  /// Precondition: no task or thread waits (debug: aborts with a message, except during
  /// runtime shutdown). Buffered values are destroyed.
  ~channel() = default;

  /// Awaitable yielding result<void> once `value` is buffered or handed to a receiver.
  /// Cancellation: `token` or the inherited token ends a waiting send with
  /// operation_canceled; the value was not sent (it is destroyed with the awaiter).
  /// Errors: errc::closed (the value is not sent), operation_canceled. Throws
  /// std::bad_alloc when the buffer must grow and cannot (the value is not sent).
  [[nodiscard]] detail::channel_send_operation<T> send(T value, std::stop_token token = {}) {
    return {*this, std::move(value), std::move(token)};
  }

  /// Awaitable yielding result<T>: the oldest value.
  /// Cancellation: a recv whose stop wins the race with a sender ends with
  /// operation_canceled and has taken nothing (the value stays in the channel for the
  /// next receiver). A recv that a sender served first returns the value even if the
  /// stop came at the same moment; whoever awaits it must then keep that result.
  /// recv is not cancel-safe as a losing branch of when_any: a value it took is dropped
  /// with the branch (when_any discards a loser's result). Use timeout() — which returns
  /// a value that arrived as the deadline passed — or try_recv() instead.
  /// Errors: errc::closed once closed and drained, operation_canceled.
  [[nodiscard]] detail::channel_recv_operation<T> recv(std::stop_token token = {}) noexcept {
    return {*this, std::move(token)};
  }

  /// Sends without waiting. On failure `value` is left untouched (still the caller's).
  /// Errors: errc::full (bounded and full, or rendezvous with no receiver waiting),
  /// errc::closed. Throws std::bad_alloc as send() does (`value` untouched).
  [[nodiscard]] result<void> try_send(T&& value) {
    wake_batch_guard g(*this);
    if (m_closed) {
      return unexpected(make_error_code(errc::closed));
    }
    switch (deliver_locked(value, g.batch)) {
      case delivery::done:
        return {};
      case delivery::full:
        return unexpected(make_error_code(errc::full));
      case delivery::no_memory:
        break;
    }
    throw std::bad_alloc();  // g's destructor drops the lock
  }
  /// try_send(T&&) with a copy of `value`.
  [[nodiscard]] result<void> try_send(const T& value) {
    T copy(value);
    return try_send(std::move(copy));
  }

  /// Receives without waiting. Errors: errc::empty, errc::closed (closed and drained).
  [[nodiscard]] result<T> try_recv() {
    std::optional<T> out;
    wake_batch_guard g(*this);
    if (take_locked(out, g.batch)) {
      return std::move(*out);
    }
    return unexpected(make_error_code(m_closed ? errc::closed : errc::empty));
  }

  /// Thread forms: block the calling thread (not a task) until done. Same results.
  result<void> send_blocking(T value, std::stop_token token = {}) {
    return detail::block_on<detail::channel_send_operation<T>>(*this, std::move(value), std::move(token));
  }
  /// recv() for a plain thread: blocks it until a value or an error.
  result<T> recv_blocking(std::stop_token token = {}) {
    return detail::block_on<detail::channel_recv_operation<T>>(*this, std::move(token));
  }

  /// Closes the channel (idempotent): wakes every waiting sender and receiver with
  /// errc::closed; buffered values stay receivable.
  void close() noexcept {
    detail::wake_batch batch;
    m_lock.lock();
    m_closed = true;
    m_receivers.close_all(batch);
    m_senders.close_all(batch);
    m_lock.unlock();
  }

  /// True once close() has been called (buffered values may remain).
  [[nodiscard]] bool is_closed() noexcept {
    m_lock.lock();
    bool c = m_closed;
    m_lock.unlock();
    return c;
  }
  /// Buffered values (a snapshot).
  [[nodiscard]] std::size_t size() noexcept {
    m_lock.lock();
    std::size_t n = m_buffer.size();
    m_lock.unlock();
    return n;
  }
  /// The capacity given at construction (0: rendezvous; unbounded_capacity: no limit).
  [[nodiscard]] std::size_t capacity() const noexcept { return m_capacity; }

 private:
  friend class detail::channel_send_operation<T>;
  friend class detail::channel_recv_operation<T>;

  /// Holds the lock; wakes the batch after dropping it (declaration order).
  struct wake_batch_guard {
    explicit wake_batch_guard(channel& c) noexcept : ch(c) { ch.m_lock.lock(); }
    ~wake_batch_guard() {
      ch.m_lock.unlock();
      batch.wake_all();
    }
    channel& ch;
    detail::wake_batch batch;
  };

  enum class delivery : std::uint8_t {
    done,       ///< handed to a receiver or buffered
    full,       ///< no receiver waits and the buffer is at capacity
    no_memory,  ///< the buffer had to grow and could not allocate; `v` untouched
  };

  /// Under m_lock, not closed: hands `v` to the oldest waiting receiver (receivers only
  /// wait while the buffer is empty), else buffers it if there is room. Never throws
  /// (the lock must not be left held): a failed allocation is reported as no_memory and
  /// the caller throws once the lock is dropped.
  delivery deliver_locked(T& v, detail::wake_batch& batch) noexcept {
    if (detail::waiter* r = m_receivers.pop_into(batch, detail::wait_status::granted)) {
      static_cast<std::optional<T>*>(r->slot)->emplace(std::move(v));
      return delivery::done;
    }
    if (m_buffer.size() < m_capacity) {
      return m_buffer.push(std::move(v)) ? delivery::done : delivery::no_memory;
    }
    return delivery::full;
  }

  /// Under m_lock: takes the oldest value — buffered first, refilling the freed place
  /// from the oldest waiting sender; else (rendezvous) straight from a waiting sender.
  bool take_locked(std::optional<T>& out, detail::wake_batch& batch) noexcept {
    if (!m_buffer.empty()) {
      out.emplace(m_buffer.pop());
      if (detail::waiter* s = m_senders.pop_into(batch, detail::wait_status::granted)) {
        m_buffer.push_into_free_slot(std::move(*static_cast<T*>(s->slot)));  // the pop freed one
      }
      return true;
    }
    if (detail::waiter* s = m_senders.pop_into(batch, detail::wait_status::granted)) {
      out.emplace(std::move(*static_cast<T*>(s->slot)));
      return true;
    }
    return false;
  }

  detail::sync_spin_lock m_lock;
  const std::size_t m_capacity;
  bool m_closed = false;              // guarded by m_lock
  detail::ring_buffer<T> m_buffer;    // guarded by m_lock
  detail::waiter_list m_senders{m_lock};
  detail::waiter_list m_receivers{m_lock};
};

}  // namespace corio
