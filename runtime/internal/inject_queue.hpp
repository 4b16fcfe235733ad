// The runtime's global FIFO of runnable tasks: spawns from outside the runtime, wake-ups
// from foreign threads, and the overflow of full local queues.
//
// A mutex-protected ring buffer with an atomic length, so workers can see it is empty
// without taking the lock (the common case). Thread-safety: any thread.
// Cost: one uncontended lock per push or batch; empty checks are one relaxed load.
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <mutex>
#include <vector>

namespace corio::detail {

class inject_queue {
 public:
  void push(void* task) {
    std::lock_guard lock(m_mutex);
    m_tasks.push_back(task);
    // release: pairs with the acquire load in size(); see runtime_core::notify_one for
    // the sleep/wake ordering.
    m_size.store(m_tasks.size(), std::memory_order_release);
  }

  void push_batch(const std::vector<void*>& tasks) {
    std::lock_guard lock(m_mutex);
    m_tasks.insert(m_tasks.end(), tasks.begin(), tasks.end());
    m_size.store(m_tasks.size(), std::memory_order_release);
  }

  /// Pops up to `max` tasks into `out`; returns how many.
  std::size_t pop_batch(std::vector<void*>& out, std::size_t max) {
    if (empty()) {
      return 0;
    }
    std::lock_guard lock(m_mutex);
    std::size_t n = 0;
    while (n < max && !m_tasks.empty()) {
      out.push_back(m_tasks.front());
      m_tasks.pop_front();
      ++n;
    }
    m_size.store(m_tasks.size(), std::memory_order_release);
    return n;
  }

  /// Removes everything (shutdown).
  std::vector<void*> drain() {
    std::lock_guard lock(m_mutex);
    std::vector<void*> all(m_tasks.begin(), m_tasks.end());
    m_tasks.clear();
    m_size.store(0, std::memory_order_release);
    return all;
  }

  [[nodiscard]] std::size_t size() const noexcept { return m_size.load(std::memory_order_acquire); }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }

 private:
  std::mutex m_mutex;
  std::deque<void*> m_tasks;
  std::atomic<std::size_t> m_size{0};
};

}  // namespace corio::detail
