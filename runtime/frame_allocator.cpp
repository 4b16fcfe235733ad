// Slab allocator for coroutine frames and join states: the public entry points, each
// thread's ownership of its cache (created or adopted on first use, retired at exit) and
// the orphanage of exited threads' caches. The contract and the memory policy are in
// runtime/detail/frame_allocator.hpp, the cache itself in runtime/internal/frame_cache.hpp.
// A thread that exits trims everything it can and leaves its cache (never freed) for the
// next thread to adopt; idle workers trim such caches when blocks freed into them arrive.
#include <corio/runtime/detail/frame_allocator.hpp>

#include <atomic>
#include <cstddef>
#include <mutex>
#include <new>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CORIO_FRAME_SLAB 0
#else
#define CORIO_FRAME_SLAB 1
#include <corio/runtime/internal/frame_cache.hpp>
#endif

namespace corio::detail {

#if CORIO_FRAME_SLAB
namespace {

using namespace frame_slab;

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
// allocation or first free of another thread's block; `cache_owner` retires it when the
// thread exits.
[[gnu::tls_model("initial-exec")]] thread_local thread_cache* tl_cache = nullptr;

// Set when the thread's cache has been retired at its exit: a free after that (a later
// thread_local's destructor) sends its block alone rather than create a cache no one
// would retire. An allocation after that still gets a cache (its block must come from
// the slab), retired only if the C++ runtime still runs thread_local destructors then;
// likewise for a thread whose first frame operation happens during its exit (a free from
// a pthread-key destructor, say, which may adopt an orphaned cache). Such a cache, never
// retired, keeps its chunks, the blocks later freed into it, and up to 61 blocks per
// class it freed for other owners.
[[gnu::tls_model("initial-exec")]] thread_local bool tl_exited = false;

struct cache_owner {
  thread_cache* cache = nullptr;
  ~cache_owner() {
    tl_cache = nullptr;
    tl_exited = true;
    if (cache == nullptr) {
      return;
    }
    // Retired and listed under one hold of the mutex: a free into the cache that sees
    // `orphaned` raises the orphanage's `work`, and the idle worker that answers it locks
    // the mutex after this (its exchange read a store made after ours of `orphaned`), so
    // it finds the cache listed. The price: thread exits (each unmapping its empty
    // chunks here) and first uses of the allocator wait for one another on this mutex.
    orphanage& o = orphans();
    std::lock_guard lock(o.mutex);
    (void)cache->retire();  // kept even if empty: see trim_orphans()
    try {
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
  // seq_cst like every access of the flag. A free that still reads `true` after this
  // raises the orphanage's `work` for nothing (the cache is no longer listed, so the trim
  // it prompts skips it); its block waits in the stack this thread now owns.
  c->orphaned.store(false, std::memory_order_seq_cst);
  tl_cache_owner.cache = c;
  tl_cache = c;
  return *c;
}

// A thread's first free of a block it does not own gives it a cache, so that its remote
// frees fill magazines (a runtime worker that only runs tasks others spawned allocates
// nothing). nullptr when that cannot be done here.
[[gnu::noinline]] thread_cache* cache_for_free() noexcept {
  if (tl_exited) {
    return nullptr;
  }
  try {
    return &make_cache();
  } catch (...) {
    return nullptr;
  }
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
  thread_cache* owner = ch->owner;
  thread_cache* me = tl_cache;
  if (owner == me) [[likely]] {
    me->give(b, c, ch);
    return;
  }
  if (me == nullptr) {
    me = cache_for_free();  // may adopt the block's own (orphaned) owner
  }
  if (owner == me) {
    me->give(b, c, ch);
  } else if (me != nullptr) {
    me->free_remote(b, c, owner);
  } else {  // a thread past its cache's retirement, or out of memory: the block goes alone
    owner->push_bare(block, c);
  }
}

std::size_t frame_memory_mapped() noexcept { return g_mapped.load(std::memory_order_relaxed); }

void frame_trim() noexcept {
  if (thread_cache* c = tl_cache) {
    c->trim(kKeepEmpty);
  }
}

void frame_idle() noexcept {
  if (thread_cache* c = tl_cache; c != nullptr) {
    if (c->wants_trim()) {
      c->trim(kKeepEmpty);
    } else {
      c->flush_all();  // the owners may trim what this thread freed for them
    }
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
