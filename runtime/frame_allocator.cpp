// Slab allocator for coroutine frames and join states (see the header for the contract).
//
// Memory comes in 2 MiB-aligned chunks advised as transparent huge pages, so a million
// live tasks fault in ~100 huge pages instead of ~50,000 small ones (page faults were
// the largest single cost of spawning in profiles). Blocks are carved by size class
// (16-byte granularity up to 1 KiB) and recycled through per-thread free lists. A list
// that grows past kSpill blocks (a thread that frees what others allocate) hands the
// whole list to a global pool, where threads that run dry take whole lists back, so
// producer/consumer patterns reuse memory instead of carving more. A thread that exits
// donates its lists. Chunks are never returned to the OS: the footprint is the peak
// number of live frames (documented; the same trade as Tokio's task allocator).
#include <corio/runtime/detail/frame_allocator.hpp>

#include <sys/mman.h>

#include <cstdint>
#include <mutex>
#include <new>
#include <vector>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CORIO_FRAME_SLAB 0
#else
#define CORIO_FRAME_SLAB 1
#endif

namespace corio::detail {

#if CORIO_FRAME_SLAB
namespace {

constexpr std::size_t kGranule = 16;
constexpr std::size_t kClasses = 64;  // blocks up to 1 KiB
constexpr std::size_t kMaxBlock = kGranule * kClasses;
constexpr std::size_t kChunk = std::size_t{2} << 20;
constexpr std::size_t kSpill = 4096;

struct free_block {
  free_block* next;
};

struct chain {
  free_block* head;
  std::size_t count;
};

struct region {
  char* begin;
  char* end;
};

struct global_pool {
  std::mutex mutex;
  std::vector<chain> chains[kClasses];
  std::vector<region> regions;  // unused bump space of threads that exited
};

global_pool& pool() {
  static global_pool* p = new global_pool();  // never destroyed: threads may exit late
  return *p;
}

char* new_chunk() {
  // Over-map by one chunk to align to 2 MiB (a THP needs an aligned 2 MiB range).
  void* raw = ::mmap(nullptr, 2 * kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    throw std::bad_alloc();
  }
  auto base = reinterpret_cast<std::uintptr_t>(raw);
  std::uintptr_t aligned = (base + kChunk - 1) & ~(kChunk - 1);
  if (aligned > base) {
    ::munmap(raw, aligned - base);
  }
  std::uintptr_t end = base + 2 * kChunk;
  if (end > aligned + kChunk) {
    ::munmap(reinterpret_cast<void*>(aligned + kChunk), end - (aligned + kChunk));
  }
  ::madvise(reinterpret_cast<void*>(aligned), kChunk, MADV_HUGEPAGE);
  return reinterpret_cast<char*>(aligned);
}

struct thread_cache {
  chain lists[kClasses] = {};
  char* bump = nullptr;
  char* bump_end = nullptr;

  ~thread_cache() {
    global_pool& g = pool();
    std::lock_guard lock(g.mutex);
    for (std::size_t c = 0; c < kClasses; ++c) {
      if (lists[c].count != 0) {
        g.chains[c].push_back(lists[c]);
      }
    }
    // The unused rest of our bump region goes back for the next thread to carve from.
    if (bump != nullptr && bump < bump_end) {
      g.regions.push_back({bump, bump_end});
    }
  }

  void* carve(std::size_t bytes) {
    if (bump == nullptr || bump + bytes > bump_end) {
      region r = take_region();
      bump = r.begin;
      bump_end = r.end;
    }
    void* p = bump;
    bump += bytes;
    return p;
  }

  /// A bump region left by an exited thread (if it can hold a large block), else a new chunk.
  static region take_region() {
    {
      global_pool& g = pool();
      std::lock_guard lock(g.mutex);
      while (!g.regions.empty()) {
        region r = g.regions.back();
        g.regions.pop_back();
        if (static_cast<std::size_t>(r.end - r.begin) >= kMaxBlock) {
          return r;
        }
        // Too small to be worth keeping: dropped (at most kMaxBlock bytes per thread exit).
      }
    }
    char* chunk = new_chunk();
    return {chunk, chunk + kChunk};
  }

  bool refill(std::size_t c) {
    global_pool& g = pool();
    std::lock_guard lock(g.mutex);
    if (g.chains[c].empty()) {
      return false;
    }
    lists[c] = g.chains[c].back();
    g.chains[c].pop_back();
    return true;
  }

  void spill(std::size_t c) {
    global_pool& g = pool();
    std::lock_guard lock(g.mutex);
    g.chains[c].push_back(lists[c]);
    lists[c] = chain{nullptr, 0};
  }
};

// The hot path reads one initial-exec TLS pointer (a single %fs-relative load, even in the
// shared library, instead of a __tls_get_addr call and an init-guard check per frame). The
// cache itself is created on a thread's first allocation; `cache_owner` destroys it, and
// donates its blocks to the pool, when the thread exits.
[[gnu::tls_model("initial-exec")]] thread_local thread_cache* tl_cache = nullptr;

struct cache_owner {
  thread_cache* cache = nullptr;
  ~cache_owner() {
    tl_cache = nullptr;
    delete cache;
  }
};
thread_local cache_owner tl_cache_owner;

[[gnu::noinline]] thread_cache& make_cache() {
  tl_cache_owner.cache = new thread_cache();
  tl_cache = tl_cache_owner.cache;
  return *tl_cache;
}

inline thread_cache& cache() {
  if (thread_cache* c = tl_cache) [[likely]] {
    return *c;
  }
  return make_cache();
}

constexpr std::size_t class_of(std::size_t size) { return (size + kGranule - 1) / kGranule - 1; }

}  // namespace

void* frame_allocate(std::size_t size) {
  if (size > kMaxBlock || size == 0) {
    return ::operator new(size);
  }
  std::size_t c = class_of(size);
  thread_cache& tc = cache();
  chain& list = tc.lists[c];
  if (list.head == nullptr && !tc.refill(c)) {
    return tc.carve((c + 1) * kGranule);
  }
  free_block* b = list.head;
  list.head = b->next;
  --list.count;
  return b;
}

void frame_deallocate(void* block, std::size_t size) noexcept {
  if (size > kMaxBlock || size == 0) {
    ::operator delete(block);
    return;
  }
  std::size_t c = class_of(size);
  thread_cache& tc = cache();
  chain& list = tc.lists[c];
  auto* b = static_cast<free_block*>(block);
  b->next = list.head;
  list.head = b;
  if (++list.count >= kSpill) {
    try {
      tc.spill(c);
    } catch (...) {
      // Out of memory for the pool's vector: keep the blocks local.
    }
  }
}

#else  // sanitizer builds: plain new/delete so ASan/TSan see every frame

void* frame_allocate(std::size_t size) { return ::operator new(size); }
void frame_deallocate(void* block, std::size_t) noexcept { ::operator delete(block); }

#endif

}  // namespace corio::detail
