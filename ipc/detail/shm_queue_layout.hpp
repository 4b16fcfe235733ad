// The layout of a corio::ipc::shm_queue in shared memory, shared by shm_queue.cpp (create,
// open, close) and shm_queue_steps.cpp (the two sides' protocols); not installed,
// private to ipc/. The protocol over these words:
//
// Count words (published by producers, consumed by consumers): count * 4 + closed * 2 +
// waiters. Only the holder of a side's lock changes its count; the other side only sets
// the waiters bit (before it sleeps on the word), and close() only sets the closed bit.
// Advancing: CAS v -> v + 4 while the waiters bit is clear; with it set, FUTEX_WAKE_OP
// adds 3 (odd + 3 = the next count with the waiters bit clear, whatever the closed bit)
// and wakes every sleeper of the word in the same syscall. close() ORs 2 and wakes all;
// OR 2 and ADD 3 commute, so a close racing an advance loses nothing.
// The end of a closed queue: a producer's advance of the published word publishes only
// while the closed bit is clear, so a consumer that sees the bit and no message knows
// the end without asking the producers (whose lock a claim may hold for ever). The CAS
// fails once close() has set the bit (the send then fails with closed; its slot stays
// free). FUTEX_WAKE_OP's ADD is unconditional, so a producer that finds the waiters bit
// set first marks `publishing` (exchange 1), then looks at the word again: closed, it
// unmarks (exchange 0) and fails; else it advances and wakes, then unmarks. A consumer
// that saw the closed bit (acquire) and no message reads the mark with an RMW that
// writes back what it reads (fetch_add 0). Every write of the mark is a seq_cst RMW (no
// standalone fence: g++ rejects one under -fsanitize=thread), so the mark's modification
// order decides: a consumer's RMW before a producer's mark releases to it (the mark
// reads its value or a later one of its release sequence, all RMWs) and that producer's
// look sees the bit; after it, the RMW reads the 1 or the unmark's 0, whose release
// carries the count the wake added. So a mark of 0 means every producer either
// published before it (one more look sees the message) or will see the bit; a mark of 1
// (3 with a consumer asleep on it, below) is a producer between its look and its wake
// (a syscall long) or one that died there:
// the consumer spins, then tries the producers' lock (free or recovered, whose recovery
// clears the mark with the same RMW: settled) and, when a live producer holds it,
// pauses and looks again (50 µs, doubling up to 1 ms per pause: next_settle_pause in
// shm_queue_steps.hpp). A consumer that pauses first asks to be woken: it sets the
// mark's settle-waiter bit (2) with a seq_cst CAS 1 -> 3, an RMW like every write of
// the mark, and sleeps on 3 for the pause (FUTEX_WAIT, or IORING_OP_FUTEX_WAIT under a
// timeout; a task before Linux 6.7, whose waits run on the blocking pool, sleeps on a
// timer instead: the pool's stop would wake every sleeper of the mark); the unmark
// (exchange 0) that reads the bit wakes every sleeper of the mark (FUTEX_WAKE), so the
// end is seen a wake-up after the producer's publish, not at the end of the pause. In
// the mark's modification order the CAS comes before the unmark (which reads the bit
// and wakes: a wake before the sleep leaves the mark 0, and the FUTEX_WAIT on 3 returns
// at once) or after it (the CAS fails: look again at once). The
// pause stays as the bound for a producer that died or stopped marked. An unmark that
// reads no bit (nobody pauses: every publish but this race) costs nothing more. Only
// send-lock holders (and a recovery of that lock) set the mark or clear it; consumers'
// RMWs write back what they read, or add the settle-waiter bit to a 1. A process of a
// build before the settle-waiter bit (same layout version) counts the mark as settled
// only at 0 or with the producers' lock, so it never reads 3 as settled; but its thread
// consumer, which sleeps on 1, then looks again at once (about a microsecond per look)
// for as long as the producer stays marked.
// Positions: the 64-bit write/read positions live beside each lock and index the slots;
// the count words hold their low 30 bits. A holder that dies between advancing the word
// and its position leaves them one apart: recovery (the next holder of that side, on
// owner_dead) adds the one. The cached free / available counts are decremented before
// the word advances, so after a death they are never too high; recovery zeroes them.
// Batching: a consumer that keeps up with a producer finds one message per look, and
// each look at the published word takes its cache line away from the producer, whose
// next advance must fetch it back: two cache-line transfers per message, which bound a
// stream. So a receive that finds the queue empty while `flowing` is set (a try_receive,
// the first step of every receive(), took a message since the last slow-path attempt)
// first spins for about half the spin budget without looking (spin_without_looking),
// then takes what was published meanwhile as one batch (one look). Every slow-path or
// blocking attempt clears `flowing`, and a call pauses at most once, so request and
// reply traffic, where every receive waits, never pauses, and a receive_blocking-only
// consumer pauses only after another consumer's try_receive; in a stream a message
// published during the pause waits for it (about 1 µs by default). `flowing` is a hint
// under the receive lock: a wrong value costs one pause, or the usual spin instead of
// it; a process of an older corio ignores it.
// Prefetch: a slot's cache lines were last read by a consumer, so the producer's stores
// into it must first take them back from the consumer's cache (a request for ownership:
// a cross-core round trip, 110-560 ns on the 2-vCPU VM measured), and the advance's
// locked instruction waits for those stores to complete (x86): about one round trip per
// message, partly overlapped, whatever the batching. So a send that knows more than
// `prefetch_distance` slots free asks for ownership of the first line of the slot that
// many positions ahead, and of its second line too when the message being sent spans
// two (header included: the next one is guessed to be alike), through
// prefetch_for_write (x86-64 PREFETCHW; elsewhere __builtin_prefetch for writing, not
// measured), and the round trips of several messages overlap. That slot is free (the
// consumers are done with it), so nothing a consumer still reads is taken away; the hint
// changes no architectural state (only where the line is cached) and costs a few cycles
// when the line is already ours. Measured on the 2-vCPU VM: the 64-byte stream between
// two processes 2.6-3.6 M -> 5.9-10.7 M msgs/s in 8 alternating runs
// (bench/ipc/shm_bench --only stream; see README).
//
// Thread-safety: the header lives in memory mapped by several processes; every field says
// who may write it. Cost: a few cache lines (each side's line is its own).
#pragma once

#include <cstddef>
#include <cstdint>
#include <system_error>

#include <corio/ipc/detail/shared_word.hpp>
#include <corio/ipc/shm_queue.hpp>

namespace corio::ipc::detail {

// Every member starts at 0 (or a zero-filled process_mutex state, which construct()
// then writes): shm_queue::create takes the new, zero-filled object as the header as it
// lies instead of constructing one (shm_queue.cpp), so a member with another initial
// value would silently start at 0. Give a new member 0 as its initial state.
struct alignas(64) queue_header {
  shared_word magic{0};
  // The geometry: written by create() before the layout word, then never. open()
  // validates it once against the mapping and each handle keeps a copy
  // (queue_geometry); nothing reads these fields after that, so a peer that rewrites
  // them changes nothing for handles already open.
  std::uint32_t capacity = 0;
  std::uint32_t max_message = 0;
  std::uint32_t slot_stride = 0;
  std::uint64_t total_size = 0;
  std::uint64_t slots_offset = 0;
  // The producers' line.
  alignas(64) mutex_state send_lock;
  std::uint64_t write_pos = 0;    ///< next position to fill (under send_lock)
  std::uint32_t free_known = 0;   ///< slots known free (under send_lock)
  /// 1 while a producer advances the published word with FUTEX_WAKE_OP ("The end of a
  /// closed queue" above): set and cleared under send_lock (or by its recovery), read by
  /// consumers with an RMW that writes back what it reads, plus settle_waiter_bit (3)
  /// from a consumer that sleeps on the mark; every write a seq_cst RMW.
  shared_word publishing{0};
  // The published count (written by producers, read by consumers).
  alignas(64) shared_word published{0};
  // The consumers' line.
  alignas(64) mutex_state receive_lock;
  std::uint64_t read_pos = 0;        ///< next position to empty (under receive_lock)
  std::uint32_t available_known = 0; ///< messages known published (under receive_lock)
  /// 1: a try_receive took a message since the last slow-path attempt (under
  /// receive_lock; a hint, see "Batching" above).
  std::uint32_t flowing = 0;
  // The consumed count (written by consumers, read by producers).
  alignas(64) shared_word consumed{0};
};
// `publishing` took padding of the producers' line: every other field stays where older
// processes of corio look for it.
static_assert(offsetof(queue_header, published) == 128 && offsetof(queue_header, consumed) == 256);

/// The queue's own layout version, in the low byte of its layout word (the other shared
/// types keep detail::layout_version, 1). 2: a send publishes only while the queue is
/// open ("The end of a closed queue" above). A version-1 process publishes whatever the
/// closed bit, so its send could land after a version-2 consumer reported closed (the
/// message lost): each version refuses the other's queues (wrong_protocol_type).
inline constexpr std::uint32_t queue_layout_version = 2;
inline constexpr std::uint32_t queue_layout_word =
    (layout_word(shared_type::queue) & ~0xFFu) | queue_layout_version;
static_assert(queue_layout_word != layout_word(shared_type::queue) && (queue_layout_version & 0x80u) == 0);

/// The names every shm_queue .cpp file uses, in one place: each says
/// `using namespace detail::shm;` in its anonymous namespace.
namespace shm {

using detail::queue_header;
using detail::shared_word;

inline constexpr std::uint32_t waiters_bit = 1;
inline constexpr std::uint32_t closed_bit = 2;
/// In `publishing`: a consumer sleeps on the mark until the unmark wakes it ("The end of
/// a closed queue" above).
inline constexpr std::uint32_t settle_waiter_bit = 2;
inline constexpr std::uint32_t count_mask = (1u << 30) - 1;  // a count word holds 30 bits of count
inline constexpr std::size_t max_capacity = std::size_t{1} << 29;
inline constexpr std::size_t max_size = std::size_t{1} << 30;
inline constexpr std::size_t slot_header = 8;  // u32 size, u32 reserved
/// How many positions ahead of the one it fills a send prefetches ("Prefetch" above):
/// 8 messages at 70-100 ns each cover a 560-800 ns round trip (the slowest measured was
/// ~560 ns); 6 read as well, 4 mixed across runs, 10-16 lower, 24 overlapping (README).
inline constexpr std::uint32_t prefetch_distance = 8;

/// The count a count word holds (count * 4 + closed * 2 + waiters).
inline std::uint32_t count_of(std::uint32_t word) noexcept { return word >> 2; }

/// The error code of `e`.
inline std::error_code error(std::errc e) noexcept { return std::make_error_code(e); }

using detail::queue_geometry;

/// Where the slot of position `pos` starts: inside the mapping whatever `pos` is (a
/// peer can write the positions), since `g` is this handle's validated copy.
inline std::byte* slot_at(const queue_geometry& g, std::uint64_t pos) noexcept {
  return g.slots + (pos % g.capacity) * g.slot_stride;
}

/// Asks for ownership of the cache line holding `p` ahead of a store to it; a hint (no
/// fault, no architectural state). x86-64 PREFETCHW (GCC's __builtin_prefetch emits a
/// read prefetch for it unless built with -mprfchw); on x86-64 CPUs without it the
/// encoding is a no-op.
inline void prefetch_for_write(const std::byte* p) noexcept {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" ::"m"(*p));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

/// A send's "Prefetch" (above) before it fills position `pos` with a message of `size`
/// bytes, under the send lock.
inline void prefetch_ahead(const queue_header* h, const queue_geometry& g, std::uint64_t pos,
                           std::size_t size) noexcept {
  if (h->free_known <= prefetch_distance) {
    return;  // the slot that far ahead may still be a consumer's
  }
  const std::byte* ahead = slot_at(g, pos + prefetch_distance);
  prefetch_for_write(ahead);
  if (slot_header + size > 64) {
    prefetch_for_write(ahead + 64);  // its header and a message this size span two lines
  }
}

/// Before a holder uses a count cached by an earlier holder: ThreadSanitizer sees one
/// process, and when that earlier holder was another process, the acquire load behind
/// the cached count (pairing with the other side's release in advance()) happened where
/// it cannot see it, so it would report the slot access as a race. In TSan builds the
/// holder loads the other side's word with acquire order itself; elsewhere nothing (the
/// cache exists to keep the other side's cache line out of the way).
inline void acquire_for_sanitizer([[maybe_unused]] const shared_word& word) noexcept {
#if defined(__SANITIZE_THREAD__)
  (void)word.load(std::memory_order_acquire);
#endif
}

}  // namespace shm

}  // namespace corio::ipc::detail
