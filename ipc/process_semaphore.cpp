// corio::ipc::process_semaphore and the count-word protocol it shares with the
// auto-reset process_event (see process_semaphore.hpp).
//
// Word: count * 2 + waiters bit (bit 0). Take: CAS v -> v - 2 while v >= 2 (the bit is
// kept). A taker that finds the count zero sets the bit (CAS 0 -> 1) and sleeps on the
// value 1 — the only value anyone sleeps on. Give: CAS v -> v + 2n while the bit is
// clear; with the bit set, FUTEX_WAKE_OP adds 2n and wakes n in one syscall (the bit
// stays: more sleepers may remain). If that woke fewer than n, every sleeper queued
// before the add was woken, and the bit is dropped by a second FUTEX_WAKE_OP that clears
// it and wakes whoever queued since, in one step (drop_stale_waiters_bit: a CAS there
// lost sleepers to an ABA race). A stale bit costs one syscall more, once.
#include <corio/ipc/process_semaphore.hpp>

#include <algorithm>
#include <atomic>
#include <climits>
#include <new>

#include <corio/ipc/detail/stale_waiters.hpp>

namespace corio::ipc {

namespace detail {

namespace {

constexpr std::uint32_t waiters_bit = 1;

/// Sets the waiters bit on an empty word; false if the count moved (take again).
bool mark_empty_waiting(shared_word& word) noexcept {
  std::uint32_t expected = 0;
  // relaxed: the bit publishes nothing; the futex wait compares the value itself.
  return word.compare_exchange_strong(expected, waiters_bit, std::memory_order_relaxed) || expected == waiters_bit;
}

}  // namespace

bool count_try_take(shared_word& word) noexcept {
  // relaxed first look; the CAS below is the acquire.
  std::uint32_t v = word.load(std::memory_order_relaxed);
  while (v >= 2) {
    // acquire: pairs with the giver's release (CAS or the release RMW before its
    // FUTEX_WAKE_OP): what it wrote before giving is visible to us.
    if (word.compare_exchange_weak(v, v - 2, std::memory_order_acquire, std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

task<result<void>> count_take_slow(shared_word& word, std::stop_token token) {
  std::stop_token inherited = co_await get_stop_token();
  bool spun = false;
  for (;;) {
    if (count_try_take(word)) {
      co_return result<void>{};
    }
    if (stop_asked(token, inherited)) {
      co_return unexpected(cancelled_error());
    }
    if (!spun) {
      spun = true;
      if (spin_while_equal(word, word.load(std::memory_order_relaxed))) {
        continue;
      }
    }
    if (!mark_empty_waiting(word)) {
      continue;
    }
    auto woke = co_await futex_await(word, waiters_bit, token);
    if (!woke) {
      co_return unexpected(woke.error());  // cancelled: no wake-up was consumed
    }
  }
}

result<void> count_take_blocking(shared_word& word, clock::time_point deadline) noexcept {
  for (bool spun = false; !count_try_take(word);) {
    if (deadline_passed(deadline)) {
      // Nothing taken. A wake-up we used only to find the count taken again leaves the
      // bit as it was: a give that woke us kept it set, so later gives still wake.
      return unexpected(make_error_code(errc::timed_out));
    }
    if (!spun) {
      spun = true;
      if (spin_while_equal(word, word.load(std::memory_order_relaxed))) {
        continue;
      }
    }
    if (mark_empty_waiting(word)) {
      // Woken, spurious, EINTR or the deadline: look again (the loop decides). A wait the
      // kernel refuses is returned, not retried at full speed.
      if (auto refused = futex_wait_error(futex_wait_until(word, waiters_bit, deadline))) {
        return unexpected(refused);
      }
    }
  }
  return {};
}

}  // namespace detail

result<process_semaphore> process_semaphore::construct(std::span<std::byte> region, std::size_t offset,
                                                       std::uint32_t initial, std::uint32_t maximum) noexcept {
  if (maximum == 0 || maximum > max_count || initial > maximum) {
    return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  auto at = detail::locate<detail::semaphore_state>(region, offset);
  if (!at) {
    return unexpected(at.error());
  }
  auto* s = ::new (*at) detail::semaphore_state{};
  s->word.store(initial * 2, std::memory_order_relaxed);  // published by publish()'s release
  s->max = maximum;
  detail::publish(s, detail::shared_type::semaphore);
  return process_semaphore(s);
}

result<process_semaphore> process_semaphore::construct(memory_map& map, std::size_t offset, std::uint32_t initial,
                                                       std::uint32_t maximum) noexcept {
  auto bytes = detail::writable_bytes(map);
  if (!bytes) {
    return unexpected(bytes.error());
  }
  return construct(*bytes, offset, initial, maximum);
}

result<process_semaphore> process_semaphore::attach(std::span<std::byte> region, std::size_t offset) noexcept {
  auto s = detail::recognise<detail::semaphore_state>(region, offset, detail::shared_type::semaphore);
  if (!s) {
    return unexpected(s.error());
  }
  return process_semaphore(*s);
}

result<process_semaphore> process_semaphore::attach(memory_map& map, std::size_t offset) noexcept {
  auto bytes = detail::writable_bytes(map);
  if (!bytes) {
    return unexpected(bytes.error());
  }
  return attach(*bytes, offset);
}

std::optional<process_semaphore::acquire_op::value_type> process_semaphore::acquire_op::try_now() noexcept {
  if (detail::count_try_take(state->word)) {
    return value_type{};
  }
  return std::nullopt;
}

task<process_semaphore::acquire_op::value_type> process_semaphore::acquire_op::wait_slow(std::stop_token token) const {
  return detail::count_take_slow(state->word, std::move(token));
}

bool process_semaphore::try_acquire() const noexcept { return detail::count_try_take(m_state->word); }

result<void> process_semaphore::acquire_blocking(saturating_duration limit) const noexcept {
  return detail::count_take_blocking(m_state->word, deadline_after(limit.get()));
}

result<void> process_semaphore::release(std::uint32_t n) const noexcept {
  // One FUTEX_WAKE_OP adds at most 1023 units (its operand is 11 bits plus sign).
  constexpr std::uint32_t chunk = 1023;
  // The maximum is shared memory a peer could have garbled: never above max_count, so
  // the word (count * 2 + bit) cannot wrap. relaxed: construct() wrote it before the
  // layout word (release), which attach() read (acquire).
  const std::uint32_t max =
      std::min(std::atomic_ref<std::uint32_t>(m_state->max).load(std::memory_order_relaxed), max_count);
  bool added = false;
  while (n > 0) {
    const std::uint32_t step = n < chunk ? n : chunk;
    std::uint32_t v = m_state->word.load(std::memory_order_relaxed);
    for (;;) {
      // Until the first chunk is in, all of n is checked (with each fresh look at the
      // count): a refusal then adds nothing, as promised. A refusal of a later chunk
      // would leave the earlier ones added, so those are checked only against max_count
      // (the word must not wrap): a release racing this one may make it overshoot the
      // maximum, as the header says of concurrent releases.
      const std::uint32_t count = v >> 1;
      const std::uint32_t limit = added ? max_count : max;
      if (count > limit || (added ? step : n) > limit - count) {
        return unexpected(std::make_error_code(std::errc::value_too_large));
      }
      if ((v & 1) == 0) {
        // release: pairs with the taker's acquire CAS.
        if (m_state->word.compare_exchange_weak(v, v + 2 * step, std::memory_order_release,
                                                std::memory_order_relaxed)) {
          break;
        }
        continue;
      }
      // Sleepers: add and wake in one syscall. The release RMW first orders our writes
      // before the kernel's change in the C++ model (and for ThreadSanitizer).
      m_state->word.fetch_add(0, std::memory_order_release);
      const int woken = detail::futex_wake_op(m_state->word, detail::word_op::add, 2 * step, static_cast<int>(step));
      if (woken < static_cast<int>(step)) {
        // Every sleeper queued at the add was woken: drop the bit (see the top).
        detail::drop_stale_waiters_bit(m_state->word, 1);
      }
      break;
    }
    added = true;
    n -= step;
  }
  return {};
}

std::uint32_t process_semaphore::value() const noexcept { return m_state->word.load(std::memory_order_relaxed) >> 1; }

}  // namespace corio::ipc
