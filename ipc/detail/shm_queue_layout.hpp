// The layout of a corio::ipc::shm_queue in shared memory, shared by shm_queue.cpp (create,
// open, close) and shm_queue_transfer.cpp (the two sides' protocols); not installed,
// private to ipc/. The protocol over these words is described at the top of
// shm_queue_transfer.cpp.
// Thread-safety: the header lives in memory mapped by several processes; every field says
// who may write it. Cost: a few cache lines (each side's line is its own).
#pragma once

#include <cstddef>
#include <cstdint>
#include <system_error>

#include <corio/ipc/detail/shared_word.hpp>
#include <corio/ipc/shm_queue.hpp>

namespace corio::ipc::detail {

struct alignas(64) queue_header {
  shared_word magic{0};
  std::uint32_t capacity = 0;
  std::uint32_t max_message = 0;
  std::uint32_t slot_stride = 0;
  std::uint64_t total_size = 0;
  std::uint64_t slots_offset = 0;
  // The producers' line.
  alignas(64) mutex_state send_lock;
  std::uint64_t write_pos = 0;    ///< next position to fill (under send_lock)
  std::uint32_t free_known = 0;   ///< slots known free (under send_lock)
  // The published count (written by producers, read by consumers).
  alignas(64) shared_word published{0};
  // The consumers' line.
  alignas(64) mutex_state receive_lock;
  std::uint64_t read_pos = 0;        ///< next position to empty (under receive_lock)
  std::uint32_t available_known = 0; ///< messages known published (under receive_lock)
  // The consumed count (written by consumers, read by producers).
  alignas(64) shared_word consumed{0};
};

/// The names shm_queue.cpp and shm_queue_transfer.cpp both use, in one place: each says
/// `using namespace detail::shm;` in its anonymous namespace.
namespace shm {

using detail::queue_header;
using detail::shared_word;

inline constexpr std::uint32_t waiters_bit = 1;
inline constexpr std::uint32_t closed_bit = 2;
inline constexpr std::uint32_t count_mask = (1u << 30) - 1;  // a count word holds 30 bits of count
inline constexpr std::size_t max_capacity = std::size_t{1} << 29;
inline constexpr std::size_t max_size = std::size_t{1} << 30;
inline constexpr std::size_t slot_header = 8;  // u32 size, u32 reserved

/// The count a count word holds (count * 4 + closed * 2 + waiters).
inline std::uint32_t count_of(std::uint32_t word) noexcept { return word >> 2; }

/// The error code of `e`.
inline std::error_code error(std::errc e) noexcept { return std::make_error_code(e); }

}  // namespace shm

}  // namespace corio::ipc::detail
