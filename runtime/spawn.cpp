// Spawning and joining (runtime/spawn.hpp): the join_handle awaiter (join_wait, the
// protocol on the state's waiter word), the blocking wait behind runtime::block_on, and
// the checks of corio::spawn.
#include <corio/runtime/spawn.hpp>

#include <stdexcept>
#include <system_error>

#include <corio/runtime/internal/thread_waiter.hpp>
#include <corio/runtime/internal/runtime_core.hpp>

namespace corio::detail {

[[noreturn]] void throw_shut_down() { throw std::system_error(make_error_code(errc::shut_down)); }

runtime_core* current_runtime_or_throw() {
  runtime_core* rt = port::current_runtime();
  if (rt == nullptr) {
    throw std::logic_error("corio::spawn called outside a corio runtime (use runtime::spawn from other threads)");
  }
  return rt;
}

bool spawn_root(runtime_core* rt, join_state_base* st) noexcept { return rt->spawn_root(st); }

void wait_blocking(join_state_base* st) {
  thread_waiter w;
  const std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(&w) | join_state_base::kThread;
  std::uintptr_t expected = st->waiter.load(std::memory_order_acquire);
  for (;;) {
    if (expected == join_state_base::kDone) {
      return;  // acquire load above made the result visible
    }
    // acq_rel: publishes &w to complete(); on failure acquire re-reads the word.
    if (st->waiter.compare_exchange_weak(expected, mine, std::memory_order_acq_rel, std::memory_order_acquire)) {
      break;
    }
  }
  w.done.acquire();
  // acquire: pairs with complete()'s exchange (the semaphore also orders it).
  (void)st->waiter.load(std::memory_order_acquire);
}

// ---------------------------------------------------------------------------------------
// join_wait (see spawn.hpp for the protocol)

bool join_wait::ready() noexcept {
  // acquire: pairs with the acq_rel exchange in complete(); makes the value visible.
  if (m_state->waiter.load(std::memory_order_acquire) != join_state_base::kDone) {
    return false;
  }
  // The result is ready, but a task that only ever awaits finished handles would never
  // yield: charge the cooperative budget and yield once it is spent.
  m_yield = port::consume_budget();
  return !m_yield;
}

bool join_wait::suspend(std::coroutine_handle<> h, inherited_stop inherited) {
  if (m_yield) {
    m_yield = false;
    port::yield(h);
    return true;
  }
  m_home = port::current_runtime();
  if (m_home == nullptr) {
    throw std::logic_error("corio::join_handle awaited outside a corio runtime (use runtime::block_on)");
  }
  if (stop_link<stop_fn>::stopped(m_token, inherited)) {
    m_cancelled = true;
    return false;
  }
  m_waiter = h;
  m_state->waiter_runtime = m_home;
  m_stop.arm(m_token, inherited, stop_fn{this});
  m_published = true;
  std::uintptr_t expected = 0;
  // acq_rel: release publishes m_waiter/waiter_runtime to complete() and on_stop(); on
  // failure, acquire makes the result (kDone) visible. After success, *this may be
  // resumed on another thread at any moment: touch nothing.
  if (m_state->waiter.compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(h.address()),
                                              std::memory_order_acq_rel, std::memory_order_acquire)) {
    return true;
  }
  m_published = false;
  m_stop.disarm();
  m_cancelled = expected == join_state_base::kCancelled;  // stopped while arming
  return false;
}

void join_wait::on_stop() noexcept {
  const std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(m_waiter.address());
  std::uintptr_t word = m_state->waiter.load(std::memory_order_acquire);
  for (;;) {
    std::uintptr_t next;
    if (word == 0) {
      next = join_state_base::kCancelled;  // not published yet: make publication fail
    } else if (mine != 0 && word == mine) {
      next = 0;  // published: take our frame back and resume it ourselves
    } else {
      return;  // finished (kDone), or already cancelled
    }
    // acq_rel: pairs with the publishing CAS and with complete()'s exchange.
    if (m_state->waiter.compare_exchange_weak(word, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
      if (next == 0) {
        m_cancelled = true;
        port::wake(m_waiter, m_home);
      }
      return;
    }
  }
}

void throw_empty_join_handle() {
  throw std::logic_error(
      "corio::join_handle awaited without a task: it is default-constructed, moved-from, detached or "
      "already awaited (awaiting consumes it)");
}

void throw_not_abortable() {
  throw std::logic_error(
      "corio::join_handle::abort: the task was not spawned abortable; spawn it with "
      "corio::spawn(corio::abortable, ...) or runtime::spawn(corio::abortable, ...)");
}

std::error_code join_wait::finish_code() {
  m_stop.disarm();
  m_published = false;
  if (m_cancelled) {
    std::uintptr_t expected = join_state_base::kCancelled;
    // The handle may be awaited again: clear our mark (unless the task finished since).
    m_state->waiter.compare_exchange_strong(expected, 0, std::memory_order_acq_rel, std::memory_order_relaxed);
    return cancelled_error();
  }
  m_state->observed = true;
  if (m_state->cancelled) {
    return make_error_code(errc::shut_down);
  }
  if (m_state->aborted) {
    return make_error_code(errc::aborted);
  }
  if (m_state->error) {
    std::rethrow_exception(m_state->error);
  }
  return {};
}

void join_wait::finish() {
  const std::error_code ec = finish_code();
  if (ec == std::errc::operation_canceled) {
    throw std::system_error(ec, "corio::join_handle wait cancelled");
  }
  if (ec) {
    throw std::system_error(ec);
  }
}

join_wait::~join_wait() {
  if (m_published) {
    // Our frame is being destroyed while suspended here (its runtime is shutting down):
    // take it back so that the task's completion does not wake a dead frame.
    std::uintptr_t expected = reinterpret_cast<std::uintptr_t>(m_waiter.address());
    m_state->waiter.compare_exchange_strong(expected, 0, std::memory_order_acq_rel, std::memory_order_relaxed);
  }
}

}  // namespace corio::detail
