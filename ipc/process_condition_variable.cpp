// corio::ipc::process_condition_variable (see process_condition_variable.hpp).
//
// Word: sequence * 2 + waiters bit (bit 0). A waiter, holding the mutex, sets the bit
// and sleeps on the value it read (with the bit). notify_one: if the bit is set, one
// FUTEX_WAKE_OP adds 2 (the sequence moves, the bit stays) and wakes one; if it woke
// nobody, a second adds 1 and wakes all (odd + 1: the bit clears and the sequence moves
// again; anyone who queued in between wakes spuriously, nobody is stranded without the
// bit). notify_all: if the bit is set, one FUTEX_WAKE_OP adds 1 (odd + 1 again) and
// wakes all. So the word only grows (until it wraps, after about 2^31 notifies): a
// waiter that finds it equal to the value it slept on has not been notified since, and
// may sleep again. (A second call that cleared the bit with and_not took the word back
// by one, and a later waiter's bit restored the value: a waiter that had slept on it
// slept on through the notify between.) Two notifies racing (a notify_all between
// notify_one's two calls, or two notify_all) may leave the bit set with nobody asleep:
// one wasted syscall later, never a lost wake-up.
#include <corio/ipc/process_condition_variable.hpp>

#include <atomic>
#include <cerrno>
#include <climits>
#include <ctime>
#include <new>
#include <system_error>

#include <corio/ipc/detail/test_hooks.hpp>

namespace corio::ipc {

namespace {

constexpr std::uint32_t waiters_bit = 1;

/// A re-lock's lock_blocking() error that is a futex wait the kernel refused
/// (detail::futex_wait_error: ENOSYS or EPERM under a seccomp filter, or whatever errno
/// a policy answers with). Its other errors are owner_dead (the generic category) and
/// those of the sentinel's start, which cannot come here: the guard owned the mutex, so
/// this process's sentinel runs. EFAULT is left out: the mutex word was just read, and a
/// retry could not help.
bool refused_by_kernel(const std::error_code& ec) noexcept {
  return ec.category() == std::system_category() && ec.value() != EFAULT;
}

// relaxed: set by a test before the notifies it hooks and cleared after them; nothing
// is published with the pointer.
std::atomic<void (*)()> g_after_unheard_notify{nullptr};

}  // namespace

void detail::set_condition_notify_test_hook(void (*after_unheard_notify)()) noexcept {
  g_after_unheard_notify.store(after_unheard_notify, std::memory_order_relaxed);
}

result<process_condition_variable> process_condition_variable::construct(std::span<std::byte> region,
                                                                         std::size_t offset) noexcept {
  auto at = detail::locate<detail::condition_state>(region, offset);
  if (!at) {
    return unexpected(at.error());
  }
  auto* s = ::new (*at) detail::condition_state{};
  detail::publish(s, detail::shared_type::condition_variable);
  return process_condition_variable(s);
}

result<process_condition_variable> process_condition_variable::construct(memory_map& map,
                                                                         std::size_t offset) noexcept {
  auto bytes = detail::writable_bytes(map);
  if (!bytes) {
    return unexpected(bytes.error());
  }
  return construct(*bytes, offset);
}

result<process_condition_variable> process_condition_variable::attach(std::span<std::byte> region,
                                                                      std::size_t offset) noexcept {
  auto s = detail::recognise<detail::condition_state>(region, offset, detail::shared_type::condition_variable);
  if (!s) {
    return unexpected(s.error());
  }
  return process_condition_variable(*s);
}

result<process_condition_variable> process_condition_variable::attach(memory_map& map, std::size_t offset) noexcept {
  auto bytes = detail::writable_bytes(map);
  if (!bytes) {
    return unexpected(bytes.error());
  }
  return attach(*bytes, offset);
}

std::uint32_t process_condition_variable::prepare_wait() const noexcept {
  // relaxed: the mutex orders the predicate; the word only has to change after we read
  // it, which the futex wait checks itself.
  std::uint32_t v = m_state->word.load(std::memory_order_relaxed);
  while ((v & waiters_bit) == 0 &&
         !m_state->word.compare_exchange_weak(v, v | waiters_bit, std::memory_order_relaxed)) {
  }
  return v | waiters_bit;
}

task<result<void>> process_condition_variable::wait(process_mutex_guard& guard, std::stop_token token) const {
  detail::mutex_state* mutex = guard.m_state;
  if (mutex == nullptr) {
    co_return unexpected(std::make_error_code(std::errc::invalid_argument));  // the guard owns no lock
  }
  if (!guard.owns_lock()) {
    co_return unexpected(std::make_error_code(std::errc::operation_not_permitted));  // inherited through fork
  }
  const std::uint32_t seen = prepare_wait();
  guard.unlock();
  auto woke = co_await detail::futex_await(m_state->word, seen, std::move(token));
  auto relocked = co_await process_mutex(mutex).relock();
  if (!relocked) {
    co_return unexpected(relocked.error());
  }
  guard = std::move(*relocked);
  co_return woke;
}

result<void> process_condition_variable::wait_blocking(process_mutex_guard& guard,
                                                       saturating_duration limit) const noexcept {
  return wait_blocking_until(guard, deadline_after(limit.get()));
}

result<void> process_condition_variable::wait_blocking_until(process_mutex_guard& guard,
                                                             clock::time_point deadline) const noexcept {
  detail::mutex_state* mutex = guard.m_state;
  if (mutex == nullptr) {
    return unexpected(std::make_error_code(std::errc::invalid_argument));  // the guard owns no lock
  }
  if (!guard.owns_lock()) {
    return unexpected(std::make_error_code(std::errc::operation_not_permitted));  // inherited through fork
  }
  const std::uint32_t seen = prepare_wait();
  guard.unlock();
  // Every notify moves the word on and it never comes back (see the top), so a return
  // that finds it unchanged (EINTR, or a wake-up no notify sent) is not one: sleep again
  // until the deadline. A wait the kernel refuses (ENOSYS or EPERM under a seccomp
  // filter, EFAULT) ends it with that error, returned once the mutex is held again (as
  // the task form returns futex_await's), instead of a retry at full speed.
  // relaxed: the mutex, re-taken below, orders what the notifier changed.
  bool timed_out = false;
  std::error_code refused;
  while (m_state->word.load(std::memory_order_relaxed) == seen) {
    const int rc = detail::futex_wait_until(m_state->word, seen, deadline);
    if (rc == -ETIMEDOUT) {
      timed_out = true;
      break;
    }
    refused = detail::futex_wait_error(rc);
    if (refused) {
      break;
    }
  }
  // Re-taken without a limit, whatever ended the wait: the guard holds the mutex again on
  // return (as std::condition_variable::wait_for), unless its owner died. A re-lock whose
  // own futex wait the kernel refuses (the filter that refused ours, while another holds
  // the mutex) is tried again after a pause, 50 µs doubling to 1 ms, instead of returning
  // with the guard empty: the promise above holds, and nothing spins at full speed.
  auto relocked = process_mutex(mutex).lock_blocking();
  for (long long pause_ns = 50'000; !relocked && refused_by_kernel(relocked.error());) {
    const timespec pause{0, static_cast<long>(pause_ns)};
    ::nanosleep(&pause, nullptr);
    pause_ns = pause_ns >= 500'000 ? 1'000'000 : pause_ns * 2;
    relocked = process_mutex(mutex).lock_blocking();
  }
  if (!relocked) {
    return unexpected(relocked.error());
  }
  guard = std::move(*relocked);
  if (refused) {
    return unexpected(refused);
  }
  if (timed_out) {
    return unexpected(make_error_code(errc::timed_out));
  }
  return {};
}

void process_condition_variable::notify_one() const noexcept {
  detail::shared_word& word = m_state->word;
  // relaxed: a waiter registered before our change of the predicate (under the mutex)
  // has set the bit before it released the mutex; we see it.
  if ((word.load(std::memory_order_relaxed) & waiters_bit) == 0) {
    return;
  }
  if (detail::futex_wake_op(word, detail::word_op::add, 2, 1) == 0) {
    // relaxed: see g_after_unheard_notify.
    if (auto* hook = g_after_unheard_notify.load(std::memory_order_relaxed)) {
      hook();
    }
    // add 1, never and_not: the bit clears and the word still moves forward (see the top).
    detail::futex_wake_op(word, detail::word_op::add, waiters_bit, INT_MAX);
  }
}

void process_condition_variable::notify_all() const noexcept {
  detail::shared_word& word = m_state->word;
  if ((word.load(std::memory_order_relaxed) & waiters_bit) == 0) {
    return;
  }
  detail::futex_wake_op(word, detail::word_op::add, 1, INT_MAX);
}

}  // namespace corio::ipc
