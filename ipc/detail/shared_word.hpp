// The machinery under corio's process-shared primitives (ipc/process_mutex.hpp and its
// siblings, ipc/shm_queue.hpp): 32-bit futex words in shared memory, how a task or a
// thread waits on one, and how an object is placed in a mapping and recognised again.
//
// Waiting on a word: a task awaits `futex_await(word, expected)`: an IORING_OP_FUTEX_WAIT
// SQE without FUTEX2_PRIVATE (a shared futex: the kernel keys it on the page, so a
// FUTEX_WAKE from any process that maps the page finds it), filled on the awaiting
// worker's ring; the worker never blocks. It completes when woken, or at once when the
// word no longer holds `expected`. Before Linux 6.7 (no FUTEX_WAIT opcode: the scheduler
// port's opcode probe, port::features().futex, says so) the wait runs on the runtime's
// blocking pool as a FUTEX_WAIT syscall in 10 ms slices: one pool thread per waiting
// task, a stop seen within one slice (at once when the stop callback's wake finds the
// thread asleep). Threads without a runtime use futex_wait_blocking(), or
// futex_wait_until() for the thread forms that take a time limit.
// Waking: futex_wake (FUTEX_WAKE) and futex_wake_op (FUTEX_WAKE_OP: the kernel changes
// the word and wakes its waiters in one syscall, so a process killed in between cannot
// leave sleepers behind a change they never see).
// Before registering as a sleeper a wait spins for up to 2 µs (spin_while_equal): most
// cross-process hand-offs between running processes complete inside it, with no syscall
// on either side.
// Every caller treats a return from a wait as "look again": spurious wake-ups are part
// of the contract.
// Placement: every object starts with a 32-bit layout word (a corio tag, the type, the
// layout version) written last by construct() with release order; attach() checks it
// with acquire order. A zero word is an object not built yet
// (resource_unavailable_try_again); another value is another type, another layout
// version, or garbage (wrong_protocol_type). Offsets are checked against the region's
// size and the type's alignment (invalid_argument).
// Thread-safety: free functions; the words are atomics. Cost: see each function.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <span>
#include <stop_token>
#include <system_error>
#include <utility>

#include <corio/ipc/memory_map.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc::detail {

static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "shared futex words need lock-free 32-bit atomics");

using shared_word = std::atomic<std::uint32_t>;

// ---- futex syscalls (shared, i.e. without FUTEX_PRIVATE_FLAG) ----

/// FUTEX_WAIT: sleeps while *word == expected. Returns 0 (woken or spurious), or -errno:
/// -EAGAIN (the word changed first), -EINTR, -ETIMEDOUT (after `timeout_ns` if >= 0).
int futex_wait_blocking(const shared_word& word, std::uint32_t expected, long long timeout_ns = -1) noexcept;
/// futex_wait_blocking() until `deadline` (corio's clock): the relative timeout is
/// computed from the deadline at each call, so a caller that loops (spurious wake-up,
/// EINTR) and passes the same deadline never waits past it. time_point::max() waits with
/// no timeout (NULL: "never", no overflow); a deadline already past returns -ETIMEDOUT
/// without a syscall. Returns as futex_wait_blocking. Cost: one clock read and the syscall.
inline int futex_wait_until(const shared_word& word, std::uint32_t expected, clock::time_point deadline) noexcept {
  if (deadline == clock::time_point::max()) {
    return futex_wait_blocking(word, expected);
  }
  // Compared first: a deadline far in the past (near the clock's minimum) minus now
  // would overflow; past this test, deadline - now is positive and fits.
  const clock::time_point now = clock::now();
  if (deadline <= now) {
    return -ETIMEDOUT;
  }
  return futex_wait_blocking(word, expected, std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now).count());
}
/// What a futex_wait_blocking() / futex_wait_until() result means for a thread form's
/// loop: none (0, -EINTR, -EAGAIN, -ETIMEDOUT: look again, the loop decides), or the OS
/// error of a wait the kernel refuses (ENOSYS or EPERM under a seccomp filter, EFAULT),
/// which the loop returns, as the task forms do, instead of retrying at full speed.
inline std::error_code futex_wait_error(int rc) noexcept {
  const bool look_again = rc == 0 || rc == -EINTR || rc == -EAGAIN || rc == -ETIMEDOUT;
  return look_again ? std::error_code{} : os_error(rc);
}
/// True once `deadline` has passed (never for time_point::max(), which reads no clock).
inline bool deadline_passed(clock::time_point deadline) noexcept {
  return deadline != clock::time_point::max() && clock::now() >= deadline;
}
/// FUTEX_WAKE: wakes up to `count` waiters of `word`; returns how many it woke.
int futex_wake(const shared_word& word, int count) noexcept;

/// The operations FUTEX_WAKE_OP can apply to the word (linux/futex.h FUTEX_OP_*).
enum class word_op : int { set = 0, add = 1, bit_or = 2, and_not = 3 };
/// FUTEX_WAKE_OP on one word: atomically `word = word <op> operand`, then wakes up to
/// `count` of its waiters; returns how many it woke. `operand` is 0..2047, or a power of
/// two (passed as 1 << shift). The atomic change and the wake are one syscall.
int futex_wake_op(shared_word& word, word_op op, std::uint32_t operand, int count) noexcept;

// ---- waiting from a task ----

/// Awaits a FUTEX_WAKE on `word` while it holds `expected` (see the header comment).
/// Returns success when woken or when the word differs (look again), operation_canceled
/// on a stop of `token` or of the inherited token (a wake that raced the stop is
/// reported as a wake: it is never swallowed), no_runtime off a worker.
task<result<void>> futex_await(const shared_word& word, std::uint32_t expected, std::stop_token token);

/// How futex_await waits (tests force the pre-6.7 fallback on newer kernels).
enum class futex_wait_mode {
  automatic,            ///< IORING_OP_FUTEX_WAIT where the kernel has it, else the blocking pool
  force_blocking_pool,  ///< always the blocking-pool fallback
};
void set_futex_wait_mode(futex_wait_mode mode) noexcept;
/// Whether futex_await would now use the ring (false once the kernel refused the opcode,
/// or while the fallback is forced).
[[nodiscard]] bool futex_wait_uses_ring() noexcept;

/// Awaits `t` without handing it the awaiting task's stop token: for a wait that must not
/// be cut short (a condition variable re-locking its mutex).
template <class T>
class without_inherited_stop {
 public:
  explicit without_inherited_stop(task<T> t) noexcept : m_task(std::move(t)), m_awaiter(m_task.operator co_await()) {}
  without_inherited_stop(const without_inherited_stop&) = delete;
  without_inherited_stop& operator=(const without_inherited_stop&) = delete;

  bool await_ready() const noexcept { return false; }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
    // Cleared before the child can run: the awaiter's await_suspend may queue it where
    // another worker steals it (port::transfer past its depth limit), as shield does.
    m_awaiter.child.promise().inherited_token = nullptr;
    m_awaiter.child.promise().abort_root = nullptr;
    m_awaiter.child.promise().continuation = h;
    return port::transfer(m_awaiter.child);
  }
  // [[nodiscard]] when T is a result (result.hpp, rule 4).
  T await_resume() requires(!corio::detail::is_result_v<T>) { return m_awaiter.await_resume(); }
  [[nodiscard]] T await_resume() requires corio::detail::is_result_v<T> { return m_awaiter.await_resume(); }

 private:
  task<T> m_task;
  typename task<T>::awaiter m_awaiter;
};

/// Spins (cpu pause) while `word` holds `seen`, for at most the spin budget; true if it
/// changed. Waits call it before they register as sleepers: a partner that answers
/// within the budget (another process on another CPU, say) is seen without a futex
/// wait, and the partner's wake then needs no syscall either. The budget bounds the time
/// a task keeps its worker from other tasks.
bool spin_while_equal(const shared_word& word, std::uint32_t seen) noexcept;
/// Spins (cpu pause) for about half the spin budget (nothing when spinning is off)
/// without reading any shared word: a look at a word that another CPU keeps writing
/// takes its cache line away from that CPU, and looking less often lets the writer go on
/// with the line in its own cache. shm_queue's receive batching uses it once per call,
/// before its spin_while_equal: such a receive keeps its worker for up to about one and
/// a half budgets.
void spin_without_looking() noexcept;
/// The spin budget in nanoseconds (default 2000; 0 disables spinning: benchmarks
/// compare both). Any thread; waits that start afterwards use it.
void set_spin_budget(unsigned nanoseconds) noexcept;

/// True when either token asks to stop.
inline bool stop_asked(const std::stop_token& token, const std::stop_token& inherited) noexcept {
  return token.stop_requested() || inherited.stop_requested();
}

// ---- placement ----

/// Type tags in the layout word (a new layout of a type takes a new version).
enum class shared_type : std::uint8_t { mutex = 1, semaphore = 2, event = 3, condition_variable = 4, queue = 5 };
inline constexpr std::uint32_t layout_version = 1;
inline constexpr std::uint32_t layout_word(shared_type type) noexcept {
  return 0xC0100000u | (static_cast<std::uint32_t>(type) << 8) | layout_version;
}

/// Where a State lives in `region` at `offset`: checks the bounds and the alignment.
template <class State>
result<void*> locate(std::span<std::byte> region, std::size_t offset) noexcept {
  if (region.data() == nullptr || offset > region.size() || region.size() - offset < sizeof(State) ||
      (reinterpret_cast<std::uintptr_t>(region.data()) + offset) % alignof(State) != 0) {
    return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  return static_cast<void*>(region.data() + offset);
}

/// Recognises a constructed State (its first member is the layout word `magic`).
template <class State>
result<State*> recognise(std::span<std::byte> region, std::size_t offset, shared_type type) noexcept {
  auto at = locate<State>(region, offset);
  if (!at) {
    return unexpected(at.error());
  }
  auto* state = std::launder(static_cast<State*>(*at));
  // acquire: pairs with the release store that ends construct(); the state it wrote is
  // visible to us.
  const std::uint32_t seen = state->magic.load(std::memory_order_acquire);
  if (seen == 0) {
    return unexpected(std::make_error_code(std::errc::resource_unavailable_try_again));
  }
  if (seen != layout_word(type)) {
    return unexpected(std::make_error_code(std::errc::wrong_protocol_type));
  }
  return state;
}

/// Publishes a State built in place: its layout word, last, with release order.
template <class State>
void publish(State* state, shared_type type) noexcept {
  // release: a process that attaches (acquire load in recognise) sees the whole state.
  state->magic.store(layout_word(type), std::memory_order_release);
}

/// The writable bytes of a mapping (permission_denied for a read-only one).
inline result<std::span<std::byte>> writable_bytes(memory_map& map) noexcept {
  if (map.access() != map_access::read_write) {
    return unexpected(std::make_error_code(std::errc::permission_denied));
  }
  return map.bytes();
}

// ---- the awaitable shape of every process-shared wait ----

/// `co_await` yields Op::value_type. await_ready runs the non-waiting attempt
/// (Op::try_now, returning an optional value); only if it cannot finish does
/// await_suspend start the waiting coroutine (Op::wait_slow(token)), so an uncontended
/// operation costs no coroutine frame. Movable until awaited (timeout() and when_any
/// move their awaitables).
template <class Op>
class [[nodiscard]] fast_or_wait {
 public:
  using value_type = typename Op::value_type;

  fast_or_wait(Op op, std::stop_token token) noexcept : m_op(std::move(op)), m_token(std::move(token)) {}
  fast_or_wait(fast_or_wait&& o) noexcept : m_op(std::move(o.m_op)), m_token(std::move(o.m_token)) {}
  fast_or_wait(const fast_or_wait&) = delete;
  fast_or_wait& operator=(const fast_or_wait&) = delete;
  fast_or_wait& operator=(fast_or_wait&&) = delete;

  bool await_ready() {
    m_ready = m_op.try_now();
    return m_ready.has_value();
  }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) {
    m_slow = m_op.wait_slow(std::move(m_token));
    m_awaiter.emplace(m_slow.operator co_await());
    return m_awaiter->await_suspend(h);
  }
  [[nodiscard]] value_type await_resume() {
    if (m_ready) {
      return std::move(*m_ready);
    }
    return m_awaiter->await_resume();
  }

 private:
  Op m_op;
  std::stop_token m_token;
  std::optional<value_type> m_ready;
  task<value_type> m_slow;
  std::optional<typename task<value_type>::awaiter> m_awaiter;
};

}  // namespace corio::ipc::detail
