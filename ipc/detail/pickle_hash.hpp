// Hashing of pickle values, shared by value::key_hash (pickle_equality.cpp) and the index of
// dict and set (pickle_containers.cpp); not installed, private to ipc/.
// A peer chooses the keys of the dicts and sets it sends, so the hashes must not let it pick
// keys that collide in an index (a HashDoS: n colliding keys cost n^2 comparisons):
// - str and bytes (and integers no double holds exactly) go through SipHash-1-3 (OpenSSL's
//   EVP_MAC "SIPHASH", as Python and Rust hash strings) under a per-process random key.
//   Before this, the seed was mixed in after libstdc++'s std::hash, whose seed is fixed:
//   strings colliding under it (easy to make: every 8-byte block can be solved for) kept
//   colliding whatever the seed.
// - Numbers a double holds exactly hash by that double (so 1, 1.0 and True are one key, as
//   in Python), mixed with the key; distinct doubles never give equal hashes. A NaN, never
//   key-equal to itself, takes a fresh hash per call (pickle_equality.cpp).
// Thread-safety: any thread (each keeps its own SipHash context; the key and the process's
// context are made once, thread-safely; every thread hashes a key alike). Cost: hash_bytes ~70 ns for a short string (the EVP call), numbers
// a few ns.
#pragma once

#include <sys/random.h>

#include <bit>
#include <chrono>
#include <cstdint>
#include <string_view>

namespace corio::ipc::pickle::detail {

// splitmix64's finalizer: spreads the bits of a hash.
inline std::uint64_t mix(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// A per-process random key mixed into every hash, so that a peer cannot pick numbers (or
// anything whose hashes differ before mixing) that collide in a dict's index.
inline std::uint64_t hash_seed() noexcept {
  static const std::uint64_t seed = [] {
    std::uint64_t s = 0;
    if (::getrandom(&s, sizeof s, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof s)) {
      s = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
          reinterpret_cast<std::uintptr_t>(&s);
    }
    return s;
  }();
  return seed;
}

/// SipHash-1-3 of `s` under the per-process key, mixed with `tag` (pickle_hash.cpp).
std::size_t hash_bytes(std::string_view s, std::uint64_t tag) noexcept;

inline constexpr std::uint64_t tag_none = 0x6e6f6e65;
inline constexpr std::uint64_t tag_str = 0x737472;
inline constexpr std::uint64_t tag_bytes = 0x6279746573;
inline constexpr std::uint64_t tag_tuple = 0x7475706c65;
inline constexpr std::uint64_t tag_list = 0x6c697374;
inline constexpr std::uint64_t tag_set = 0x736574;
inline constexpr std::uint64_t tag_dict = 0x64696374;
inline constexpr std::uint64_t tag_object = 0x6f626a;
inline constexpr std::uint64_t tag_int = 0x696e74;

inline std::size_t hash_number(double d) noexcept {
  if (d == 0.0) {
    d = 0.0;  // -0.0 and 0.0 are one key
  }
  std::uint64_t bits = std::bit_cast<std::uint64_t>(d);
  return static_cast<std::size_t>(mix(bits ^ hash_seed()));
}

}  // namespace corio::ipc::pickle::detail
