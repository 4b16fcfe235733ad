// corio::ipc::pickle::big_int: ints beyond 64 bits as two's complement bytes, and the
// magnitude arithmetic (32-bit limbs) behind their conversions to and from decimal text,
// doubles and 64-bit ints.
#include <corio/ipc/pickle.hpp>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <limits>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

namespace {

// ---- magnitude arithmetic for big_int (32-bit limbs, little-endian) ----

using limbs = std::vector<std::uint32_t>;

void trim(limbs& m) {
  while (!m.empty() && m.back() == 0) {
    m.pop_back();
  }
}

// Negates a little-endian two's complement byte string in place (invert, add one).
void negate(std::vector<std::uint8_t>& bytes) {
  unsigned carry = 1;
  for (auto& b : bytes) {
    unsigned v = static_cast<std::uint8_t>(~b) + carry;
    b = static_cast<std::uint8_t>(v);
    carry = v >> 8;
  }
}

// The magnitude of a two's complement byte string.
limbs magnitude_of(std::span<const std::uint8_t> le, bool negative) {
  std::vector<std::uint8_t> bytes(le.begin(), le.end());
  if (negative) {
    negate(bytes);
  }
  limbs m((bytes.size() + 3) / 4, 0);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    m[i / 4] |= static_cast<std::uint32_t>(bytes[i]) << (8 * (i % 4));
  }
  trim(m);
  return m;
}

// Divides m by d in place; returns the remainder.
std::uint32_t divide_small(limbs& m, std::uint32_t d) {
  std::uint64_t rem = 0;
  for (std::size_t i = m.size(); i-- > 0;) {
    std::uint64_t cur = (rem << 32) | m[i];
    m[i] = static_cast<std::uint32_t>(cur / d);
    rem = cur % d;
  }
  trim(m);
  return static_cast<std::uint32_t>(rem);
}

void multiply_add(limbs& m, std::uint32_t mul, std::uint32_t add) {
  std::uint64_t carry = add;
  for (auto& limb : m) {
    std::uint64_t cur = static_cast<std::uint64_t>(limb) * mul + carry;
    limb = static_cast<std::uint32_t>(cur);
    carry = cur >> 32;
  }
  if (carry != 0) {
    m.push_back(static_cast<std::uint32_t>(carry));
  }
}

constexpr std::size_t max_decimal_digits = 4300;

}  // namespace

// ---- big_int ----

big_int::big_int(std::int64_t v) {
  auto u = static_cast<std::uint64_t>(v);
  for (int i = 0; i < 8; ++i) {
    m_bytes.push_back(static_cast<std::uint8_t>(u >> (8 * i)));
  }
  detail::normalize_twos_complement(m_bytes);
}

big_int big_int::from_unsigned(std::uint64_t v) {
  big_int b;
  for (int i = 0; i < 8; ++i) {
    b.m_bytes.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  b.m_bytes.push_back(0);
  detail::normalize_twos_complement(b.m_bytes);
  return b;
}

big_int big_int::from_twos_complement(std::span<const std::uint8_t> le) {
  big_int b;
  b.m_bytes.assign(le.begin(), le.end());
  detail::normalize_twos_complement(b.m_bytes);
  return b;
}

big_int detail::big_int_from_magnitude(const std::vector<std::uint32_t>& magnitude, bool negative) {
  std::vector<std::uint8_t> bytes;
  bytes.reserve(magnitude.size() * 4 + 1);
  for (std::uint32_t limb : magnitude) {
    for (int i = 0; i < 4; ++i) {
      bytes.push_back(static_cast<std::uint8_t>(limb >> (8 * i)));
    }
  }
  bytes.push_back(0);  // room for the sign
  if (negative) {
    negate(bytes);
  }
  return big_int::from_twos_complement(bytes);
}

result<big_int> big_int::from_decimal(std::string_view text) {
  bool negative = false;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    negative = text[0] == '-';
    text.remove_prefix(1);
  }
  if (text.empty() || text.size() > max_decimal_digits) {
    return unexpected(make_error_code(text.empty() ? errc::malformed : errc::out_of_range));
  }
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return unexpected(make_error_code(errc::malformed));
  }
  // Nine digits per pass over the limbs (10**9 fits a limb): the conversion is quadratic in
  // the length, and a pickle can hold thousands of 4300-digit LONG arguments.
  limbs m;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t n = std::min<std::size_t>(9, text.size() - i);
    std::uint32_t chunk = 0;
    std::uint32_t scale = 1;
    for (std::size_t k = 0; k < n; ++k) {
      chunk = chunk * 10 + static_cast<std::uint32_t>(text[i + k] - '0');
      scale *= 10;
    }
    multiply_add(m, scale, chunk);
    i += n;
  }
  trim(m);
  return detail::big_int_from_magnitude(m, negative);
}

std::optional<big_int> big_int::from_double(double d) {
  if (!std::isfinite(d) || std::trunc(d) != d) {
    return std::nullopt;
  }
  bool negative = d < 0;
  int exp = 0;
  double frac = std::frexp(std::fabs(d), &exp);  // |d| = frac * 2^exp, frac in [0.5, 1)
  if (exp <= 0) {
    return big_int{};
  }
  // 53 significant bits as an integer, then shifted into place.
  auto mant = static_cast<std::uint64_t>(std::ldexp(frac, 53));
  int shift = exp - 53;
  limbs m{static_cast<std::uint32_t>(mant), static_cast<std::uint32_t>(mant >> 32)};
  if (shift < 0) {
    std::uint64_t v = mant >> (-shift);
    m = {static_cast<std::uint32_t>(v), static_cast<std::uint32_t>(v >> 32)};
  } else {
    for (int i = 0; i < shift; ++i) {
      multiply_add(m, 2, 0);
    }
  }
  trim(m);
  return detail::big_int_from_magnitude(m, negative);
}

std::optional<std::int64_t> big_int::to_int64() const noexcept {
  if (m_bytes.size() > 8) {
    return std::nullopt;
  }
  std::uint64_t u = negative() ? ~std::uint64_t{0} : 0;
  for (std::size_t i = 0; i < m_bytes.size(); ++i) {
    u &= ~(std::uint64_t{0xff} << (8 * i));
    u |= static_cast<std::uint64_t>(m_bytes[i]) << (8 * i);
  }
  return static_cast<std::int64_t>(u);
}

std::optional<std::uint64_t> big_int::to_uint64() const noexcept {
  if (negative() || m_bytes.size() > 9 || (m_bytes.size() == 9 && m_bytes[8] != 0)) {
    return std::nullopt;
  }
  std::uint64_t u = 0;
  for (std::size_t i = 0; i < m_bytes.size() && i < 8; ++i) {
    u |= static_cast<std::uint64_t>(m_bytes[i]) << (8 * i);
  }
  return u;
}

// Rounded once, as Python's float(int): the magnitude's top 64 bits, with a 1 in the
// lowest of them when any bit below them is set, convert to the double that the whole
// magnitude rounds to (64 bits leave the 11 below the 53 kept, so ties stay ties), then
// scale exactly. (Accumulating limb by limb rounded at each step, one ulp off at times.)
double big_int::to_double() const noexcept {
  limbs m = magnitude_of(m_bytes, negative());
  if (m.empty()) {
    return 0.0;
  }
  const std::size_t bits = (m.size() - 1) * 32 + static_cast<std::size_t>(std::bit_width(m.back()));
  const std::size_t shift = bits > 64 ? bits - 64 : 0;
  double d;
  if (shift > 1100) {
    d = std::numeric_limits<double>::infinity();
  } else {
    const std::size_t limb = shift / 32;
    const std::size_t off = shift % 32;
    auto at = [&m](std::size_t i) -> std::uint64_t { return i < m.size() ? m[i] : 0; };
    const std::uint64_t low = at(limb) | (at(limb + 1) << 32);  // bits [32 * limb, 32 * limb + 64)
    const std::uint64_t top = off == 0 ? low : (low >> off) | (at(limb + 2) << (64 - off));
    bool sticky = off != 0 && (low & ((std::uint64_t{1} << off) - 1)) != 0;
    for (std::size_t i = 0; i < limb && !sticky; ++i) {
      sticky = m[i] != 0;
    }
    d = std::ldexp(static_cast<double>(top | (sticky ? 1U : 0U)), static_cast<int>(shift));
  }
  return negative() ? -d : d;
}

std::size_t big_int::bit_length() const noexcept {
  limbs m = magnitude_of(m_bytes, negative());
  if (m.empty()) {
    return 0;
  }
  return (m.size() - 1) * 32 + static_cast<std::size_t>(std::bit_width(m.back()));
}

std::string big_int::to_string() const {
  std::size_t bits = bit_length();
  // digits <= bits * log10(2) + 1
  if (bits > 0 && static_cast<double>(bits) * 0.30103 + 1 > static_cast<double>(max_decimal_digits)) {
    return "<int of " + std::to_string(bits) + " bits>";
  }
  limbs m = magnitude_of(m_bytes, negative());
  if (m.empty()) {
    return "0";
  }
  std::vector<std::uint32_t> chunks;  // base 10^9, least significant first
  while (!m.empty()) {
    chunks.push_back(divide_small(m, 1000000000));
  }
  std::string out = negative() ? "-" : "";
  out += std::to_string(chunks.back());
  for (std::size_t i = chunks.size() - 1; i-- > 0;) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%09u", chunks[i]);
    out += buf;
  }
  return out;
}

void detail::normalize_twos_complement(std::vector<std::uint8_t>& b) {
  while (b.size() > 1) {
    std::uint8_t last = b[b.size() - 1];
    std::uint8_t prev = b[b.size() - 2];
    if ((last == 0x00 && (prev & 0x80) == 0) || (last == 0xff && (prev & 0x80) != 0)) {
      b.pop_back();
    } else {
      break;
    }
  }
  if (b.size() == 1 && b[0] == 0) {
    b.clear();
  }
}

}  // namespace corio::ipc::pickle
