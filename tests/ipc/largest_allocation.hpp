// Replaces the global operator new/delete of ONE test program (include this header in exactly
// one .cpp of it; the replacement is replaced_new.hpp's) to record the largest single
// allocation made while `g_watch` is set: proves that a hostile length prefix is refused
// before anything of its size is allocated.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>

#include "replaced_new.hpp"

namespace {
std::atomic<bool> g_watch{false};
std::atomic<std::size_t> g_largest{0};

// Relaxed: a counter read by the same thread after the code it watches has run.
void* watched_malloc(std::size_t n) noexcept {
  if (g_watch.load(std::memory_order_relaxed)) {
    std::size_t seen = g_largest.load(std::memory_order_relaxed);
    while (n > seen && !g_largest.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
    }
  }
  return std::malloc(n == 0 ? 1 : n);
}
}  // namespace

void* corio_test_allocate(std::size_t n) noexcept { return watched_malloc(n); }
