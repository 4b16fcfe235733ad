// A worker's timers: a binary min-heap ordered by (deadline, arrival), holding intrusive
// nodes that live in the sleeping coroutines' frames.
//
// One heap per worker, touched only by its owner; the worker sleeps in io_uring_enter
// with the earliest deadline as its timeout, so N sleeps cost no kernel timers at all.
// Equal deadlines fire in the order they were armed. Cancellation (any thread) goes
// through the worker's cancel list (completion.hpp), which removes the node here.
// Thread-safety: none of its own; the worker guards it with its timer lock, because an
// idle worker may take over due timers of a blocked one (runtime/timers.cpp).
// Cost: O(log n) insert/remove; 100,000 timers is a 17-level heap.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <corio/runtime/detail/completion.hpp>

namespace corio::detail {

/// The steady clock in ns since its epoch: the unit of timer_node::deadline_ns.
inline std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class timer_heap {
 public:
  void push(timer_node* node) {
    node->sequence = m_next_sequence++;
    node->heap_index = m_heap.size();
    m_heap.push_back(node);
    sift_up(node->heap_index);
  }

  /// Whether `node` is in this heap (armed and neither fired nor removed).
  [[nodiscard]] bool contains(const timer_node* node) const noexcept {
    return node->heap_index < m_heap.size() && m_heap[node->heap_index] == node;
  }

  /// Takes `node` out; it must be in the heap (contains()).
  void remove(timer_node* node) {
    std::size_t i = node->heap_index;
    std::size_t last = m_heap.size() - 1;
    if (i != last) {
      swap_at(i, last);
      m_heap.pop_back();
      sift_down(i);
      sift_up(i);
    } else {
      m_heap.pop_back();
    }
    node->heap_index = timer_node::kNotInHeap;
  }

  [[nodiscard]] timer_node* top() const noexcept { return m_heap.empty() ? nullptr : m_heap.front(); }
  void pop() { remove(m_heap.front()); }
  [[nodiscard]] bool empty() const noexcept { return m_heap.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return m_heap.size(); }
  void clear() noexcept {
    for (timer_node* node : m_heap) {
      node->heap_index = timer_node::kNotInHeap;
    }
    m_heap.clear();
  }

 private:
  static bool before(const timer_node* a, const timer_node* b) noexcept {
    return a->deadline_ns < b->deadline_ns || (a->deadline_ns == b->deadline_ns && a->sequence < b->sequence);
  }
  void swap_at(std::size_t a, std::size_t b) noexcept {
    std::swap(m_heap[a], m_heap[b]);
    m_heap[a]->heap_index = a;
    m_heap[b]->heap_index = b;
  }
  void sift_up(std::size_t i) noexcept {
    while (i > 0) {
      std::size_t parent = (i - 1) / 2;
      if (!before(m_heap[i], m_heap[parent])) {
        break;
      }
      swap_at(i, parent);
      i = parent;
    }
  }
  void sift_down(std::size_t i) noexcept {
    std::size_t n = m_heap.size();
    for (;;) {
      std::size_t left = 2 * i + 1;
      std::size_t best = i;
      if (left < n && before(m_heap[left], m_heap[best])) {
        best = left;
      }
      if (left + 1 < n && before(m_heap[left + 1], m_heap[best])) {
        best = left + 1;
      }
      if (best == i) {
        break;
      }
      swap_at(i, best);
      i = best;
    }
  }

  std::vector<timer_node*> m_heap;
  std::uint64_t m_next_sequence = 0;
};

}  // namespace corio::detail
