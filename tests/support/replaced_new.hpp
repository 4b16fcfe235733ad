// Replaces the global operator new/delete of ONE test program (include this header in
// exactly one .cpp of it) with forms that allocate through corio_test_allocate(), which
// that program defines: its policy (record the largest allocation, fail past a size, fail
// the n-th) in one function, the replacement itself here once.
// Every replaced form frees with free(), the nothrow forms included (Catch allocates with
// `new (std::nothrow)`; left to the sanitizer's own nothrow new, its blocks would reach our
// delete and ASan would report an alloc-dealloc mismatch). Array and aligned forms are not
// replaced: the runtime's own new[]/delete[] and aligned pairs stay matched with each other.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

/// The program's allocation policy: a block from malloc(), or null to make this allocation
/// fail (operator new then throws std::bad_alloc; the nothrow form returns null).
void* corio_test_allocate(std::size_t n) noexcept;

void* operator new(std::size_t n) {
  if (void* p = corio_test_allocate(n)) {
    return p;
  }
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return corio_test_allocate(n); }
// Not inlined: g++ 12 at -O3 would see free() of a pointer from operator new in every
// caller and warn (-Wmismatched-new-delete), though the two belong together here.
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
