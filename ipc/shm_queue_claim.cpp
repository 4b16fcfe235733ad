// corio::ipc::shm_queue's claims (shm_queue.hpp, "Claims"): claim_sending /
// claim_receiving and the claimed sides' sends and receives (awaited, try_ and blocking
// forms), which run the locked steps (detail/shm_queue_steps.hpp) with their side's
// lock held for the claim's life, and sleep with it held.
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

/// operation_not_permitted unless the claim's lock is this process's (not released, not
/// inherited by a forked child: the lock is its parent's) and its queue handle is valid
/// (not moved from since: shm_queue.hpp says to move no handle that has a claim).
result<void> check_claim(const process_mutex_guard& guard, const shm_queue* queue) noexcept {
  if (!guard.owns_lock() || queue == nullptr || !queue->valid()) {
    return unexpected(error(std::errc::operation_not_permitted));
  }
  return {};
}

/// What a claimed send or receive does after a step (the lock stays held throughout):
/// return (`error`, none when done), sleep on the other side's word (`seen`), pause
/// (next_settle_pause: a send in the middle of its publish into a closed queue), or attempt
/// again at once.
enum class claim_next { finish, sleep, pause, again };

/// One claimed send between its waits (send_slow, send_blocking): the attempt and what
/// follows. `give_up()` (before a sleep) says why to stop waiting: a stop or a deadline.
struct claimed_send {
  claimed_send(queue_header* header, const queue_geometry& geometry, std::span<const std::byte> m) noexcept
      : h(header), g(geometry), message(m) {}

  queue_header* h;
  const queue_geometry& g;
  std::span<const std::byte> message;
  std::uint32_t seen = 0;  // the consumed word as seen; then to sleep on
  bool spun = false;       // prepare_sleep's spin, once per call
  std::error_code error;

  template <class GiveUp>
  claim_next step(GiveUp give_up) noexcept {
    switch (send_locked(h, g, message, seen)) {
      case outcome::done: return claim_next::finish;
      case outcome::closed: error = make_error_code(errc::closed); return claim_next::finish;
      case outcome::would_wait: break;
    }
    if (const std::error_code e = give_up()) {
      error = e;
      return claim_next::finish;
    }
    auto value = prepare_sleep(h->consumed, seen, spun);
    if (!value) {
      return claim_next::again;
    }
    seen = *value;
    return claim_next::sleep;
  }
};

/// One claimed receive between its waits (receive_slow, receive_blocking): the attempt;
/// on closed, final once the senders are settled, else a pause; else the batching pause
/// once, then a sleep on the published word.
struct claimed_receive {
  claimed_receive(queue_header* header, const queue_geometry& geometry, const process_mutex& senders,
                  std::span<std::byte> b) noexcept
      : h(header), g(geometry), send_lock(senders), buffer(b) {}

  queue_header* h;
  const queue_geometry& g;
  const process_mutex& send_lock;
  std::span<std::byte> buffer;
  std::size_t size = 0;
  std::uint32_t seen = 0;  // the published word as seen; then to sleep on
  bool spun = false;       // prepare_sleep's spin, once per call
  bool paused = false;     // the batching pause, once per call
  std::error_code error;

  template <class GiveUp>
  claim_next step(GiveUp give_up) noexcept {
    const outcome o = receive_locked(h, g, buffer, size, seen);
    const bool batch = o == outcome::would_wait && h->flowing != 0 && !paused;
    paused = paused || batch;
    h->flowing = 0;
    if (o == outcome::done) {
      return claim_next::finish;
    }
    if (o == outcome::closed && senders_settled(h, send_lock)) {
      if (receive_locked(h, g, buffer, size, seen) != outcome::done) {
        error = make_error_code(errc::closed);
      }
      return claim_next::finish;
    }
    if (const std::error_code e = give_up()) {
      error = e;
      return claim_next::finish;
    }
    if (o == outcome::closed) {
      return claim_next::pause;
    }
    if (batch) {
      test_hook(detail::queue_step::batching_pause);
      detail::spin_without_looking();
      return claim_next::again;
    }
    auto value = prepare_sleep(h->published, seen, spun);
    if (!value) {
      return claim_next::again;
    }
    seen = *value;
    return claim_next::sleep;
  }
};

/// The give_up() of a blocking claimed call: timed_out once `deadline` has passed.
auto past(clock::time_point deadline) noexcept {
  return [deadline] { return wait_ns(deadline) == 0 ? make_error_code(errc::timed_out) : std::error_code{}; };
}

/// The give_up() of an awaited claimed call: operation_canceled on a stop of either token.
auto stopped(const std::stop_token& token, const std::stop_token& inherited) noexcept {
  return [&token, &inherited] { return detail::stop_asked(token, inherited) ? cancelled_error() : std::error_code{}; };
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

result<shm_queue_sender> shm_queue::claim_sending_blocking(saturating_duration limit) const noexcept {
  auto g = lock_side_until(m_header, m_send_lock, side::send, deadline_after(limit.get()));
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

result<shm_queue_receiver> shm_queue::claim_receiving_blocking(saturating_duration limit) const noexcept {
  auto g = lock_side_until(m_header, m_receive_lock, side::receive, deadline_after(limit.get()));
  if (!g) {
    return unexpected(g.error());
  }
  return shm_queue_receiver(this, std::move(*g));
}

result<void> shm_queue_sender::try_send(std::span<const std::byte> message) const noexcept {
  if (auto ok = check_claim(m_guard, m_queue); !ok) {
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
  if (auto ok = check_claim(m_guard, m_queue); !ok) {
    co_return ok;
  }
  if (auto ok = check_message(m_queue->m_geometry, message); !ok) {
    co_return ok;
  }
  std::stop_token inherited = co_await get_stop_token();
  claimed_send s{m_queue->m_header, m_queue->m_geometry, message};
  for (;;) {
    const claim_next n = s.step(stopped(token, inherited));
    if (n == claim_next::finish) {
      co_return s.error ? result<void>(unexpected(s.error)) : result<void>{};
    }
    if (n == claim_next::sleep) {
      auto woke = co_await detail::futex_await(s.h->consumed, s.seen, token);
      if (!woke) {
        co_return unexpected(woke.error());
      }
    }
  }
}

result<void> shm_queue_sender::send_blocking(std::span<const std::byte> message,
                                             saturating_duration limit) const noexcept {
  if (auto ok = check_claim(m_guard, m_queue); !ok) {
    return ok;
  }
  if (auto ok = check_message(m_queue->m_geometry, message); !ok) {
    return ok;
  }
  const clock::time_point deadline = deadline_after(limit.get());
  claimed_send s{m_queue->m_header, m_queue->m_geometry, message};
  for (;;) {
    const claim_next n = s.step(past(deadline));
    if (n == claim_next::finish) {
      return s.error ? result<void>(unexpected(s.error)) : result<void>{};
    }
    if (n == claim_next::sleep) {
      const long long ns = wait_ns(deadline);
      if (ns == 0) {
        continue;  // the deadline passed since the step: its next look says timed_out
      }
      // A wait the kernel refuses is returned (as by the task form), not retried.
      const int rc = detail::futex_wait_blocking(s.h->consumed, s.seen, ns);
      if (auto refused = detail::futex_wait_error(rc)) {
        return unexpected(refused);
      }
    }
  }
}

void shm_queue_sender::release() noexcept {
  m_guard.unlock();
  m_queue = nullptr;
}

result<std::size_t> shm_queue_receiver::try_receive(std::span<std::byte> buffer) const noexcept {
  if (auto ok = check_claim(m_guard, m_queue); !ok) {
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

// With the consumers' lock held throughout: claimed_receive's steps, pausing and
// sleeping by awaiting.
task<result<std::size_t>> shm_queue_receiver::receive_slow(std::span<std::byte> buffer,
                                                           std::stop_token token) const {
  if (auto ok = check_claim(m_guard, m_queue); !ok) {
    co_return unexpected(ok.error());
  }
  if (auto ok = check_buffer(m_queue->m_geometry, buffer); !ok) {
    co_return unexpected(ok.error());
  }
  std::stop_token inherited = co_await get_stop_token();
  claimed_receive r{m_queue->m_header, m_queue->m_geometry, m_queue->m_send_lock, buffer};
  long long settle_pause = settle_pause_first_ns;
  for (;;) {
    const claim_next n = r.step(stopped(token, inherited));
    if (n == claim_next::finish) {
      co_return r.error ? result<std::size_t>(unexpected(r.error)) : result<std::size_t>(r.size);
    }
    if (n == claim_next::pause) {
      auto slept = co_await settle_pause_awaited(r.h, settle_pause, token);
      if (!slept) {
        co_return unexpected(slept.error());
      }
    } else if (n == claim_next::sleep) {
      auto woke = co_await detail::futex_await(r.h->published, r.seen, token);
      if (!woke) {
        co_return unexpected(woke.error());
      }
    }
  }
}

result<std::size_t> shm_queue_receiver::receive_blocking(std::span<std::byte> buffer,
                                                         saturating_duration limit) const noexcept {
  if (auto ok = check_claim(m_guard, m_queue); !ok) {
    return unexpected(ok.error());
  }
  if (auto ok = check_buffer(m_queue->m_geometry, buffer); !ok) {
    return unexpected(ok.error());
  }
  const clock::time_point deadline = deadline_after(limit.get());
  claimed_receive r{m_queue->m_header, m_queue->m_geometry, m_queue->m_send_lock, buffer};
  long long settle_pause = settle_pause_first_ns;
  for (;;) {
    const claim_next n = r.step(past(deadline));
    if (n == claim_next::finish) {
      return r.error ? result<std::size_t>(unexpected(r.error)) : result<std::size_t>(r.size);
    }
    const long long ns = wait_ns(deadline);
    if (ns == 0) {
      continue;  // the deadline passed since the step: its next look says timed_out
    }
    if (n == claim_next::pause) {
      settle_pause_blocking(r.h, settle_pause, ns);
    } else if (n == claim_next::sleep) {
      // A wait the kernel refuses is returned (as by the task form), not retried.
      if (auto refused = detail::futex_wait_error(detail::futex_wait_blocking(r.h->published, r.seen, ns))) {
        return unexpected(refused);
      }
    }
  }
}

void shm_queue_receiver::release() noexcept {
  m_guard.unlock();
  m_queue = nullptr;
}

}  // namespace corio::ipc
