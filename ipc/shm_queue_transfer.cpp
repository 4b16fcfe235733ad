// corio::ipc::shm_queue: sending and receiving, each call's transfer between its waits
// (shm_queue.hpp; create and open: shm_queue.cpp; claims: shm_queue_claim.cpp). The
// layout and the protocol over its words (counts, positions, recovery, batching,
// prefetch): detail/shm_queue_layout.hpp; the steps shared with the claims (the locked
// attempts, the side locks and their recovery after a death): shm_queue_steps.cpp.
#include <corio/ipc/shm_queue.hpp>

#include <chrono>
#include <type_traits>

#include <corio/ipc/detail/shm_queue_layout.hpp>
#include <corio/ipc/detail/shm_queue_steps.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc {

namespace {

using namespace detail::shm;

/// What a send or receive call does after a step of its transfer (pause: next_settle_pause,
/// then lock again).
enum class next { lock, sleep, pause, finish };

/// One send_slow / send_blocking / receive_slow / receive_blocking call between its waits:
/// which lock to take next and, with it held, the attempt and what follows. The drivers
/// (transfer_awaited, transfer_blocking) only take the locks and sleep, each its own way.
class transfer {
 public:
  transfer(queue_header* h, const queue_geometry& g, const process_mutex& send_lock,
           std::span<const std::byte> message) noexcept
      : m_h(h), m_g(g), m_send_lock(&send_lock), m_message(message) {}
  transfer(queue_header* h, const queue_geometry& g, const process_mutex& send_lock,
           const process_mutex& receive_lock, std::span<std::byte> buffer) noexcept
      : m_h(h), m_g(g), m_send_lock(&send_lock), m_receive_lock(&receive_lock), m_buffer(buffer) {}

  [[nodiscard]] queue_header* header() const noexcept { return m_h; }
  /// The lock to take next: the call's own side's.
  [[nodiscard]] const process_mutex& lock() const noexcept {
    return lock_side() == side::send ? *m_send_lock : *m_receive_lock;
  }
  [[nodiscard]] side lock_side() const noexcept { return m_receive_lock == nullptr ? side::send : side::receive; }
  /// After next::sleep: the other side's count word, and the value to sleep on.
  [[nodiscard]] shared_word& word() const noexcept {
    return m_receive_lock == nullptr ? m_h->consumed : m_h->published;
  }
  [[nodiscard]] std::uint32_t sleep_value() const noexcept { return m_seen; }

  /// With lock() held (`held`, dropped before anything else is decided): the locked
  /// attempt, then next::finish (see result_as), next::lock (take lock() again),
  /// next::pause or next::sleep. `give_up()` is asked only before a pause or a sleep: the
  /// error to finish with (a stop, a deadline), or none to go on waiting.
  template <class GiveUp>
  next step(process_mutex_guard held, GiveUp give_up) noexcept {
    outcome o = attempt();
    bool unsettled = false;
    if (o == outcome::closed && m_receive_lock != nullptr) {
      // Closed and empty: final once no send can still publish ("The end of a closed
      // queue", shm_queue_layout.hpp); a claimed producers' side does not keep us.
      unsettled = !senders_settled(m_h, *m_send_lock);
      if (!unsettled) {
        o = attempt();
      }
    }
    const bool batch = batch_before_sleep(o);
    held.unlock();
    if (o == outcome::done) {
      return next::finish;
    }
    if (o == outcome::closed && !unsettled) {
      m_error = make_error_code(errc::closed);
      return next::finish;
    }
    if (const std::error_code e = give_up()) {
      m_error = e;
      return next::finish;
    }
    if (unsettled) {
      return next::pause;  // a send is in the middle of its publish: look again
    }
    if (batch) {
      test_hook(detail::queue_step::batching_pause);
      detail::spin_without_looking();  // "Batching" (shm_queue_layout.hpp); then look again
      return next::lock;
    }
    auto value = prepare_sleep(word(), m_seen, m_spun);
    if (!value) {
      return next::lock;
    }
    m_seen = *value;
    return next::sleep;
  }

  /// After next::finish: the call's result (result<void> sending, the size receiving).
  template <class T>
  [[nodiscard]] result<T> result_as() const noexcept {
    if (m_error) {
      return unexpected(m_error);
    }
    if constexpr (std::is_void_v<T>) {
      return {};
    } else {
      return m_size;
    }
  }

 private:
  /// Receives, with the receive lock held, after an attempt: whether to pause before
  /// preparing a sleep ("Batching" in shm_queue_layout.hpp; at most once per call). A
  /// transfer is a receive that found it would wait, or a blocking one: it clears `flowing`.
  bool batch_before_sleep(outcome o) noexcept {
    if (m_receive_lock == nullptr) {
      return false;
    }
    const bool batch = o == outcome::would_wait && m_h->flowing != 0 && !m_paused;
    m_paused = m_paused || batch;
    m_h->flowing = 0;
    return batch;
  }

  outcome attempt() noexcept {
    return m_receive_lock == nullptr ? send_locked(m_h, m_g, m_message, m_seen)
                                     : receive_locked(m_h, m_g, m_buffer, m_size, m_seen);
  }

  queue_header* m_h;
  queue_geometry m_g;  // the handle's validated copy
  const process_mutex* m_send_lock;
  const process_mutex* m_receive_lock = nullptr;  // null: a send
  std::span<const std::byte> m_message;           // sending
  std::span<std::byte> m_buffer;                  // receiving
  std::size_t m_size = 0;                         // received
  std::uint32_t m_seen = 0;                       // the other side's word as seen; then to sleep on
  bool m_spun = false;                            // prepare_sleep's spin, once per call
  bool m_paused = false;                          // the batching pause, once per call
  std::error_code m_error;                        // next::finish: none when done
};

/// send_slow and receive_slow: a transfer's steps, taking the locks and sleeping by
/// awaiting; `token` and the awaiting task's own token cancel it.
template <class T>
task<result<T>> transfer_awaited(transfer t, std::stop_token token) {
  std::stop_token inherited = co_await get_stop_token();
  long long settle_pause = settle_pause_first_ns;
  for (;;) {
    auto g = co_await lock_side(t.header(), t.lock(), t.lock_side(), token);
    if (!g) {
      co_return unexpected(g.error());
    }
    const next n = t.step(std::move(*g), [&] {
      return detail::stop_asked(token, inherited) ? cancelled_error() : std::error_code{};
    });
    if (n == next::finish) {
      co_return t.result_as<T>();
    }
    if (n == next::sleep) {
      auto woke = co_await detail::futex_await(t.word(), t.sleep_value(), token);
      if (!woke) {
        co_return unexpected(woke.error());
      }
    } else if (n == next::pause) {
      auto slept = co_await settle_pause_awaited(t.header(), settle_pause, token);
      if (!slept) {
        co_return unexpected(slept.error());
      }
    }
  }
}

/// send_blocking and receive_blocking: the same steps, blocking the thread until
/// `limit` has passed (timed_out; no stop). The wait for the side's lock is bounded too
/// (lock_side_until); an attempt made with the lock is never refused for the deadline.
template <class T>
result<T> transfer_blocking(transfer t, saturating_duration limit) noexcept {
  const clock::time_point deadline = deadline_after(limit.get());
  const auto past = [deadline] {
    return wait_ns(deadline) == 0 ? make_error_code(errc::timed_out) : std::error_code{};
  };
  long long settle_pause = settle_pause_first_ns;
  for (;;) {
    auto g = lock_side_until(t.header(), t.lock(), t.lock_side(), deadline);
    if (!g) {
      return unexpected(g.error());
    }
    const next n = t.step(std::move(*g), past);
    if (n == next::finish) {
      return t.result_as<T>();
    }
    const long long ns = wait_ns(deadline);
    if (ns == 0) {
      continue;  // the deadline passed since the step: its next look says timed_out
    }
    if (n == next::sleep) {
      // A wait the kernel refuses is returned (as by transfer_awaited), not retried.
      if (auto refused = detail::futex_wait_error(detail::futex_wait_blocking(t.word(), t.sleep_value(), ns))) {
        return unexpected(refused);
      }
    } else if (n == next::pause) {
      settle_pause_blocking(t.header(), settle_pause, ns);
    }
  }
}

}  // namespace

// ---- send ----

result<void> shm_queue::try_send(std::span<const std::byte> message) const noexcept {
  if (auto ok = check_message(m_geometry, message); !ok) {
    return ok;
  }
  auto g = try_lock_or_again(m_header, m_send_lock, side::send);
  if (!g) {
    return unexpected(g.error());
  }
  std::uint32_t sleep_value = 0;
  switch (send_locked(m_header, m_geometry, message, sleep_value)) {
    case outcome::done: return {};
    case outcome::closed: return unexpected(make_error_code(errc::closed));
    case outcome::would_wait: break;
  }
  return unexpected(make_error_code(errc::full));
}

std::optional<shm_queue::send_op::value_type> shm_queue::send_op::try_now() noexcept {
  return unless_would_wait(queue->try_send(message), errc::full);
}

task<shm_queue::send_op::value_type> shm_queue::send_op::wait_slow(std::stop_token token) const {
  return queue->send_slow(message, std::move(token));
}

task<result<void>> shm_queue::send_slow(std::span<const std::byte> message, std::stop_token token) const {
  return transfer_awaited<void>(transfer(m_header, m_geometry, m_send_lock, message), std::move(token));
}

result<void> shm_queue::send_blocking(std::span<const std::byte> message, saturating_duration limit) const noexcept {
  if (auto ok = check_message(m_geometry, message); !ok) {
    return ok;
  }
  return transfer_blocking<void>(transfer(m_header, m_geometry, m_send_lock, message), limit);
}

// ---- receive ----

result<std::size_t> shm_queue::try_receive(std::span<std::byte> buffer) const noexcept {
  if (auto ok = check_buffer(m_geometry, buffer); !ok) {
    return unexpected(ok.error());
  }
  auto g = try_lock_or_again(m_header, m_receive_lock, side::receive);
  if (!g) {
    return unexpected(g.error());
  }
  std::size_t size = 0;
  std::uint32_t sleep_value = 0;
  switch (receive_locked(m_header, m_geometry, buffer, size, sleep_value)) {
    case outcome::done:
      m_header->flowing = 1;  // took a message without waiting ("Batching", shm_queue_layout.hpp)
      return size;
    case outcome::would_wait: return unexpected(make_error_code(errc::empty));
    case outcome::closed: break;
  }
  // Closed and empty: final once no send can still publish ("The end of a closed queue",
  // shm_queue_layout.hpp); empty while one may.
  if (!senders_settled(m_header, m_send_lock)) {
    return unexpected(make_error_code(errc::empty));
  }
  switch (receive_locked(m_header, m_geometry, buffer, size, sleep_value)) {
    case outcome::done: return size;
    case outcome::would_wait: return unexpected(make_error_code(errc::empty));
    case outcome::closed: break;
  }
  return unexpected(make_error_code(errc::closed));
}

std::optional<shm_queue::receive_op::value_type> shm_queue::receive_op::try_now() noexcept {
  return unless_would_wait(queue->try_receive(buffer), errc::empty);
}

task<shm_queue::receive_op::value_type> shm_queue::receive_op::wait_slow(std::stop_token token) const {
  return queue->receive_slow(buffer, std::move(token));
}

task<result<std::size_t>> shm_queue::receive_slow(std::span<std::byte> buffer, std::stop_token token) const {
  return transfer_awaited<std::size_t>(transfer(m_header, m_geometry, m_send_lock, m_receive_lock, buffer),
                                       std::move(token));
}

result<std::size_t> shm_queue::receive_blocking(std::span<std::byte> buffer,
                                                saturating_duration limit) const noexcept {
  if (auto ok = check_buffer(m_geometry, buffer); !ok) {
    return unexpected(ok.error());
  }
  return transfer_blocking<std::size_t>(transfer(m_header, m_geometry, m_send_lock, m_receive_lock, buffer),
                                        limit);
}

}  // namespace corio::ipc
