// ring_buffer<T>: the FIFO storage of a channel. A power-of-two circular array,
// allocated at the first push with min(16, bit_ceil(limit)) slots, that doubles when
// full; the caller never pushes more than `limit` values, so it never holds more than
// bit_ceil(limit) slots. It never shrinks.
// Thread-safety: none (guarded by the channel's lock). Cost: amortised O(1), one
// allocation per doubling. push() reports an allocation that fails by returning false
// (the value is then not moved from and the buffer is unchanged): it never throws, so a
// caller may push under a spin lock.
#pragma once

#include <bit>
#include <cstddef>
#include <memory>
#include <new>
#include <utility>

namespace corio::detail {

template <class T>
class ring_buffer {
 public:
  /// A buffer that will never be asked to hold more than `limit` (>= 1) values.
  explicit ring_buffer(std::size_t limit) noexcept : m_first_capacity(limit >= 16 ? 16 : std::bit_ceil(limit)) {}
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

  /// Appends `v`, growing the array when it is full. False when that growth cannot
  /// allocate (`v` untouched).
  [[nodiscard]] bool push(T&& v) noexcept {
    if (m_size == m_capacity && !grow()) {
      return false;
    }
    ::new (static_cast<void*>(m_data + ((m_head + m_size) & (m_capacity - 1)))) T(std::move(v));
    ++m_size;
    return true;
  }
  /// Appends `v` into a free slot. Precondition: a slot is free (a pop() since the
  /// buffer was last full).
  void push_into_free_slot(T&& v) noexcept {
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
  // Out of line and cold: the push fast path stays a compare and a move.
  [[gnu::noinline, gnu::cold]] bool grow() noexcept {
    std::size_t cap = m_capacity == 0 ? m_first_capacity : m_capacity * 2;
    T* data = nullptr;
    try {
      data = std::allocator<T>().allocate(cap);
    } catch (const std::bad_alloc&) {
      return false;
    }
    for (std::size_t i = 0; i < m_size; ++i) {
      T* p = std::launder(m_data + ((m_head + i) & (m_capacity - 1)));
      ::new (static_cast<void*>(data + i)) T(std::move(*p));
      p->~T();
    }
    std::allocator<T>().deallocate(m_data, m_capacity);
    m_data = data;
    m_capacity = cap;
    m_head = 0;
    return true;
  }

  std::size_t m_first_capacity;  // a power of two
  T* m_data = nullptr;
  std::size_t m_capacity = 0;  // 0 or a power of two
  std::size_t m_head = 0;
  std::size_t m_size = 0;
};

}  // namespace corio::detail
