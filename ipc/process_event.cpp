// corio::ipc::process_event (see process_event.hpp).
//
// Word: set bit (2) | waiters bit (1). Waiters sleep only on the value 1 (not set,
// waiters). set() is idempotent (an OR), so concurrent setters cannot corrupt the word.
// Auto reset is the count protocol of process_semaphore.cpp with a count of at most 1
// (the set bit is "count 1"), except that set() ORs instead of adding.
#include <corio/ipc/process_event.hpp>

#include <climits>
#include <new>

#include <corio/ipc/detail/stale_waiters.hpp>
#include <corio/ipc/process_semaphore.hpp>

namespace corio::ipc {

namespace {

constexpr std::uint32_t waiters_bit = 1;
constexpr std::uint32_t set_bit = 2;

bool manual_is_set(const detail::event_state* s) noexcept {
  // acquire: pairs with set()'s release; what the setter wrote before set() is visible.
  return (s->word.load(std::memory_order_acquire) & set_bit) != 0;
}

/// Sets the waiters bit on an unset word; false if the event was set meanwhile.
bool mark_unset_waiting(detail::event_state* s) noexcept {
  std::uint32_t v = 0;
  // relaxed: the bit publishes nothing; the futex wait compares the value itself.
  return s->word.compare_exchange_strong(v, waiters_bit, std::memory_order_relaxed) || v == waiters_bit;
}

}  // namespace

result<process_event> process_event::construct(std::span<std::byte> region, std::size_t offset, event_mode mode,
                                               bool initially_set) noexcept {
  if (mode != event_mode::manual_reset && mode != event_mode::auto_reset) {
    return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  auto at = detail::locate<detail::event_state>(region, offset);
  if (!at) {
    return unexpected(at.error());
  }
  auto* s = ::new (*at) detail::event_state{};
  s->word.store(initially_set ? set_bit : 0, std::memory_order_relaxed);  // published by publish()
  s->mode = mode;
  detail::publish(s, detail::shared_type::event);
  return process_event(s);
}

result<process_event> process_event::construct(memory_map& map, std::size_t offset, event_mode mode,
                                               bool initially_set) noexcept {
  auto bytes = detail::writable_bytes(map);
  if (!bytes) {
    return unexpected(bytes.error());
  }
  return construct(*bytes, offset, mode, initially_set);
}

result<process_event> process_event::attach(std::span<std::byte> region, std::size_t offset) noexcept {
  auto s = detail::recognise<detail::event_state>(region, offset, detail::shared_type::event);
  if (!s) {
    return unexpected(s.error());
  }
  const auto mode = (*s)->mode;
  if (mode != event_mode::manual_reset && mode != event_mode::auto_reset) {
    return unexpected(std::make_error_code(std::errc::wrong_protocol_type));
  }
  return process_event(*s);
}

result<process_event> process_event::attach(memory_map& map, std::size_t offset) noexcept {
  auto bytes = detail::writable_bytes(map);
  if (!bytes) {
    return unexpected(bytes.error());
  }
  return attach(*bytes, offset);
}

bool process_event::try_wait() const noexcept {
  if (m_state->mode == event_mode::auto_reset) {
    return detail::count_try_take(m_state->word);
  }
  return manual_is_set(m_state);
}

std::optional<process_event::wait_op::value_type> process_event::wait_op::try_now() noexcept {
  if (process_event(state).try_wait()) {
    return value_type{};
  }
  return std::nullopt;
}

task<process_event::wait_op::value_type> process_event::wait_op::wait_slow(std::stop_token token) const {
  detail::event_state* s = state;
  if (s->mode == event_mode::auto_reset) {
    co_return co_await detail::count_take_slow(s->word, std::move(token));
  }
  std::stop_token inherited = co_await get_stop_token();
  bool spun = false;
  for (;;) {
    if (manual_is_set(s)) {
      co_return result<void>{};
    }
    if (detail::stop_asked(token, inherited)) {
      co_return unexpected(cancelled_error());
    }
    if (!spun) {
      spun = true;
      if (detail::spin_while_equal(s->word, s->word.load(std::memory_order_relaxed))) {
        continue;
      }
    }
    if (!mark_unset_waiting(s)) {
      continue;
    }
    auto woke = co_await detail::futex_await(s->word, waiters_bit, token);
    if (!woke) {
      co_return unexpected(woke.error());
    }
  }
}

result<void> process_event::wait_blocking(saturating_duration limit) const noexcept {
  const clock::time_point deadline = deadline_after(limit.get());
  if (m_state->mode == event_mode::auto_reset) {
    return detail::count_take_blocking(m_state->word, deadline);
  }
  for (bool spun = false; !manual_is_set(m_state);) {
    if (detail::deadline_passed(deadline)) {
      return unexpected(make_error_code(errc::timed_out));
    }
    if (!spun) {
      spun = true;
      if (detail::spin_while_equal(m_state->word, m_state->word.load(std::memory_order_relaxed))) {
        continue;
      }
    }
    if (mark_unset_waiting(m_state)) {
      // Woken, spurious, EINTR or the deadline: look again (the loop decides). A wait the
      // kernel refuses is returned, not retried at full speed.
      if (auto refused = detail::futex_wait_error(detail::futex_wait_until(m_state->word, waiters_bit, deadline))) {
        return unexpected(refused);
      }
    }
  }
  return {};
}

void process_event::set() const noexcept {
  detail::shared_word& word = m_state->word;
  std::uint32_t v = word.load(std::memory_order_relaxed);
  for (;;) {
    if ((v & set_bit) != 0) {
      // Already set. release RMW: our writes before set() still happen before a waiter
      // that sees the bit afterwards.
      word.fetch_or(0, std::memory_order_release);
      return;
    }
    if ((v & waiters_bit) == 0) {
      // release: pairs with the waiter's acquire (load, or the auto-reset take CAS).
      if (word.compare_exchange_weak(v, v | set_bit, std::memory_order_release, std::memory_order_relaxed)) {
        return;
      }
      continue;
    }
    break;
  }
  // Sleepers: set and wake in one syscall (see the header). The release RMW orders our
  // writes before the kernel's change.
  word.fetch_or(0, std::memory_order_release);
  const bool manual = m_state->mode == event_mode::manual_reset;
  const int woken = detail::futex_wake_op(word, detail::word_op::bit_or, set_bit, manual ? INT_MAX : 1);
  if (manual) {
    // Every queued sleeper was woken, and nobody sleeps on a set value: drop the waiters
    // bit. relaxed: it publishes nothing. A CAS is safe here (unlike the auto-reset case
    // below): the word can only come back to set | waiters through another set() that
    // finds the bit and wakes all, so the bit never goes under a sleeper.
    std::uint32_t expected = set_bit | waiters_bit;
    word.compare_exchange_strong(expected, set_bit, std::memory_order_relaxed);
  } else if (woken == 0) {
    // Nobody was asleep at the set: the bit is stale. Dropped by the kernel together with
    // a wake of whoever queued since (why not a CAS: drop_stale_waiters_bit, process_sync.cpp).
    detail::drop_stale_waiters_bit(word, waiters_bit);
  }
}

void process_event::reset() const noexcept {
  // relaxed: resetting publishes nothing; a waiter that saw the set bit already passed.
  m_state->word.fetch_and(~set_bit, std::memory_order_relaxed);
}

bool process_event::is_set() const noexcept { return (m_state->word.load(std::memory_order_relaxed) & set_bit) != 0; }

}  // namespace corio::ipc
