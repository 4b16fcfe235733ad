// The image mmap_server and mmap_client share through a memory-mapped file: the
// tutorial's 327 x 154 pixels, 3 bytes each (BGR, as cv2 stores them), and the checksum
// both sides compute to show that the client saw the whole frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace mmap_image {

constexpr int width = 327;
constexpr int height = 154;
constexpr int channels = 3;
constexpr std::size_t size = static_cast<std::size_t>(width) * height * channels;

/// FNV-1a over the bytes.
inline std::uint64_t checksum(std::span<const std::byte> bytes) noexcept {
  std::uint64_t h = 14695981039346656037ull;
  for (std::byte b : bytes) {
    h = (h ^ static_cast<std::uint64_t>(b)) * 1099511628211ull;
  }
  return h;
}

}  // namespace mmap_image
