// ring_buffer<T>: the FIFO storage of a channel. A power-of-two circular array that
// doubles when full (up to the channel's capacity, enforced by the caller).
// Thread-safety: none (guarded by the channel's lock). Cost: amortised O(1), one
// allocation per doubling.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>

namespace corio::detail {

template <class T>
class ring_buffer {
 public:
  ring_buffer() noexcept = default;
  ring_buffer(const ring_buffer&) = delete;
  ring_buffer& operator=(const ring_buffer&) = delete;
  ~ring_buffer() {
    while (m_size != 0) {
      (void)pop();
    }
    std::allocator<T>().deallocate(m_data, m_capacity);
  }

  [[nodiscard]] bool empty() const noexcept { return m_size == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return m_size; }

  void push(T&& v) {
    if (m_size == m_capacity) {
      grow();
    }
    ::new (static_cast<void*>(m_data + ((m_head + m_size) & (m_capacity - 1)))) T(std::move(v));
    ++m_size;
  }
  /// Precondition: !empty().
  T pop() {
    T* p = std::launder(m_data + m_head);
    T v(std::move(*p));
    p->~T();
    m_head = (m_head + 1) & (m_capacity - 1);
    --m_size;
    return v;
  }

 private:
  void grow() {
    std::size_t cap = m_capacity == 0 ? 16 : m_capacity * 2;
    T* data = std::allocator<T>().allocate(cap);
    for (std::size_t i = 0; i < m_size; ++i) {
      T* p = std::launder(m_data + ((m_head + i) & (m_capacity - 1)));
      ::new (static_cast<void*>(data + i)) T(std::move(*p));
      p->~T();
    }
    std::allocator<T>().deallocate(m_data, m_capacity);
    m_data = data;
    m_capacity = cap;
    m_head = 0;
  }

  T* m_data = nullptr;
  std::size_t m_capacity = 0;  // 0 or a power of two
  std::size_t m_head = 0;
  std::size_t m_size = 0;
};

}  // namespace corio::detail
