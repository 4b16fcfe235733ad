// corio::ipc::shm_queue's steps (detail/shm_queue_steps.hpp), which the per-call paths
// (shm_queue_transfer.cpp) and the claims (shm_queue_claim.cpp) both run: advancing a
// count word, preparing a sleep, the producers' and consumers' locked attempts, and the
// side locks with their recovery after a death. The protocol over the words:
// detail/shm_queue_layout.hpp.
#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <ctime>

#include <corio/ipc/detail/shm_queue_layout.hpp>
#include <corio/ipc/detail/shm_queue_steps.hpp>
#include <corio/runtime/timeout.hpp>

namespace corio::ipc {

namespace detail::shm {

/// Advances a count word by one (the caller holds its side's lock).
void advance(shared_word& word) noexcept {
  std::uint32_t v = word.load(std::memory_order_relaxed);
  for (;;) {
    if ((v & waiters_bit) == 0) {
      // release: the slot we filled (or emptied) before this is visible to whoever reads
      // the new count with acquire order.
      if (word.compare_exchange_weak(v, v + 4, std::memory_order_release, std::memory_order_relaxed)) {
        return;
      }
      continue;
    }
    // Sleepers on the other side: advance and wake them in one syscall. The release RMW
    // orders our slot writes before the kernel's change (and tells ThreadSanitizer).
    word.fetch_add(0, std::memory_order_release);
    detail::futex_wake_op(word, detail::word_op::add, 3, INT_MAX);
    return;
  }
}

/// Producers' advance of the published word (the caller holds the send lock): false,
/// publishing nothing, once the queue is closed ("The end of a closed queue",
/// shm_queue_layout.hpp). Every write of the `publishing` mark is a seq_cst exchange: an
/// RMW, so that the mark's modification order alone orders us against a consumer's
/// look at it (a standalone fence would do it too, but g++ rejects atomic_thread_fence
/// under -fsanitize=thread).
bool publish(queue_header* h) noexcept {
  shared_word& word = h->published;
  // relaxed: only send-lock holders (us) change the count; the bits others set are
  // checked by the CAS below, which fails on a word that moved since this look.
  std::uint32_t v = word.load(std::memory_order_relaxed);
  bool marked = false;
  for (;;) {
    if ((v & closed_bit) != 0) {
      if (marked) {
        unmark(h);  // published nothing
      }
      return false;
    }
    if ((v & waiters_bit) == 0) {
      // release: as advance(). The CAS fails if close() set the closed bit since `v`.
      if (word.compare_exchange_weak(v, v + 4, std::memory_order_release, std::memory_order_relaxed)) {
        if (marked) {
          // Defensive: we marked because the waiters bit was set, and only the send-lock
          // holder (us) clears it, so the bit is still there unless the word was damaged.
          // A seq_cst RMW (release included) like every write of the mark: a consumer
          // whose RMW reads this 0 sees the count the CAS added.
          unmark(h);
        }
        return true;
      }
      continue;
    }
    if (!marked) {
      // The wake below adds whatever the word holds: mark first, then look again. The
      // mark is a seq_cst RMW, as is a consumer's read of it (senders_settled): if that
      // consumer's RMW comes first in the mark's modification order, our exchange reads
      // its value or a later one in its release sequence (every write of the mark is an
      // RMW), so it synchronises with us and the closed bit it saw is visible to our look
      // below; otherwise it reads our 1, or the 0 we store after our wake.
      marked = true;
      (void)h->publishing.exchange(1, std::memory_order_seq_cst);
      // relaxed: the exchange above ordered this look (coherence with the consumer's).
      v = word.load(std::memory_order_relaxed);
      continue;
    }
    test_hook(detail::queue_step::before_wake);
    // As advance(); then unmark. A seq_cst RMW (release included): a consumer whose RMW
    // or acquire load reads this 0 sees the count we added.
    word.fetch_add(0, std::memory_order_release);
    detail::futex_wake_op(word, detail::word_op::add, 3, INT_MAX);
    unmark(h);
    return true;
  }
}

bool senders_settled(queue_header* h, const process_mutex& send_lock) noexcept {
  // Our look at the published word (acquire, in receive_locked) saw the closed bit. A
  // seq_cst RMW on the mark (it writes back the value it reads): in the mark's
  // modification order, which holds only RMWs, either it comes before a producer's mark,
  // which then synchronises with it and that producer's look sees the closed bit; or it
  // reads that mark (1), or the 0 stored after the producer's wake or failed look, whose
  // release makes its count visible (one more look sees the message).
  const std::uint32_t mark = h->publishing.fetch_add(0, std::memory_order_seq_cst);
  if (mark == 0) {
    return true;
  }
  // acquire: a 0 read now is a producer's unmark (or a recovery's clear), which follows
  // the mark we read; it pairs with that RMW's release as above. (The mark may read 3:
  // another consumer sleeps on it.)
  if (detail::spin_while_equal(h->publishing, mark) && h->publishing.load(std::memory_order_acquire) == 0) {
    return true;  // its wake ended while we spun
  }
  // A free producers' lock (taken: acquire), or one recovered from a holder that died
  // marked (recovery clears the mark), has no publish in progress; a live holder may be
  // in the middle of its wake.
  if (try_lock_side(h, send_lock, side::send)) {
    return true;
  }
  test_hook(detail::queue_step::unsettled);
  return false;
}

void unmark(queue_header* h) noexcept {
  // A seq_cst RMW (release included), as every write of the mark (senders_settled). A
  // consumer's CAS that set the bit before it in the mark's order is read here: wake it.
  if ((h->publishing.exchange(0, std::memory_order_seq_cst) & settle_waiter_bit) != 0) {
    detail::futex_wake(h->publishing, INT_MAX);
  }
}

std::optional<std::uint32_t> prepare_settle_wait(queue_header* h) noexcept {
  constexpr std::uint32_t asked = 1 | settle_waiter_bit;
  std::uint32_t mark = 1;
  // seq_cst RMW, as every write of the mark: before the producer's unmark in the mark's
  // order (which then reads the bit and wakes us), or after it (fails reading 0: the
  // publish is over, look again). A 3 read: another consumer asked already.
  if (h->publishing.compare_exchange_strong(mark, asked, std::memory_order_seq_cst) || mark == asked) {
    return asked;
  }
  return std::nullopt;
}

void settle_pause_blocking(queue_header* h, long long& pause, long long left_ns) noexcept {
  if (auto mark = prepare_settle_wait(h)) {
    const long long now = next_settle_pause(pause);
    const long long ns = left_ns < 0 || left_ns > now ? now : left_ns;
    // A wait the kernel refuses (ENOSYS or EPERM under a seccomp filter) would end the
    // pause at once and the caller would look again at full speed for as long as the
    // producer stays marked (a stopped one: for ever): the pause is slept out instead.
    if (detail::futex_wait_error(detail::futex_wait_blocking(h->publishing, *mark, ns))) {
      const timespec rest{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
      ::nanosleep(&rest, nullptr);
    }
  }
}

task<result<void>> settle_pause_awaited(queue_header* h, long long& pause, std::stop_token token) {
  auto mark = prepare_settle_wait(h);
  if (!mark) {
    co_return result<void>{};
  }
  const auto now = std::chrono::nanoseconds(next_settle_pause(pause));
  if (!detail::futex_wait_uses_ring()) {
    // Before Linux 6.7 (or with the fallback forced) futex_await waits on the blocking
    // pool, and the end of each pause (a stop) would wake every sleeper of the mark:
    // pausing consumers would cut each other's pauses short, and each pause would hop to
    // a pool thread. A plain timed sleep instead: the producer's wake is not used here,
    // the pause bounds the wait as before the settle-waiter bit. prepare_settle_wait is
    // still asked: it says when the mark is gone already (look again at once), at the
    // cost of one FUTEX_WAKE at the producer's unmark.
    auto slept = co_await sleep_for(now, std::move(token));
    if (!slept) {
      co_return unexpected(slept.error());  // a stop
    }
    co_return result<void>{};
  }
  auto woke = co_await timeout(detail::futex_await(h->publishing, *mark, std::move(token)), now);
  if (!woke && woke.error() != errc::timed_out) {
    co_return unexpected(woke.error());  // a stop (ours or the awaiting task's), or an OS error
  }
  co_return result<void>{};  // woken, or the pause is over: look again
}

/// After would_wait, with the side's lock dropped: spins (once per call) while the other
/// side's word still holds `seen`, then sets its waiters bit. The value to sleep on, or
/// nothing if the word moved (look again). Setting the bit outside the lock is safe: the
/// CAS succeeds only if the word — and so the full or empty state — is still `seen`.
std::optional<std::uint32_t> prepare_sleep(shared_word& word, std::uint32_t seen, bool& spun) noexcept {
  if (!spun) {
    spun = true;
    if (detail::spin_while_equal(word, seen)) {
      return std::nullopt;
    }
  }
  if ((seen & waiters_bit) != 0) {
    return seen;
  }
  // relaxed: the bit publishes nothing; the futex wait compares the value itself.
  if (word.compare_exchange_strong(seen, seen | waiters_bit, std::memory_order_relaxed)) {
    return seen | waiters_bit;
  }
  return std::nullopt;
}

void test_hook(detail::queue_step step) noexcept {
  if (auto hook = detail::g_shm_queue_test_hook.load(std::memory_order_relaxed)) {
    hook(step);
  }
}

/// Producers, under the send lock. On would_wait, `sleep_value` is the consumed word as
/// seen: the queue stays full until it changes.
outcome send_locked(queue_header* h, const queue_geometry& g, std::span<const std::byte> message,
                    std::uint32_t& sleep_value) noexcept {
  // relaxed: only send-lock holders change the count; consumers only set the waiters bit
  // and close() the closed bit.
  const std::uint32_t published = h->published.load(std::memory_order_relaxed);
  if ((published & closed_bit) != 0) {
    return outcome::closed;
  }
  if (h->free_known == 0) {
    // acquire: pairs with the consumers' release in advance(): they are done reading the
    // slots they consumed before we overwrite them.
    const std::uint32_t consumed = h->consumed.load(std::memory_order_acquire);
    const std::uint32_t used = (count_of(published) - count_of(consumed)) & count_mask;
    h->free_known = g.capacity - used;
    if (h->free_known == 0) {
      sleep_value = consumed;  // full until the consumed word changes
      return outcome::would_wait;
    }
  } else {
    acquire_for_sanitizer(h->consumed);
  }
  std::byte* slot = slot_at(g, h->write_pos);
  prefetch_ahead(h, g, h->write_pos, message.size());
  const auto size = static_cast<std::uint32_t>(message.size());
  std::memcpy(slot, &size, sizeof size);
  if (!message.empty()) {
    std::memcpy(slot + slot_header, message.data(), message.size());
  }
  --h->free_known;  // before the publish: after a death here it is too low, never too high
  test_hook(detail::queue_step::before_publish);
  if (!publish(h)) {
    ++h->free_known;  // closed meanwhile: nothing published, the slot stays free
    return outcome::closed;
  }
  test_hook(detail::queue_step::after_publish);
  ++h->write_pos;
  return outcome::done;
}

/// Consumers, under the receive lock. On would_wait, `sleep_value` is the published word
/// as seen: the queue stays empty until it changes. closed means closed and empty.
outcome receive_locked(queue_header* h, const queue_geometry& g, std::span<std::byte> buffer, std::size_t& size,
                       std::uint32_t& sleep_value) noexcept {
  if (h->available_known == 0) {
    // acquire: pairs with the producers' release in advance(): the slots they published
    // are filled.
    const std::uint32_t published = h->published.load(std::memory_order_acquire);
    const std::uint32_t consumed = h->consumed.load(std::memory_order_relaxed);
    h->available_known = (count_of(published) - count_of(consumed)) & count_mask;
    if (h->available_known == 0) {
      if ((published & closed_bit) != 0) {
        return outcome::closed;
      }
      sleep_value = published;  // empty until the published word changes
      return outcome::would_wait;
    }
  } else {
    acquire_for_sanitizer(h->published);
  }
  const std::byte* slot = slot_at(g, h->read_pos);
  std::uint32_t stored = 0;
  std::memcpy(&stored, slot, sizeof stored);
  // Shared bytes: clamped to the handle's max_message, within the slot and `buffer`
  // (check_buffer checked it against the same value).
  size = stored <= g.max_message ? stored : g.max_message;
  if (size > 0) {
    std::memcpy(buffer.data(), slot + slot_header, size);
  }
  --h->available_known;
  test_hook(detail::queue_step::before_consume);
  advance(h->consumed);
  test_hook(detail::queue_step::after_consume);
  ++h->read_pos;
  return outcome::done;
}

/// After owner_dead on a side's lock: re-derive its position from its count word.
void resync(std::uint64_t& pos, std::uint32_t& known, const shared_word& word) noexcept {
  const std::uint32_t count = count_of(word.load(std::memory_order_relaxed));
  if ((static_cast<std::uint32_t>(pos) & count_mask) != count) {
    ++pos;  // died between advancing the word and the position
  }
  known = 0;
}

void resync_side(queue_header* h, side which) noexcept {
  if (which == side::send) {
    resync(h->write_pos, h->free_known, h->published);
    // The dead holder's mark, if any. A seq_cst RMW like every write of the mark
    // (senders_settled): a consumer that reads the 0 sees the published word at least as
    // we did after the holder's death; one that sleeps on the mark is woken.
    unmark(h);
  } else {
    resync(h->read_pos, h->available_known, h->consumed);
  }
}

/// After owner_dead: recovers `lock` and resyncs its side. Fails while another process
/// is recovering it (busy) or has just done so.
result<process_mutex_guard> recover_side(queue_header* h, const process_mutex& lock, side which) noexcept {
  auto r = lock.recover();
  if (r) {
    resync_side(h, which);
    r->mark_consistent();
  }
  return r;
}

/// Takes a side's lock without waiting, recovering it from a dead holder.
result<process_mutex_guard> try_lock_side(queue_header* h, const process_mutex& lock, side which) noexcept {
  auto g = lock.try_lock();
  if (g || g.error() != std::errc::owner_dead) {
    return g;
  }
  auto r = recover_side(h, lock, which);
  if (!r) {
    return unexpected(error(std::errc::device_or_resource_busy));
  }
  return r;
}

/// try_lock_side for try_send / try_receive: a side another holds is "try again".
result<process_mutex_guard> try_lock_or_again(queue_header* h, const process_mutex& lock, side which) noexcept {
  auto g = try_lock_side(h, lock, which);
  if (!g && g.error() == std::errc::device_or_resource_busy) {
    return unexpected(error(std::errc::resource_unavailable_try_again));
  }
  return g;
}

/// Awaits a side's lock, recovering it from a dead holder.
task<result<process_mutex_guard>> lock_side(queue_header* h, const process_mutex& lock, side which,
                                            std::stop_token token) {
  for (;;) {
    auto g = co_await lock.lock(token);
    if (g || g.error() != std::errc::owner_dead) {
      co_return g;
    }
    if (auto r = recover_side(h, lock, which)) {
      co_return r;
    }
    // Another process is recovering it (busy) or has just done so: lock again.
  }
}

result<process_mutex_guard> lock_side_until(queue_header* h, const process_mutex& lock, side which,
                                            clock::time_point deadline) noexcept {
  for (;;) {
    // What is left of the one deadline: max() stays "no limit"; a passed one is zero (one
    // try). wait_ns compares before it subtracts, so a saturated past deadline is safe.
    // The lock's own deadline, from its later clock read, is later by that read's ns.
    const long long left = wait_ns(deadline);
    using std::chrono::duration_cast;
    const clock::duration limit =
        left < 0 ? clock::duration::max() : duration_cast<clock::duration>(std::chrono::nanoseconds(left));
    auto g = lock.lock_blocking(limit);
    if (g || g.error() != std::errc::owner_dead) {
      return g;
    }
    if (auto r = recover_side(h, lock, which)) {
      return r;
    }
    // Another process is recovering it (busy: it holds the word, so the next
    // lock_blocking sleeps) or has just done so: wait again for what is left.
  }
}

}  // namespace detail::shm

}  // namespace corio::ipc
