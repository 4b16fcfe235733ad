// Helpers shared by the sync/ tests.
#pragma once

#include <atomic>
#include <cstdint>

#include <corio/runtime/runtime.hpp>

namespace corio_test {

/// A runtime with `workers` workers (2 by default, as in the scenarios).
inline corio::runtime_config sync_config(unsigned workers = 2) {
  corio::runtime_config c;
  c.workers = workers;
  return c;
}

/// Records the maximum of a value seen by many threads.
inline void raise_max(std::atomic<std::int64_t>& max, std::int64_t v) {
  std::int64_t cur = max.load(std::memory_order_relaxed);
  while (v > cur && !max.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

/// Small xorshift generator (tests must not share std::rand across threads).
struct xorshift {
  std::uint64_t s;
  explicit xorshift(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  unsigned below(unsigned n) { return static_cast<unsigned>(next() % n); }
};

}  // namespace corio_test
