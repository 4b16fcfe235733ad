// The waiting and ownership machinery of corio's process-shared primitives: futex
// syscalls on shared words, futex_await (io_uring FUTEX_WAIT, or the blocking pool before
// Linux 6.7), dropping a stale waiters bit (drop_stale_waiters_bit), and the per-process
// sentinel thread with its robust futex list (see ipc/detail/shared_word.hpp,
// ipc/detail/stale_waiters.hpp and ipc/detail/robust_owner.hpp).
#include <corio/ipc/detail/robust_owner.hpp>
#include <corio/ipc/detail/shared_word.hpp>
#include <corio/ipc/detail/stale_waiters.hpp>

#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>

#include <corio/runtime/blocking.hpp>
#include <corio/runtime/io_op.hpp>
#include <corio/runtime/port.hpp>

namespace corio::ipc::detail {

// ---- futex syscalls ----

namespace {

long futex_call(const shared_word& word, int op, std::uint32_t val, const void* timeout_or_val2, const shared_word* word2,
                std::uint32_t val3) noexcept {
  // The kernel reads and writes the word itself; std::atomic<uint32_t> has the layout of
  // a uint32_t (static_assert in shared_word.hpp: always lock-free).
  return ::syscall(SYS_futex, const_cast<shared_word*>(&word), op, val, timeout_or_val2, const_cast<shared_word*>(word2),
                   val3);
}

}  // namespace

int futex_wait_blocking(const shared_word& word, std::uint32_t expected, long long timeout_ns) noexcept {
  timespec rel{};
  const timespec* limit = nullptr;
  if (timeout_ns >= 0) {
    rel.tv_sec = static_cast<time_t>(timeout_ns / 1'000'000'000);
    rel.tv_nsec = static_cast<long>(timeout_ns % 1'000'000'000);
    limit = &rel;
  }
  if (futex_call(word, FUTEX_WAIT, expected, limit, nullptr, 0) == 0) {
    return 0;
  }
  return -errno;
}

int futex_wake(const shared_word& word, int count) noexcept {
  long woken = futex_call(word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr, nullptr, 0);
  return woken < 0 ? 0 : static_cast<int>(woken);
}

int futex_wake_op(shared_word& word, word_op op, std::uint32_t operand, int count) noexcept {
  std::uint32_t code = static_cast<std::uint32_t>(op);
  std::uint32_t arg = operand;
  if (operand >= 2048) {  // a power of two: FUTEX_OP_OPARG_SHIFT passes 1 << arg
    code |= FUTEX_OP_OPARG_SHIFT;
    arg = static_cast<std::uint32_t>(__builtin_ctz(operand));
  }
  // FUTEX_OP(op, oparg, cmp, cmparg). nr_wake2 is 0, yet where the old value equals
  // cmparg (0) the kernel's second loop wakes, and counts, one more sleeper of the word;
  // harmless here: every caller changes a word with a bit set, or wakes all.
  const std::uint32_t encoded = (code << 28) | (FUTEX_OP_CMP_EQ << 24) | ((arg & 0xfff) << 12);
  long woken = futex_call(word, FUTEX_WAKE_OP, static_cast<std::uint32_t>(count), nullptr, &word, encoded);
  if (woken >= 0) {
    return static_cast<int>(woken);
  }
  if (errno != ENOSYS && errno != EPERM) {
    // The kernel may have applied the change before failing (EINVAL: a PI waiter on the
    // word, which only a misbehaving peer puts there): doing it again could add twice.
    return 0;
  }
  // The kernel refused FUTEX_WAKE_OP (a seccomp filter, say): the same change with a CAS,
  // then a plain wake. Correct, but no longer one step if we die in between.
  std::uint32_t v = word.load(std::memory_order_relaxed);
  for (;;) {
    std::uint32_t next = v;
    switch (op) {
      case word_op::set: next = operand; break;
      case word_op::add: next = v + operand; break;
      case word_op::bit_or: next = v | operand; break;
      case word_op::and_not: next = v & ~operand; break;
    }
    // release: like the kernel's atomic op, after the caller's release RMW.
    if (word.compare_exchange_weak(v, next, std::memory_order_release, std::memory_order_relaxed)) {
      break;
    }
  }
  return futex_wake(word, count);
}

void drop_stale_waiters_bit(shared_word& word, std::uint32_t bit) noexcept {
  if (auto hook = g_stale_waiters_hook.load(std::memory_order_relaxed)) {
    hook();
  }
  // Not a CAS on the value seen: between our wake and a CAS, others may take the word's
  // units (or the lock), sleep on it, and another release (unlock) may wake only some of
  // them, bringing the word back to the value we would compare against (ABA): a CAS
  // would then clear the bit under a sleeper, and no later release would wake it.
  // FUTEX_WAKE_OP clears it and wakes every sleeper queued at that moment in one step
  // under the kernel's futex lock, so none is left asleep behind a clear bit; each one
  // woken takes what it waited for or sets the bit again before it sleeps. Clearing
  // while the word is empty (or held) is fine too, for the same reason.
  (void)futex_wake_op(word, word_op::and_not, bit, INT_MAX);
}

// ---- spinning ----

namespace {

/// relaxed: a tuning knob read at the start of each spin; publishes nothing.
std::atomic<unsigned> g_spin_budget_ns{2000};

}  // namespace

void set_spin_budget(unsigned nanoseconds) noexcept { g_spin_budget_ns.store(nanoseconds, std::memory_order_relaxed); }

void spin_without_looking() noexcept {
  const unsigned budget = g_spin_budget_ns.load(std::memory_order_relaxed);
  if (budget == 0) {
    return;
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(budget / 2);
  do {
    for (int i = 0; i < 4; ++i) {
      port::cpu_relax();  // up to ~140 cycles each: look at the clock every few
    }
  } while (std::chrono::steady_clock::now() < end);
}

bool spin_while_equal(const shared_word& word, std::uint32_t seen) noexcept {
  const unsigned budget = g_spin_budget_ns.load(std::memory_order_relaxed);
  if (budget == 0) {
    return false;
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(budget);
  for (;;) {
    for (int i = 0; i < 16; ++i) {
      port::cpu_relax();
      // relaxed: a hint; the caller re-reads the word with the order it needs.
      if (word.load(std::memory_order_relaxed) != seen) {
        return true;
      }
    }
    if (std::chrono::steady_clock::now() >= end) {
      return false;
    }
  }
}

// ---- futex_await ----

namespace {

/// 1 while IORING_OP_FUTEX_WAIT is believed to work, 0 once the opcode probe said no or
/// the kernel refused it (-EINVAL). relaxed: an idempotent cache of a fact.
std::atomic<int> g_ring_has_futex{-1};
/// Set by set_futex_wait_mode(force_blocking_pool) (tests). relaxed: read at the start of
/// each wait; publishes nothing.
std::atomic<bool> g_force_pool{false};

constexpr long long pool_slice_ns = 10'000'000;  // 10 ms: the fallback's stop latency bound

/// The pre-6.7 wait: a FUTEX_WAIT syscall on a blocking-pool thread, in slices so that
/// a stop is seen even if its wake came before the thread slept.
task<result<void>> pool_wait(const shared_word& word, std::uint32_t expected, std::stop_token token) {
  std::stop_token inherited = co_await get_stop_token();
  if (stop_asked(token, inherited)) {
    co_return unexpected(cancelled_error());
  }
  struct stop_state {
    std::atomic<bool> stop{false};
    const shared_word* word;
  } state{.word = &word};
  auto on_stop = [&state] {
    // relaxed: the sleeping thread reads it after its futex wait returns; the wake below
    // (a syscall) orders nothing it needs beyond the flag itself.
    state.stop.store(true, std::memory_order_relaxed);
    futex_wake(*state.word, INT_MAX);  // every sleeper of the word looks again: allowed
  };
  std::stop_callback<decltype(on_stop)> on_explicit(token, on_stop);
  std::stop_callback<decltype(on_stop)> on_inherited(inherited, on_stop);
  // 0: woken (or the word differs); 1: stopped; else -errno of a wait the kernel refused
  // (-EFAULT: the word is no longer mapped), reported like the ring's CQE would be
  // instead of retried at full speed for ever.
  auto outcome = co_await spawn_blocking(
      [&state, &word, expected]() noexcept {
        for (;;) {
          if (state.stop.load(std::memory_order_relaxed)) {
            return 1;
          }
          int rc = futex_wait_blocking(word, expected, pool_slice_ns);
          if (rc == 0 || rc == -EAGAIN) {
            return 0;
          }
          if (rc != -ETIMEDOUT && rc != -EINTR) {
            return rc;
          }
        }
      },
      token);
  if (!outcome) {
    co_return unexpected(outcome.error());
  }
  if (*outcome == 0) {
    co_return result<void>{};
  }
  if (*outcome < 0) {
    co_return unexpected(os_error(*outcome));
  }
  co_return unexpected(cancelled_error());
}

}  // namespace

void set_futex_wait_mode(futex_wait_mode mode) noexcept {
  g_force_pool.store(mode == futex_wait_mode::force_blocking_pool, std::memory_order_relaxed);
}

bool futex_wait_uses_ring() noexcept {
  if (g_force_pool.load(std::memory_order_relaxed)) {
    return false;
  }
  int known = g_ring_has_futex.load(std::memory_order_relaxed);
  if (known < 0) {
    known = port::features().futex ? 1 : 0;  // the opcode probe (Linux 6.7+), once
    g_ring_has_futex.store(known, std::memory_order_relaxed);
  }
  return known == 1;
}

task<result<void>> futex_await(const shared_word& word, std::uint32_t expected, std::stop_token token) {
  if (futex_wait_uses_ring()) {
    const auto* address = reinterpret_cast<const std::uint32_t*>(&word);
    auto done = co_await io_op(
        [address, expected](io_uring_sqe* sqe) {
          port::uring::prep_futex_wait(sqe, address, expected, /*process_private=*/false);
        },
        token);
    if (done || done.error() == std::errc::resource_unavailable_try_again) {
      co_return result<void>{};  // woken, or the word changed before the kernel armed the wait
    }
    if (done.error() != std::errc::invalid_argument) {
      co_return unexpected(done.error());
    }
    // Our words are aligned, so EINVAL means the kernel refused the opcode after all.
    g_ring_has_futex.store(0, std::memory_order_relaxed);
  }
  co_return co_await pool_wait(word, expected, std::move(token));
}

// ---- the sentinel and its robust list ----

namespace {

/// struct robust_list_head of linux/futex.h, with atomic fields: the kernel reads it
/// when the sentinel exits, possibly while another thread of the dying process is still
/// between two of our stores.
struct kernel_robust_head {
  std::atomic<std::uintptr_t> next;
  long futex_offset;
  std::atomic<std::uintptr_t> pending;
};
static_assert(sizeof(kernel_robust_head) == sizeof(robust_list_head));

/// Per-process state, in a MADV_WIPEONFORK page: a forked child sees it all zero.
struct owner_page {
  std::atomic<std::uint32_t> spin;   ///< guards the list and `pending` (0 free, 1 held)
  std::atomic<std::uint32_t> state;  ///< 0 no sentinel, 1 starting, 2 running
  std::atomic<std::uint32_t> tid;    ///< the sentinel's id once running
  std::atomic<std::uint32_t> generation;  ///< its number in the fork lineage (owner_generation)
  int error;                         ///< why the last start failed (errno)
  kernel_robust_head head;
};

owner_page* g_page = nullptr;
// Sentinels started so far in this process's fork lineage: ordinary memory, so a child
// inherits the count at fork and numbers its own sentinel above every ancestor's.
std::atomic<std::uint32_t> g_generations{0};
pthread_once_t g_page_once = PTHREAD_ONCE_INIT;

void reset_page_in_child() { std::memset(static_cast<void*>(g_page), 0, sizeof(owner_page)); }

void make_page() {
  const long page = ::sysconf(_SC_PAGESIZE);
  void* p = ::mmap(nullptr, static_cast<std::size_t>(page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return;
  }
  g_page = static_cast<owner_page*>(p);
  if (::madvise(p, static_cast<std::size_t>(page), MADV_WIPEONFORK) != 0) {
    ::pthread_atfork(nullptr, nullptr, &reset_page_in_child);  // Linux < 4.14
  }
}

owner_page* the_page() noexcept {
  ::pthread_once(&g_page_once, &make_page);
  return g_page;
}

constexpr long node_to_word = static_cast<long>(offsetof(robust_word, word)) - static_cast<long>(offsetof(robust_word, node));

void* sentinel_main(void* arg) {
  auto* p = static_cast<owner_page*>(arg);
  p->head.next.store(reinterpret_cast<std::uintptr_t>(&p->head), std::memory_order_relaxed);
  p->head.futex_offset = node_to_word;
  p->head.pending.store(0, std::memory_order_relaxed);
  std::uint32_t outcome = 2;
  if (::syscall(SYS_set_robust_list, &p->head, sizeof(kernel_robust_head)) != 0) {
    p->error = errno;
    outcome = 0;
  } else {
    p->tid.store(static_cast<std::uint32_t>(::syscall(SYS_gettid)), std::memory_order_relaxed);
    // relaxed: one sentinel start per process; published with tid by the store below.
    p->generation.store(g_generations.fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  // release: the starter (acquire load of state) sees tid, generation / error.
  p->state.store(outcome, std::memory_order_release);
  ::syscall(SYS_futex, &p->state, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
  if (outcome == 0) {
    return nullptr;
  }
  for (;;) {
    ::pause();  // every signal is blocked: sleeps until the process ends
  }
}

/// Starts the sentinel (the caller won state 0 -> 1). Returns 0 or an errno.
int start_sentinel(owner_page* p) noexcept {
  pthread_attr_t attr;
  ::pthread_attr_init(&attr);
  ::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  ::pthread_attr_setstacksize(&attr, 256 * 1024);
  sigset_t all;
  sigset_t old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);  // the sentinel inherits "everything blocked"
  pthread_t thread;
  int rc = ::pthread_create(&thread, &attr, &sentinel_main, p);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::pthread_attr_destroy(&attr);
  if (rc != 0) {
    p->error = rc;
    p->state.store(0, std::memory_order_release);
    ::syscall(SYS_futex, &p->state, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
    return rc;
  }
  return 0;
}

void spin_lock(owner_page* p) noexcept {
  for (unsigned spins = 0;; ++spins) {
    // acquire: pairs with spin_unlock's release; the previous holder's list changes are
    // visible.
    if (p->spin.load(std::memory_order_relaxed) == 0 && p->spin.exchange(1, std::memory_order_acquire) == 0) {
      return;
    }
    if (spins < 64) {
      port::cpu_relax();
    } else {
      ::sched_yield();  // the holder may be in a futex wake
    }
  }
}

void spin_unlock(owner_page* p) noexcept { p->spin.store(0, std::memory_order_release); }

/// The kernel may read the list at any instruction boundary of this process (at its
/// death), but never concurrently on another CPU with a live thread of ours changing it
/// in a way that matters: stores reach memory in program order (x86 TSO), so a compiler
/// barrier between the steps is the ordering we need.
void step() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

std::uintptr_t node_address(robust_word& w) noexcept { return reinterpret_cast<std::uintptr_t>(&w.node); }

}  // namespace

result<std::uint32_t> process_owner_id() noexcept {
  owner_page* p = the_page();
  if (p == nullptr) {
    return unexpected(std::make_error_code(std::errc::not_enough_memory));
  }
  for (;;) {
    // acquire: pairs with the sentinel's release store of state (tid is written before).
    std::uint32_t s = p->state.load(std::memory_order_acquire);
    if (s == 2) {
      return p->tid.load(std::memory_order_relaxed);
    }
    if (s == 0) {
      std::uint32_t expected = 0;
      if (!p->state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
        continue;
      }
      if (int rc = start_sentinel(p); rc != 0) {
        return unexpected(os_error(-rc));
      }
    }
    // The sentinel is starting (ours or another thread's): wait for its outcome; a failed
    // start (set_robust_list refused) is reported, not retried in a loop.
    while (p->state.load(std::memory_order_acquire) == 1) {
      ::syscall(SYS_futex, &p->state, FUTEX_WAIT_PRIVATE, 1, nullptr, nullptr, 0);
    }
    if (p->state.load(std::memory_order_acquire) == 0) {
      return unexpected(os_error(-(p->error != 0 ? p->error : EAGAIN)));
    }
  }
}

std::uint32_t owner_generation() noexcept {
  owner_page* p = the_page();
  // acquire: pairs with the sentinel's release store of state (generation is written before).
  if (p == nullptr || p->state.load(std::memory_order_acquire) != 2) {
    return 0;
  }
  return p->generation.load(std::memory_order_relaxed);
}

bool robust_acquire(robust_word& w, std::uint32_t& expected, std::uint32_t desired) noexcept {
  owner_page* p = the_page();
  const std::uintptr_t node = node_address(w);
  spin_lock(p);
  p->head.pending.store(node, std::memory_order_relaxed);
  step();
  // acquire: pairs with the previous owner's release in robust_release (its critical
  // section happens before ours).
  const bool won = w.word.compare_exchange_strong(expected, desired, std::memory_order_acquire, std::memory_order_relaxed);
  if (won) {
    step();
    w.node.store(p->head.next.load(std::memory_order_relaxed), std::memory_order_relaxed);
    step();
    p->head.next.store(node, std::memory_order_relaxed);
  }
  step();
  p->head.pending.store(0, std::memory_order_relaxed);
  spin_unlock(p);
  return won;
}

int robust_release(robust_word& w, std::uint32_t released, std::uint32_t generation) noexcept {
  owner_page* p = the_page();
  // Only the holder releases. A forked child that destroys a guard it inherited would
  // otherwise free its parent's lock under it, or (once it locked the mutex itself) its
  // own lock under its own guard. The child's page is wiped at fork (no sentinel yet) and
  // its sentinel, once started, has a generation above the parent's. A nonzero
  // owner_generation() means the sentinel runs (its acquire load of state makes tid
  // visible). relaxed on the word: while we hold it only the waiters bit changes under us.
  if (generation == 0 || owner_generation() != generation ||
      (w.word.load(std::memory_order_relaxed) & owner_mask) != p->tid.load(std::memory_order_relaxed)) {
    return -2;
  }
  const std::uintptr_t node = node_address(w);
  const std::uintptr_t head = reinterpret_cast<std::uintptr_t>(&p->head);
  spin_lock(p);
  p->head.pending.store(node, std::memory_order_relaxed);
  step();
  // Unlink: find the predecessor (the list holds this process's held words: a handful).
  std::atomic<std::uintptr_t>* link = &p->head.next;
  for (std::uintptr_t at = link->load(std::memory_order_relaxed); at != head && at != 0;
       at = link->load(std::memory_order_relaxed)) {
    if (at == node) {
      link->store(w.node.load(std::memory_order_relaxed), std::memory_order_relaxed);
      break;
    }
    link = reinterpret_cast<std::atomic<std::uintptr_t>*>(at);
  }
  step();
  std::uint32_t seen = w.word.load(std::memory_order_relaxed);
  // release: publishes our critical section to the next owner's acquire CAS. Only the
  // waiters bit can change under us (set by a waiter), so the loop is short.
  while (!w.word.compare_exchange_weak(seen, released | (seen & owner_waiters), std::memory_order_release,
                                       std::memory_order_relaxed)) {
  }
  int woken = -1;
  if ((seen & owner_waiters) != 0) {
    // Still under `pending`: if we die before this wake, the kernel sees a pending word
    // with no owner and wakes one waiter itself.
    woken = futex_wake(w.word, 1);
  }
  step();
  p->head.pending.store(0, std::memory_order_relaxed);
  spin_unlock(p);
  return woken;
}

}  // namespace corio::ipc::detail
