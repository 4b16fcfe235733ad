// job_server's job function (declared in job_function.hpp): str upper-cased, bytes
// reversed, int and float squared; anything else throws. An int of any size up to
// kMaxSquaredBits is squared exactly: one within 64 bits in 128-bit arithmetic, a larger
// one (pickle::big_int, Python's LONG1/LONG4 bytes: little-endian two's complement) by a
// schoolbook square of its magnitude in 32-bit limbs.
#include "job_function.hpp"

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace job_server {

namespace pickle = corio::ipc::pickle;

namespace {

// 128-bit integers (a GNU extension g++ and clang share): an int64's square fits.
__extension__ using int128 = __int128;
__extension__ using uint128 = unsigned __int128;

// The square of an int64 (or a bool), exactly.
pickle::value square_small(std::int64_t v) {
  int128 x = v;
  int128 sq = x * x;  // at most 2**126: no overflow
  if (sq <= INT64_MAX) {
    return static_cast<std::int64_t>(sq);
  }
  std::uint8_t le[17] = {};
  for (int i = 0; i < 16; ++i) {
    le[i] = static_cast<std::uint8_t>(static_cast<uint128>(sq) >> (8 * i));
  }
  return pickle::big_int::from_twos_complement(le);  // 17 bytes: the top one keeps it positive
}

// The magnitude of `b` as 32-bit limbs, least significant first.
std::vector<std::uint32_t> magnitude(const pickle::big_int& b) {
  auto twos = b.twos_complement();
  std::vector<std::uint8_t> bytes(twos.begin(), twos.end());
  if (b.negative()) {  // -x: invert every bit and add one
    unsigned carry = 1;
    for (std::uint8_t& byte : bytes) {
      const unsigned v = static_cast<std::uint8_t>(~byte) + carry;
      byte = static_cast<std::uint8_t>(v);
      carry = v >> 8;
    }
  }
  std::vector<std::uint32_t> limbs((bytes.size() + 3) / 4, 0);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    limbs[i / 4] |= static_cast<std::uint32_t>(bytes[i]) << (8 * (i % 4));
  }
  return limbs;
}

// a * a, schoolbook: row i adds a[i] * a into the result from limb i on. Each step's sum,
// (2**32 - 1)**2 + 2 * (2**32 - 1), is 2**64 - 1 at most: it fits the 64-bit accumulator.
std::vector<std::uint32_t> square_limbs(const std::vector<std::uint32_t>& a) {
  const std::size_t n = a.size();
  std::vector<std::uint32_t> r(2 * n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t carry = 0;
    for (std::size_t j = 0; j < n; ++j) {
      const std::uint64_t t = static_cast<std::uint64_t>(a[i]) * a[j] + r[i + j] + carry;
      r[i + j] = static_cast<std::uint32_t>(t);
      carry = t >> 32;
    }
    r[i + n] = static_cast<std::uint32_t>(carry);  // no earlier row reached limb i + n
  }
  return r;
}

// The square of an int beyond 64 bits, exactly (a non-negative big_int); throws past
// kMaxSquaredBits.
pickle::value square_big(const pickle::big_int& b) {
  if (b.bit_length() > kMaxSquaredBits) {
    throw std::runtime_error("this job function squares ints of at most " + std::to_string(kMaxSquaredBits) +
                             " bits, not one of " + std::to_string(b.bit_length()));
  }
  const std::vector<std::uint32_t> sq = square_limbs(magnitude(b));
  std::vector<std::uint8_t> le(4 * sq.size() + 1, 0);  // the last byte, zero, keeps it positive
  for (std::size_t i = 0; i < 4 * sq.size(); ++i) {
    le[i] = static_cast<std::uint8_t>(sq[i / 4] >> (8 * (i % 4)));
  }
  return pickle::big_int::from_twos_complement(le);  // (normalized: the value's minimal bytes)
}

}  // namespace

pickle::value job_function(const pickle::value& data) {
  switch (data.type()) {
    case pickle::kind::str: {
      std::string s = *data.if_str();
      for (char& c : s) {
        if (c >= 'a' && c <= 'z') {
          c = static_cast<char>(c - 'a' + 'A');
        }
      }
      return s;
    }
    case pickle::kind::bytes: {
      std::string b = *data.if_bytes();
      return pickle::value::make_bytes(std::string(b.rbegin(), b.rend()));
    }
    case pickle::kind::boolean: return square_small(*data.as<bool>() ? 1 : 0);
    case pickle::kind::integer: return square_small(*data.as<std::int64_t>());
    case pickle::kind::big_integer: return square_big(*data.if_big_int());
    case pickle::kind::floating: {
      double d = *data.as<double>();
      return d * d;
    }
    default: throw std::runtime_error(std::string("no job function for a ") + std::string(data.type_name()));
  }
}

}  // namespace job_server
