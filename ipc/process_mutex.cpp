// corio::ipc::process_mutex: placement, the lock word protocol and owner-death
// recovery (see process_mutex.hpp; the robust list is in process_sync.cpp).
//
// Word (robust futex layout): owner id in the low 30 bits (0 = free), owner_died
// (bit 30: set by the kernel when the holder's process dies, kept while recovering),
// waiters (bit 31: some task or thread may sleep on the word; set by a waiter before it
// sleeps, kept by unlock when it wakes one, cleared when a wake found nobody — by
// FUTEX_WAKE_OP, which also wakes whoever queued since: see unlock()).
#include <corio/ipc/process_mutex.hpp>

#include <climits>
#include <new>

#include <corio/ipc/detail/stale_waiters.hpp>

namespace corio::ipc {

namespace {

using detail::owner_died;
using detail::owner_mask;
using detail::owner_waiters;

enum class attempt { acquired, busy, owner_dead };

/// One try at the word. `mark_waiters`: take it with the waiters bit set (after having
/// slept: others may sleep too). On busy, `seen` is the value that blocked us.
attempt try_acquire(detail::mutex_state* s, std::uint32_t id, bool mark_waiters, std::uint32_t& seen) noexcept {
  // relaxed: only a first look; the CAS in robust_acquire is the acquire.
  std::uint32_t v = s->lock.word.load(std::memory_order_relaxed);
  for (;;) {
    if ((v & owner_mask) != 0) {
      seen = v;
      return attempt::busy;
    }
    if ((v & owner_died) != 0) {
      if ((v & owner_waiters) != 0) {
        // The kernel woke one waiter at the death; let every sleeper learn it too. One
        // syscall that clears the bit and wakes all: nobody is left asleep on it.
        detail::futex_wake_op(s->lock.word, detail::word_op::and_not, owner_waiters, INT_MAX);
      }
      return attempt::owner_dead;
    }
    const std::uint32_t desired = id | (v & owner_waiters) | (mark_waiters ? owner_waiters : 0);
    if (detail::robust_acquire(s->lock, v, desired)) {
      return attempt::acquired;
    }
  }
}

/// Sets the waiters bit on a held word; false if the word changed (try again).
bool mark_waiting(detail::mutex_state* s, std::uint32_t& seen) noexcept {
  if ((seen & owner_waiters) != 0) {
    return true;
  }
  // relaxed: publishes nothing; the futex wait that follows compares the value itself.
  if (s->lock.word.compare_exchange_strong(seen, seen | owner_waiters, std::memory_order_relaxed)) {
    seen |= owner_waiters;
    return true;
  }
  return false;
}

/// Spins briefly while the holder keeps the word unchanged (critical sections are short;
/// the holder usually runs on another CPU): true if it changed.
bool spin_until_changed(detail::mutex_state* s, std::uint32_t seen) noexcept {
  return detail::spin_while_equal(s->lock.word, seen);
}

result<process_mutex_guard> owner_dead_error() noexcept {
  return unexpected(std::make_error_code(std::errc::owner_dead));
}

}  // namespace

process_mutex_guard::process_mutex_guard(detail::mutex_state* s, bool recovering) noexcept
    : m_state(s), m_generation(detail::owner_generation()), m_recovering(recovering) {}

bool process_mutex_guard::owns_lock() const noexcept {
  return m_state != nullptr && m_generation == detail::owner_generation();
}

void process_mutex_guard::unlock() noexcept {
  detail::mutex_state* s = std::exchange(m_state, nullptr);
  if (s == nullptr) {
    return;
  }
  const std::uint32_t released = m_recovering && !m_consistent ? owner_died : 0;
  m_recovering = m_consistent = false;
  if (detail::robust_release(s->lock, released, m_generation) == 0) {
    // We woke nobody: drop the waiters bit so the next unlock can skip the syscall. Not by
    // a CAS on the free value we left: others may lock, sleep and unlock meanwhile, and a
    // woken waiter may give up instead of setting the bit again (killed before it retries,
    // or cancelled after a retry that found the mutex held again), so the word can be that
    // value again with a sleeper queued (ABA), and a CAS would strand it.
    // drop_stale_waiters_bit clears the bit and wakes whoever is queued in one FUTEX_WAKE_OP.
    // (-2, a guard inherited through fork, did nothing.)
    detail::drop_stale_waiters_bit(s->lock.word, owner_waiters);
  }
}

result<process_mutex> process_mutex::construct(std::span<std::byte> region, std::size_t offset) noexcept {
  auto at = detail::locate<detail::mutex_state>(region, offset);
  if (!at) {
    return unexpected(at.error());
  }
  auto* s = ::new (*at) detail::mutex_state{};
  detail::publish(s, detail::shared_type::mutex);
  return process_mutex(s);
}

result<process_mutex> process_mutex::construct(memory_map& map, std::size_t offset) noexcept {
  auto bytes = detail::writable_bytes(map);
  if (!bytes) {
    return unexpected(bytes.error());
  }
  return construct(*bytes, offset);
}

result<process_mutex> process_mutex::attach(std::span<std::byte> region, std::size_t offset) noexcept {
  auto s = detail::recognise<detail::mutex_state>(region, offset, detail::shared_type::mutex);
  if (!s) {
    return unexpected(s.error());
  }
  return process_mutex(*s);
}

result<process_mutex> process_mutex::attach(memory_map& map, std::size_t offset) noexcept {
  auto bytes = detail::writable_bytes(map);
  if (!bytes) {
    return unexpected(bytes.error());
  }
  return attach(*bytes, offset);
}

std::optional<process_mutex::lock_op::value_type> process_mutex::lock_op::try_now() noexcept {
  auto id = detail::process_owner_id();
  if (!id) {
    return value_type(unexpected(id.error()));
  }
  std::uint32_t seen = 0;
  switch (try_acquire(state, *id, false, seen)) {
    case attempt::acquired: return value_type(process_mutex_guard(state));
    case attempt::owner_dead: return value_type(owner_dead_error());
    case attempt::busy: break;
  }
  return std::nullopt;
}

task<process_mutex::lock_op::value_type> process_mutex::lock_op::wait_slow(std::stop_token token) const {
  detail::mutex_state* s = state;
  // No co_await inside a conditional expression: g++ 12 destroys its temporary twice.
  std::stop_token inherited;
  if (cancellable) {
    inherited = co_await get_stop_token();
  } else {
    token = {};
  }
  auto id = detail::process_owner_id();
  if (!id) {
    co_return unexpected(id.error());
  }
  bool slept = false;
  bool spun = false;
  for (;;) {
    std::uint32_t seen = 0;
    switch (try_acquire(s, *id, slept, seen)) {
      case attempt::acquired: co_return process_mutex_guard(s);
      case attempt::owner_dead: co_return owner_dead_error();
      case attempt::busy: break;
    }
    if (!spun) {
      spun = true;
      if (spin_until_changed(s, seen)) {
        continue;
      }
    }
    if (detail::stop_asked(token, inherited)) {
      co_return unexpected(cancelled_error());
    }
    if (!mark_waiting(s, seen)) {
      continue;
    }
    result<void> woke;
    if (cancellable) {
      woke = co_await detail::futex_await(s->lock.word, seen, token);
    } else {
      woke = co_await detail::without_inherited_stop(detail::futex_await(s->lock.word, seen, {}));
    }
    if (!woke) {
      co_return unexpected(woke.error());  // cancelled: no wake-up was consumed
    }
    slept = true;
  }
}

result<process_mutex_guard> process_mutex::try_lock() const noexcept {
  auto id = detail::process_owner_id();
  if (!id) {
    return unexpected(id.error());
  }
  std::uint32_t seen = 0;
  switch (try_acquire(m_state, *id, false, seen)) {
    case attempt::acquired: return process_mutex_guard(m_state);
    case attempt::owner_dead: return owner_dead_error();
    case attempt::busy: break;
  }
  return unexpected(std::make_error_code(std::errc::device_or_resource_busy));
}

result<process_mutex_guard> process_mutex::lock_blocking(saturating_duration limit) const noexcept {
  // One deadline for the whole call: a wake-up that finds the mutex taken again, a
  // spurious one or EINTR sleeps again only for what is left of it.
  const clock::time_point deadline = deadline_after(limit.get());
  auto id = detail::process_owner_id();
  if (!id) {
    return unexpected(id.error());
  }
  bool slept = false;
  bool spun = false;
  for (;;) {
    std::uint32_t seen = 0;
    switch (try_acquire(m_state, *id, slept, seen)) {
      case attempt::acquired: return process_mutex_guard(m_state);
      case attempt::owner_dead: return owner_dead_error();
      case attempt::busy: break;
    }
    if (detail::deadline_passed(deadline)) {
      // Like a cancelled lock(): a wake-up we took and did not use left the waiters bit
      // set (a woken waiter relocks with it), so the next unlock wakes another sleeper.
      return unexpected(make_error_code(errc::timed_out));
    }
    if (!spun) {
      spun = true;
      if (spin_until_changed(m_state, seen)) {
        continue;
      }
    }
    if (!mark_waiting(m_state, seen)) {
      continue;
    }
    // Woken, spurious, EINTR or the deadline: look again (the next pass decides). A wait
    // the kernel refuses is returned, not retried at full speed (the waiters bit we set
    // stays: one wasted wake-up later, as after timed_out).
    if (auto refused = detail::futex_wait_error(detail::futex_wait_until(m_state->lock.word, seen, deadline))) {
      return unexpected(refused);
    }
    slept = true;
  }
}

result<process_mutex_guard> process_mutex::recover() const noexcept {
  auto id = detail::process_owner_id();
  if (!id) {
    return unexpected(id.error());
  }
  std::uint32_t v = m_state->lock.word.load(std::memory_order_relaxed);
  for (;;) {
    if ((v & owner_died) == 0) {
      return unexpected(std::make_error_code(std::errc::invalid_argument));
    }
    if ((v & owner_mask) != 0) {
      return unexpected(std::make_error_code(std::errc::device_or_resource_busy));
    }
    // Keep owner_died while we repair: other lockers wait for our verdict.
    if (detail::robust_acquire(m_state->lock, v, owner_died | *id | (v & owner_waiters))) {
      return process_mutex_guard(m_state, /*recovering=*/true);
    }
  }
}

bool process_mutex::is_locked() const noexcept {
  return (m_state->lock.word.load(std::memory_order_relaxed) & owner_mask) != 0;
}

bool process_mutex::is_abandoned() const noexcept {
  const std::uint32_t v = m_state->lock.word.load(std::memory_order_relaxed);
  return (v & owner_died) != 0 && (v & owner_mask) == 0;
}

}  // namespace corio::ipc
