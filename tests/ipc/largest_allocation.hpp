// Replaces the global operator new/delete of ONE test program (include this header in exactly
// one .cpp of it) to record the largest single allocation made while `g_watch` is set: proves
// that a hostile length prefix is refused before anything of its size is allocated.
// Every replaced form allocates with malloc and frees with free, the nothrow forms included
// (Catch allocates with `new (std::nothrow)`; left to the sanitizer's own nothrow new, its
// blocks would reach our delete and ASan would report an alloc-dealloc mismatch).
// Array and aligned forms are not replaced: the runtime's own new[]/delete[] and aligned
// pairs stay matched with each other.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

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

void* operator new(std::size_t n) {
  if (void* p = watched_malloc(n)) {
    return p;
  }
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return watched_malloc(n); }
// Not inlined: g++ 12 at -O3 would see free() of a pointer from operator new in every
// caller and warn (-Wmismatched-new-delete), though the two belong together here.
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
