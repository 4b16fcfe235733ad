// corio::ipc::shm_queue's claims (shm_queue.hpp, "Claims"): claim_sending /
// claim_receiving and the claimed sides' sends and receives, which run the locked steps
// (detail/shm_queue_steps.hpp) with their side's lock held for the claim's life, and
// sleep with it held.
#include <corio/ipc/shm_queue.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <utility>

#include <corio/ipc/detail/shm_queue_layout.hpp>
#include <corio/ipc/detail/shm_queue_steps.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc {

using namespace detail::shm;

namespace {

/// A claim's lock is this process's: false for a released claim or one a forked child
/// inherited (the lock is its parent's).
result<void> check_claim(const process_mutex_guard& guard) noexcept {
  if (!guard.owns_lock()) {
    return unexpected(error(std::errc::operation_not_permitted));
  }
  return {};
}

}  // namespace

task<result<shm_queue_sender>> shm_queue::claim_sending(std::stop_token token) const {
  auto g = co_await lock_side(m_header, m_send_lock, side::send, std::move(token));
  if (!g) {
    co_return unexpected(g.error());
  }
  co_return shm_queue_sender(this, std::move(*g));
}

result<shm_queue_sender> shm_queue::try_claim_sending() const noexcept {
  auto g = try_lock_or_again(m_header, m_send_lock, side::send);
  if (!g) {
    return unexpected(g.error());
  }
  return shm_queue_sender(this, std::move(*g));
}

task<result<shm_queue_receiver>> shm_queue::claim_receiving(std::stop_token token) const {
  auto g = co_await lock_side(m_header, m_receive_lock, side::receive, std::move(token));
  if (!g) {
    co_return unexpected(g.error());
  }
  co_return shm_queue_receiver(this, std::move(*g));
}

result<shm_queue_receiver> shm_queue::try_claim_receiving() const noexcept {
  auto g = try_lock_or_again(m_header, m_receive_lock, side::receive);
  if (!g) {
    return unexpected(g.error());
  }
  return shm_queue_receiver(this, std::move(*g));
}

result<void> shm_queue_sender::try_send(std::span<const std::byte> message) const noexcept {
  if (auto ok = check_claim(m_guard); !ok) {
    return ok;
  }
  if (auto ok = check_message(m_queue->m_geometry, message); !ok) {
    return ok;
  }
  std::uint32_t sleep_value = 0;
  switch (send_locked(m_queue->m_header, m_queue->m_geometry, message, sleep_value)) {
    case outcome::done: return {};
    case outcome::closed: return unexpected(make_error_code(errc::closed));
    case outcome::would_wait: break;
  }
  return unexpected(make_error_code(errc::full));
}

std::optional<shm_queue_sender::send_op::value_type> shm_queue_sender::send_op::try_now() noexcept {
  return unless_would_wait(sender->try_send(message), errc::full);
}

task<shm_queue_sender::send_op::value_type> shm_queue_sender::send_op::wait_slow(std::stop_token token) const {
  return sender->send_slow(message, std::move(token));
}

// With the producers' lock held throughout: attempt, else sleep on the consumed word
// until a consumer frees a slot (as a transfer does, without dropping the lock).
task<result<void>> shm_queue_sender::send_slow(std::span<const std::byte> message, std::stop_token token) const {
  if (auto ok = check_claim(m_guard); !ok) {
    co_return ok;
  }
  if (auto ok = check_message(m_queue->m_geometry, message); !ok) {
    co_return ok;
  }
  std::stop_token inherited = co_await get_stop_token();
  queue_header* h = m_queue->m_header;
  bool spun = false;
  for (;;) {
    std::uint32_t seen = 0;
    switch (send_locked(h, m_queue->m_geometry, message, seen)) {
      case outcome::done: co_return result<void>{};
      case outcome::closed: co_return unexpected(make_error_code(errc::closed));
      case outcome::would_wait: break;
    }
    if (detail::stop_asked(token, inherited)) {
      co_return unexpected(cancelled_error());
    }
    auto value = prepare_sleep(h->consumed, seen, spun);
    if (!value) {
      continue;
    }
    auto woke = co_await detail::futex_await(h->consumed, *value, token);
    if (!woke) {
      co_return unexpected(woke.error());
    }
  }
}

void shm_queue_sender::release() noexcept {
  m_guard.unlock();
  m_queue = nullptr;
}

result<std::size_t> shm_queue_receiver::try_receive(std::span<std::byte> buffer) const noexcept {
  if (auto ok = check_claim(m_guard); !ok) {
    return unexpected(ok.error());
  }
  const queue_geometry& g = m_queue->m_geometry;
  if (auto ok = check_buffer(g, buffer); !ok) {
    return unexpected(ok.error());
  }
  queue_header* h = m_queue->m_header;
  std::size_t size = 0;
  std::uint32_t sleep_value = 0;
  switch (receive_locked(h, g, buffer, size, sleep_value)) {
    case outcome::done:
      h->flowing = 1;  // as shm_queue::try_receive ("Batching", shm_queue_layout.hpp)
      return size;
    case outcome::would_wait: return unexpected(make_error_code(errc::empty));
    case outcome::closed: break;
  }
  // Closed and empty: final once no send can still publish, whoever holds the producers'
  // side (as shm_queue::try_receive).
  if (!senders_settled(h, m_queue->m_send_lock)) {
    return unexpected(make_error_code(errc::empty));
  }
  switch (receive_locked(h, g, buffer, size, sleep_value)) {
    case outcome::done: return size;
    case outcome::would_wait: return unexpected(make_error_code(errc::empty));
    case outcome::closed: break;
  }
  return unexpected(make_error_code(errc::closed));
}

std::optional<shm_queue_receiver::receive_op::value_type> shm_queue_receiver::receive_op::try_now() noexcept {
  return unless_would_wait(receiver->try_receive(buffer), errc::empty);
}

task<shm_queue_receiver::receive_op::value_type> shm_queue_receiver::receive_op::wait_slow(
    std::stop_token token) const {
  return receiver->receive_slow(buffer, std::move(token));
}

// With the consumers' lock held throughout: attempt; on closed, final once the senders
// are settled (else pause and look again); else the batching pause once, then sleep on
// the published word.
task<result<std::size_t>> shm_queue_receiver::receive_slow(std::span<std::byte> buffer,
                                                           std::stop_token token) const {
  if (auto ok = check_claim(m_guard); !ok) {
    co_return unexpected(ok.error());
  }
  const queue_geometry& g = m_queue->m_geometry;
  if (auto ok = check_buffer(g, buffer); !ok) {
    co_return unexpected(ok.error());
  }
  std::stop_token inherited = co_await get_stop_token();
  queue_header* h = m_queue->m_header;
  bool spun = false;
  bool paused = false;
  for (;;) {
    std::size_t size = 0;
    std::uint32_t seen = 0;
    const outcome o = receive_locked(h, g, buffer, size, seen);
    const bool batch = o == outcome::would_wait && h->flowing != 0 && !paused;
    paused = paused || batch;
    h->flowing = 0;
    if (o == outcome::done) {
      co_return size;
    }
    if (o == outcome::closed) {
      if (senders_settled(h, m_queue->m_send_lock)) {
        const outcome last = receive_locked(h, g, buffer, size, seen);
        co_return last == outcome::done ? result<std::size_t>(size) : unexpected(make_error_code(errc::closed));
      }
      auto slept = co_await sleep_for(std::chrono::nanoseconds(settle_pause_ns), token);
      if (!slept) {
        co_return unexpected(slept.error());
      }
      continue;
    }
    if (detail::stop_asked(token, inherited)) {
      co_return unexpected(cancelled_error());
    }
    if (batch) {
      test_hook(detail::queue_step::batching_pause);
      detail::spin_without_looking();
      continue;
    }
    auto value = prepare_sleep(h->published, seen, spun);
    if (!value) {
      continue;
    }
    auto woke = co_await detail::futex_await(h->published, *value, token);
    if (!woke) {
      co_return unexpected(woke.error());
    }
  }
}

void shm_queue_receiver::release() noexcept {
  m_guard.unlock();
  m_queue = nullptr;
}

}  // namespace corio::ipc
