// Slab allocator for coroutine frames and join states (see the header for the contract
// and the memory policy).
//
// Memory comes in 2 MiB-aligned chunks advised as transparent huge pages, so a million
// live tasks fault in ~100 huge pages instead of ~50,000 small ones (page faults were
// the largest single cost of spawning in profiles). Each chunk starts with a header
// naming its owner cache and counting its blocks in use; the owner carves blocks by size
// class (16-byte granularity up to 1 KiB) and recycles them through its per-class free
// lists. A block always returns to its own chunk's owner: directly when freed on the
// owner thread, through the owner's remote stack of its class (lock-free; only the owner
// empties it, all at once, and hands its blocks out again without counting them back
// in) when freed elsewhere. So a chunk's count is exact once the owner has given the
// remote and reclaimed blocks back (a trim does first), and a chunk counting zero has
// every block in the owner's lists: a trim unlinks them and unmaps the chunk. A thread that exits trims
// everything it can and leaves its cache (never freed) for the next thread to adopt;
// idle workers trim such caches when blocks freed into them arrive.
#include <corio/runtime/detail/frame_allocator.hpp>

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>
#include <utility>
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
constexpr std::size_t kHeader = 128;   // the chunk header's room; blocks start after it
constexpr std::size_t kKeepEmpty = 1;  // empty chunks (besides the current one) a trim keeps

struct thread_cache;

struct chunk_header {
  // Set when the chunk is mapped, never changed; read by every free, so it has a cache
  // line of its own (the owner writes `used` on every allocation and free).
  alignas(64) thread_cache* owner;
  alignas(64) std::size_t used;  // owner only: blocks handed out and not yet back in the owner's lists
  bool release;                  // owner only: chosen for unmapping by the trim in progress
};
static_assert(sizeof(chunk_header) <= kHeader && kHeader % kGranule == 0);

struct free_block {
  free_block* next;
};
static_assert(sizeof(free_block) <= kGranule);

chunk_header* chunk_of(void* block) {
  return reinterpret_cast<chunk_header*>(reinterpret_cast<std::uintptr_t>(block) & ~(kChunk - 1));
}

constexpr std::size_t class_of(std::size_t size) { return (size + kGranule - 1) / kGranule - 1; }
constexpr std::size_t bytes_of(std::size_t cls) { return (cls + 1) * kGranule; }

// relaxed: a statistic; nothing is ordered by it.
std::atomic<std::size_t> g_mapped{0};

char* map_chunk() {
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
  g_mapped.fetch_add(kChunk, std::memory_order_relaxed);
  return reinterpret_cast<char*>(aligned);
}

void unmap_chunk(chunk_header* ch) {
  ::munmap(ch, kChunk);
  g_mapped.fetch_sub(kChunk, std::memory_order_relaxed);
}

struct orphanage {
  std::mutex mutex;
  std::vector<thread_cache*> caches;  // caches of exited threads, for adoption
  // Set by a remote free into an orphan; an idle worker exchanges it and trims the
  // orphans. seq_cst with the orphan flag's accesses below.
  std::atomic<bool> work{false};
};

orphanage& orphans() {
  static orphanage* o = new orphanage();  // never destroyed: threads may exit late
  return *o;
}

struct thread_cache {
  free_block* lists[kClasses] = {};
  std::size_t free_bytes = 0;  // bytes in `lists`
  // Blocks taken back from a remote stack and not handed out again yet. They still count
  // in their chunk's `used` (they never came back through give()), so handing one out
  // again touches no chunk header; a trim gives them back first.
  free_block* reclaimed[kClasses] = {};
  chunk_header* bump_chunk = nullptr;
  char* bump = nullptr;
  char* bump_end = nullptr;
  std::vector<chunk_header*> chunks;  // every chunk this cache owns
  // Blocks freed by other threads, one stack per size class. Pushers: CAS with release
  // (seq_cst, see `orphaned`); the owner takes a whole stack with an acquire exchange,
  // which synchronizes with every push before it (a chain of RMWs continues the release
  // sequence). Per class, so that the owner takes a stack back without walking it: one
  // walk of a long stack (a million frames freed by a worker that stole their tasks) is
  // a chain of cache misses; popped one block per allocation, the misses are spread
  // over the allocations instead of stalling a single one (each still waits for its
  // lines: README, "Frame memory").
  alignas(64) std::atomic<free_block*> remote[kClasses] = {};
  // True while no thread owns the cache. Store-buffer pair with the remote push: an exiting
  // owner stores it and then empties every stack; a pusher pushes and then loads it (all
  // seq_cst), so either the owner's last collection sees the block or the pusher sees
  // the flag and tells the orphanage.
  std::atomic<bool> orphaned{false};

  void* take(std::size_t c) {
    if (free_block* b = lists[c]) [[likely]] {
      lists[c] = b->next;
      free_bytes -= bytes_of(c);
      ++chunk_of(b)->used;
      return b;
    }
    return take_reclaimed(c);
  }

  void* take_reclaimed(std::size_t c) {
    free_block* b = reclaimed[c];
    // relaxed: a hint; the exchange synchronizes.
    if (b == nullptr && remote[c].load(std::memory_order_relaxed) != nullptr) {
      b = remote[c].exchange(nullptr, std::memory_order_seq_cst);
    }
    if (b == nullptr) {
      return carve(c);
    }
    reclaimed[c] = b->next;
    return b;  // still counted in its chunk's `used`
  }

  void give(free_block* b, std::size_t c, chunk_header* ch) {
    b->next = lists[c];
    lists[c] = b;
    free_bytes += bytes_of(c);
    --ch->used;
  }

  void give_all(free_block* b, std::size_t c) {
    while (b != nullptr) {
      free_block* next = b->next;
      give(b, c, chunk_of(b));
      b = next;
    }
  }

  void push_remote(free_block* b, std::size_t c) {
    std::atomic<free_block*>& stack = remote[c];
    free_block* head = stack.load(std::memory_order_relaxed);
    do {
      b->next = head;
    } while (!stack.compare_exchange_weak(head, b, std::memory_order_seq_cst, std::memory_order_relaxed));
    if (orphaned.load(std::memory_order_seq_cst)) {
      orphans().work.store(true, std::memory_order_seq_cst);
    }
  }

  void* carve(std::size_t c) {
    std::size_t bytes = bytes_of(c);
    if (bump_chunk == nullptr || bump + bytes > bump_end) {
      chunks.reserve(chunks.size() + 1);  // may throw before anything is mapped
      char* base = map_chunk();
      bump_chunk = ::new (base) chunk_header{this, 0, false};
      chunks.push_back(bump_chunk);
      bump = base + kHeader;
      bump_end = base + kChunk;
    }
    void* p = bump;
    bump += bytes;
    ++bump_chunk->used;
    return p;
  }

  /// Every reclaimed and remote block back into the lists (each chunk's count exact).
  void collect_remote() {
    for (std::size_t c = 0; c < kClasses; ++c) {
      give_all(std::exchange(reclaimed[c], nullptr), c);
      // seq_cst, not relaxed: after retire()'s store of `orphaned`, this load is the
      // owner's half of the store-buffer pair (a stale empty stack must not be skipped).
      if (remote[c].load(std::memory_order_seq_cst) != nullptr) {
        give_all(remote[c].exchange(nullptr, std::memory_order_seq_cst), c);
      }
    }
  }

  /// Whether any block waits in a reclaimed list or a remote stack.
  bool has_returns() const {
    for (std::size_t c = 0; c < kClasses; ++c) {
      // relaxed: a hint; trim() synchronizes.
      if (reclaimed[c] != nullptr || remote[c].load(std::memory_order_relaxed) != nullptr) {
        return true;
      }
    }
    return false;
  }

  bool wants_trim() const {
    // relaxed: a hint; trim() synchronizes.
    return free_bytes > kept_free_bytes || has_returns();
  }

  /// Takes back remote frees and unmaps the empty chunks beyond `keep_empty` (never the
  /// current bump chunk).
  void trim(std::size_t keep_empty) {
    collect_remote();
    std::size_t kept = 0;
    bool any = false;
    for (chunk_header* ch : chunks) {
      ch->release = false;
      if (ch->used == 0 && ch != bump_chunk) {
        if (kept < keep_empty) {
          ++kept;
        } else {
          ch->release = true;
          any = true;
        }
      }
    }
    if (!any) {
      return;
    }
    for (std::size_t c = 0; c < kClasses; ++c) {
      free_block** link = &lists[c];
      while (free_block* b = *link) {
        if (chunk_of(b)->release) {
          *link = b->next;
          free_bytes -= bytes_of(c);
        } else {
          link = &b->next;
        }
      }
    }
    std::erase_if(chunks, [](chunk_header* ch) {
      if (ch->release) {
        unmap_chunk(ch);
        return true;
      }
      return false;
    });
  }

  /// The owning thread exits (or an orphan is trimmed): keep nothing for it. Returns true
  /// if no chunk is left.
  bool retire() {
    orphaned.store(true, std::memory_order_seq_cst);
    bump_chunk = nullptr;
    bump = nullptr;
    bump_end = nullptr;
    trim(0);
    return chunks.empty();
  }
};

// Trims every orphaned cache (blocks freed into them since their thread exited). A cache
// is never deleted, even with no chunk left: a remote free may still be reading its
// `orphaned` flag after the push that let the chunk go.
void trim_orphans() {
  orphanage& o = orphans();
  std::lock_guard lock(o.mutex);
  for (thread_cache* c : o.caches) {
    (void)c->retire();
  }
}

// The hot path reads one initial-exec TLS pointer (a single %fs-relative load, even in the
// shared library, instead of a __tls_get_addr call and an init-guard check per frame). The
// cache itself is created (or adopted from an exited thread) on a thread's first
// allocation; `cache_owner` retires it when the thread exits.
[[gnu::tls_model("initial-exec")]] thread_local thread_cache* tl_cache = nullptr;

struct cache_owner {
  thread_cache* cache = nullptr;
  ~cache_owner() {
    tl_cache = nullptr;
    if (cache == nullptr) {
      return;
    }
    (void)cache->retire();  // kept even if empty: see trim_orphans()
    try {
      orphanage& o = orphans();
      std::lock_guard lock(o.mutex);
      o.caches.push_back(cache);
    } catch (...) {
      // Out of memory for the vector: the cache and its chunks stay, unreachable.
    }
  }
};
thread_local cache_owner tl_cache_owner;

[[gnu::noinline]] thread_cache& make_cache() {
  thread_cache* c = nullptr;
  {
    orphanage& o = orphans();
    std::lock_guard lock(o.mutex);
    if (!o.caches.empty()) {
      c = o.caches.back();
      o.caches.pop_back();
    }
  }
  if (c == nullptr) {
    c = new thread_cache();
  }
  c->orphaned.store(false, std::memory_order_seq_cst);
  tl_cache_owner.cache = c;
  tl_cache = c;
  return *c;
}

inline thread_cache& cache() {
  if (thread_cache* c = tl_cache) [[likely]] {
    return *c;
  }
  return make_cache();
}

}  // namespace

void* frame_allocate(std::size_t size) {
  if (size > kMaxBlock || size == 0) {
    return ::operator new(size);
  }
  return cache().take(class_of(size));
}

void frame_deallocate(void* block, std::size_t size) noexcept {
  if (size > kMaxBlock || size == 0) {
    ::operator delete(block);
    return;
  }
  std::size_t c = class_of(size);
  auto* b = static_cast<free_block*>(block);
  chunk_header* ch = chunk_of(block);
  // The chunk's owner is fixed when it is mapped, before any of its blocks is handed out.
  if (ch->owner == tl_cache) {
    ch->owner->give(b, c, ch);
  } else {
    ch->owner->push_remote(b, c);
  }
}

std::size_t frame_memory_mapped() noexcept { return g_mapped.load(std::memory_order_relaxed); }

void frame_trim() noexcept {
  if (thread_cache* c = tl_cache) {
    c->trim(kKeepEmpty);
  }
}

void frame_idle() noexcept {
  if (thread_cache* c = tl_cache; c != nullptr && c->wants_trim()) {
    c->trim(kKeepEmpty);
  }
  // relaxed check first: most calls find no orphan work.
  orphanage& o = orphans();
  if (o.work.load(std::memory_order_relaxed) && o.work.exchange(false, std::memory_order_seq_cst)) {
    trim_orphans();
  }
}

#else  // sanitizer builds: plain new/delete so ASan/TSan see every frame

void* frame_allocate(std::size_t size) { return ::operator new(size); }
void frame_deallocate(void* block, std::size_t) noexcept { ::operator delete(block); }
std::size_t frame_memory_mapped() noexcept { return 0; }
void frame_trim() noexcept {}
void frame_idle() noexcept {}

#endif

}  // namespace corio::detail
