// A worker's bounded run queue: the owner pushes and pops at one end, thieves steal half.
//
// Layout: a power-of-two ring of task pointers, a `tail` written only by the owner, and a
// 64-bit `head` that packs two 32-bit indices: `real` (next task to pop) and `steal`
// (start of the range a thief is still copying). While steal != real a thief is copying
// [steal, real): the owner may keep popping but must not overwrite those slots, so pushes
// count free space from `steal`; other thieves back off. Indices wrap modulo 2^32.
// Thread-safety: push/pop by the owner only; steal_into by any thread.
// Cost: push is a relaxed slot store plus a release store; pop and steal one CAS each.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace corio::detail {

class local_queue {
 public:
  explicit local_queue(std::uint32_t capacity)
      : m_buffer(new std::atomic<void*>[capacity]), m_mask(capacity - 1), m_capacity(capacity) {}

  [[nodiscard]] std::uint32_t capacity() const noexcept { return m_capacity; }

  /// Owner: appends `task`. Returns false if the queue is full; then the owner moves
  /// half of it out with take_half_for_overflow() and retries.
  bool try_push(void* task) noexcept {
    std::uint32_t tail = m_tail.load(std::memory_order_relaxed);  // only we write it
    // acquire: pairs with the release CAS in steal_into()'s second step, so slots a thief
    // finished copying may be reused.
    std::uint64_t head = m_head.load(std::memory_order_acquire);
    if (tail - steal_of(head) >= m_capacity) {
      return false;
    }
    m_buffer[tail & m_mask].store(task, std::memory_order_relaxed);
    // release: publishes the slot to thieves; pairs with the acquire load of m_tail in
    // steal_into().
    m_tail.store(tail + 1, std::memory_order_release);
    return true;
  }

  /// Owner: removes the oldest half of a full queue into `out` (for the inject queue).
  /// Returns false if the queue is no longer full or a thief is active (the caller then
  /// retries its push, or overflows just the one task).
  bool take_half_for_overflow(std::vector<void*>& out) {
    std::uint64_t head = m_head.load(std::memory_order_acquire);
    std::uint32_t real = real_of(head);
    // Only when the queue is still exactly full and no thief is copying: thieves may
    // have taken tasks since try_push() failed, and taking capacity/2 slots from a
    // shorter queue would read past the tail (slots of tasks that already ran).
    if (steal_of(head) != real || m_tail.load(std::memory_order_relaxed) - real != m_capacity) {
      return false;
    }
    std::uint32_t n = m_capacity / 2;
    std::uint64_t next = pack(real + n, real + n);
    // acq_rel: acquire orders the slot reads after any thief's claim; release is moot
    // (we only shrink). Failure means a thief moved head: give up this time.
    if (!m_head.compare_exchange_strong(head, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
      return false;
    }
    for (std::uint32_t i = 0; i < n; ++i) {
      out.push_back(m_buffer[(real + i) & m_mask].load(std::memory_order_relaxed));
    }
    return true;
  }

  /// Owner: takes the oldest task, or nullptr.
  void* pop() noexcept {
    std::uint64_t head = m_head.load(std::memory_order_acquire);
    for (;;) {
      std::uint32_t steal = steal_of(head);
      std::uint32_t real = real_of(head);
      if (real == m_tail.load(std::memory_order_relaxed)) {
        return nullptr;
      }
      std::uint64_t next = steal == real ? pack(real + 1, real + 1) : pack(steal, real + 1);
      // acq_rel: claims slot `real` against thieves (whose claim CAS is acq_rel too).
      if (m_head.compare_exchange_weak(head, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
        return m_buffer[real & m_mask].load(std::memory_order_relaxed);
      }
    }
  }

  /// Thief: moves half of this queue's tasks into `dst` (owned by the caller, which must
  /// hold at most half its capacity) and returns one of them to run now, or nullptr.
  void* steal_into(local_queue& dst) noexcept {
    std::uint32_t dst_tail = dst.m_tail.load(std::memory_order_relaxed);  // caller owns dst
    std::uint64_t dst_head = dst.m_head.load(std::memory_order_acquire);
    if (dst_tail - steal_of(dst_head) > dst.m_capacity / 2) {
      return nullptr;
    }
    // Step 1: claim [real, real + n) by advancing `real` while keeping `steal` behind.
    std::uint64_t head = m_head.load(std::memory_order_acquire);
    std::uint32_t n = 0;
    std::uint32_t first = 0;
    for (;;) {
      std::uint32_t steal = steal_of(head);
      std::uint32_t real = real_of(head);
      if (steal != real) {
        return nullptr;  // another thief is copying
      }
      // acquire: pairs with the owner's release store of m_tail; the slots are visible.
      std::uint32_t tail = m_tail.load(std::memory_order_acquire);
      n = tail - real;
      n -= n / 2;
      if (n == 0) {
        return nullptr;
      }
      std::uint64_t next = pack(steal, real + n);
      if (m_head.compare_exchange_weak(head, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
        first = real;
        head = next;
        break;
      }
    }
    // Step 2: copy the claimed tasks.
    for (std::uint32_t i = 0; i < n; ++i) {
      void* t = m_buffer[(first + i) & m_mask].load(std::memory_order_relaxed);
      dst.m_buffer[(dst_tail + i) & dst.m_mask].store(t, std::memory_order_relaxed);
    }
    // Step 3: release the range: steal catches up with real (the owner may have popped
    // meanwhile, moving real further).
    for (;;) {
      std::uint64_t next = pack(real_of(head), real_of(head));
      // release: tells the owner the slots may be overwritten; pairs with try_push's acquire.
      if (m_head.compare_exchange_weak(head, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
        break;
      }
    }
    void* run_now = dst.m_buffer[(dst_tail + n - 1) & dst.m_mask].load(std::memory_order_relaxed);
    if (n > 1) {
      // release: publishes the copied slots to thieves of dst.
      dst.m_tail.store(dst_tail + n - 1, std::memory_order_release);
    }
    return run_now;
  }

  /// Approximate number of queued tasks (any thread).
  [[nodiscard]] std::uint32_t size() const noexcept {
    std::uint64_t head = m_head.load(std::memory_order_acquire);
    std::uint32_t tail = m_tail.load(std::memory_order_acquire);
    return tail - real_of(head);
  }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

 private:
  static constexpr std::uint32_t steal_of(std::uint64_t h) { return static_cast<std::uint32_t>(h >> 32); }
  static constexpr std::uint32_t real_of(std::uint64_t h) { return static_cast<std::uint32_t>(h); }
  static constexpr std::uint64_t pack(std::uint32_t steal, std::uint32_t real) {
    return (static_cast<std::uint64_t>(steal) << 32) | real;
  }

  alignas(64) std::atomic<std::uint64_t> m_head{0};
  alignas(64) std::atomic<std::uint32_t> m_tail{0};
  std::unique_ptr<std::atomic<void*>[]> m_buffer;
  std::uint32_t m_mask;
  std::uint32_t m_capacity;
};

}  // namespace corio::detail
