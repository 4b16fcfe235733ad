// Internals shared by pickle.cpp, pickle_reader.cpp and pickle_writer.cpp (not installed):
// two's complement helpers and UTF-8 validation as Python's 'surrogatepass' accepts it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include <corio/ipc/pickle.hpp>

namespace corio::ipc::pickle::detail {

/// Drops redundant sign bytes; zero becomes empty.
void normalize_twos_complement(std::vector<std::uint8_t>& b);

/// A big_int from a magnitude (32-bit limbs, least significant first) and a sign.
big_int big_int_from_magnitude(const std::vector<std::uint32_t>& magnitude, bool negative);

/// Whether s is UTF-8 in which surrogate code points (U+D800..U+DFFF, as three bytes)
/// are allowed: what Python's str.encode('utf-8', 'surrogatepass') produces. Overlong
/// forms and code points above U+10FFFF are refused.
inline bool valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t n;
    std::uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) <= n) {
      return false;
    }
    for (std::size_t i = 1; i <= n; ++i) {
      unsigned cc = p[i];
      if ((cc & 0xc0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff))) {
      return false;
    }
    p += n + 1;
  }
  return true;
}

}  // namespace corio::ipc::pickle::detail
