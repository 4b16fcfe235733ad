// The per-thread slab cache behind runtime/detail/frame_allocator.hpp (private to
// runtime/frame_allocator.cpp, its one includer; the policy is in that header).
//
// Memory comes in 2 MiB-aligned chunks advised as transparent huge pages, so a million
// live tasks fault in ~100 huge pages instead of ~50,000 small ones (page faults were
// the largest single cost of spawning in profiles). Each chunk starts with a header
// naming its owner cache and counting its blocks in use; the owner carves blocks by size
// class (16-byte granularity up to 1 KiB) and recycles them through its per-class free
// lists. A block always returns to its own chunk's owner: directly when freed on the
// owner thread; when freed elsewhere, in a magazine (an array of addresses) that the
// freeing thread fills and pushes onto the owner's remote stack of that class (lock-free;
// only the owner empties it, all at once, and hands the blocks out again without
// counting them back in). So a chunk's count is exact once the owner has given the
// remote and reclaimed blocks back (a trim does first), except for blocks still waiting in
// other threads' outgoing magazines, which count as in use; so a chunk counting zero has
// every block in the owner's lists: a trim unlinks them and unmaps the chunk.
//
// Thread-safety: a thread_cache belongs to one thread (or, orphaned, to whoever holds
// the orphanage's mutex); only `remote` and `orphaned` are touched by other threads, with
// the orders explained where they are used. Cost: see the public header; a remote free
// is an array store, and one CAS per magazine (62 blocks when one owner's frees come in a
// run; one per block, and no allocation, when consecutive frees alternate owners).
#pragma once

#include <corio/runtime/detail/frame_allocator.hpp>

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace corio::detail::frame_slab {

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

// Blocks freed on a thread that does not own their chunk travel back to the owner in
// magazines: arrays of block addresses, filled by the freeing thread and pushed onto the
// owner's remote stack whole. The owner hands the addresses out again without reading the
// blocks, so it can prefetch a block several allocations before handing it out: the
// cache misses of reusing memory last written on another core overlap, where a linked
// list of freed blocks would chain them (each `next` is read from a block the other core
// wrote). A remote stack holds nodes: magazines, and bare blocks (count zero: the node is
// the block itself, sent alone when the freeing thread has no cache or no memory for a
// magazine, or with a few others when a magazine is sent with fewer than kBareBelow).
struct remote_node {
  remote_node* next;
  std::uint32_t count;  // blocks in the magazine; 0: a bare block
};
static_assert(sizeof(remote_node) <= kGranule && alignof(remote_node) <= kGranule);

constexpr std::uint32_t kMagazine = 62;
struct alignas(64) magazine : remote_node {  // its own lines: the owner reads one while another thread fills the next
  void* blocks[kMagazine];
};
static_assert(sizeof(magazine) == 512);
// A magazine pushed with fewer blocks sends them bare instead (one CAS for the run) and
// is kept: a thread whose frees alternate between owners would otherwise allocate a
// magazine per block and leave it with the owner.
constexpr std::uint32_t kBareBelow = 8;
constexpr std::size_t kSpareMagazines = 8;  // empty magazines a thread keeps (see `spares`)
constexpr std::uint32_t kAhead = 6;         // blocks prefetched ahead of the one handed out

inline chunk_header* chunk_of(void* block) {
  return reinterpret_cast<chunk_header*>(reinterpret_cast<std::uintptr_t>(block) & ~(kChunk - 1));
}

constexpr std::size_t class_of(std::size_t size) { return (size + kGranule - 1) / kGranule - 1; }
constexpr std::size_t bytes_of(std::size_t cls) { return (cls + 1) * kGranule; }

// relaxed: a statistic; nothing is ordered by it.
inline std::atomic<std::size_t> g_mapped{0};

inline char* map_chunk() {
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

inline void unmap_chunk(chunk_header* ch) {
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

inline orphanage& orphans() {
  static orphanage* o = new orphanage();  // never destroyed: threads may exit late
  return *o;
}

struct thread_cache {
  free_block* lists[kClasses] = {};
  std::size_t free_bytes = 0;  // bytes in `lists`
  // Nodes taken back from the remote stack and not handed out whole yet, a chain per
  // class. Their blocks still count in their chunk's `used` (they never came back through
  // give()), so handing one out again touches no chunk header; a trim gives them back first.
  remote_node* inbox[kClasses] = {};
  // Magazines this thread fills with blocks it frees into other threads' chunks, one per
  // class, each for one owner (`outgoing_owner`); sent to that owner when the 62nd block
  // comes, when a block of another owner comes, and on frame_idle() (a worker about to
  // park), a trim and the thread's exit. So at most 61 blocks per class wait here.
  magazine* outgoing[kClasses] = {};
  thread_cache* outgoing_owner[kClasses] = {};
  std::size_t outgoing_open = 0;  // non-null entries of `outgoing`
  // Empty magazines, at most kSpareMagazines: those this thread emptied as an owner and
  // those it sent bare (beyond that, an emptied magazine is deleted). A thread that only
  // frees others' blocks gets none back from the owners, so it allocates a magazine (an
  // aligned operator new of 512 bytes) for each magazine of 8 or more it sends.
  magazine* spares = nullptr;
  std::size_t spare_count = 0;
  chunk_header* bump_chunk = nullptr;
  char* bump = nullptr;
  char* bump_end = nullptr;
  std::vector<chunk_header*> chunks;  // every chunk this cache owns
  // Nodes of blocks freed by other threads, one stack per size class. Pushers: CAS with
  // release (seq_cst, see `orphaned`); the owner takes a whole stack with an acquire (or
  // stronger) exchange, which synchronizes with every push before it (a chain of RMWs
  // continues the release sequence), so the nodes' contents are visible to it.
  alignas(64) std::atomic<remote_node*> remote[kClasses] = {};
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

  static void prefetch(void* block, std::size_t c) {
    // For writing: the frame is about to be constructed there. Every line of the block.
    for (std::size_t off = 0; off < bytes_of(c); off += 64) {
      __builtin_prefetch(static_cast<char*>(block) + off, 1, 3);
    }
  }

  static void prefetch_top(const remote_node* n, std::size_t c) {
    if (n->count == 0) {
      return;  // a bare block: its line is read as it is handed out
    }
    const auto* m = static_cast<const magazine*>(n);
    for (std::uint32_t i = 1; i <= kAhead && i <= m->count; ++i) {
      prefetch(m->blocks[m->count - i], c);
    }
  }

  void* take_reclaimed(std::size_t c) {
    remote_node* n = inbox[c];
    if (n == nullptr) {
      // relaxed: a hint; the exchange synchronizes.
      if (remote[c].load(std::memory_order_relaxed) == nullptr) {
        return carve(c);
      }
      // acquire: the nodes' contents (see `remote`); the orphan protocol's seq_cst is in
      // collect_remote(), which a retiring owner runs, not here.
      n = remote[c].exchange(nullptr, std::memory_order_acquire);
      if (n == nullptr) {
        return carve(c);
      }
      inbox[c] = n;
      prefetch_top(n, c);
    }
    if (n->count == 0) {  // a bare block
      advance_inbox(n, c);
      return n;  // still counted in its chunk's `used`
    }
    auto* m = static_cast<magazine*>(n);
    void* b = m->blocks[--m->count];
    if (m->count >= kAhead) {
      prefetch(m->blocks[m->count - kAhead], c);
    } else if (m->count == 0) {
      advance_inbox(m, c);
      recycle(m);
    }
    return b;  // still counted in its chunk's `used`
  }

  /// The inbox's head `n` is used up: the next node becomes the head, its top prefetched.
  void advance_inbox(const remote_node* n, std::size_t c) {
    inbox[c] = n->next;
    if (inbox[c] != nullptr) {
      prefetch_top(inbox[c], c);
    }
  }

  void give(void* block, std::size_t c, chunk_header* ch) {
    lists[c] = ::new (block) free_block{lists[c]};
    free_bytes += bytes_of(c);
    --ch->used;
  }

  /// Every block of a chain of nodes back into the lists.
  void give_all(remote_node* n, std::size_t c) {
    while (n != nullptr) {
      remote_node* next = n->next;
      if (n->count == 0) {
        give(n, c, chunk_of(n));
      } else {
        auto* m = static_cast<magazine*>(n);
        for (std::uint32_t i = 0; i < m->count; ++i) {
          give(m->blocks[i], c, chunk_of(m->blocks[i]));
        }
        recycle(m);
      }
      n = next;
    }
  }

  void recycle(magazine* m) {
    if (spare_count < kSpareMagazines) {
      m->next = spares;
      spares = m;
      ++spare_count;
    } else {
      delete m;
    }
  }

  /// A block of `owner`'s chunk freed on this thread: into the outgoing magazine.
  void free_remote(free_block* b, std::size_t c, thread_cache* owner) {
    if (outgoing[c] != nullptr && outgoing_owner[c] != owner) {
      flush(c);
    }
    magazine* m = outgoing[c];
    if (m == nullptr) {
      m = spares;
      if (m != nullptr) {
        spares = static_cast<magazine*>(m->next);
        --spare_count;
      } else {
        m = new (std::nothrow) magazine;
        if (m == nullptr) {  // no memory for a magazine: the block goes alone
          owner->push_bare(b, c);
          return;
        }
      }
      m->count = 0;
      outgoing[c] = m;
      outgoing_owner[c] = owner;
      ++outgoing_open;
    }
    m->blocks[m->count++] = b;
    if (m->count == kMagazine) {
      flush(c);
    }
  }

  void flush(std::size_t c) {
    magazine* m = std::exchange(outgoing[c], nullptr);
    --outgoing_open;
    thread_cache* owner = outgoing_owner[c];
    if (m->count >= kBareBelow) {
      owner->push_remote(m, m, c);
      return;
    }
    // A few blocks: linked through themselves and sent with one CAS; the magazine stays.
    remote_node* first = nullptr;
    remote_node* last = nullptr;
    for (std::uint32_t i = 0; i < m->count; ++i) {
      first = ::new (m->blocks[i]) remote_node{first, 0};
      last = last == nullptr ? first : last;
    }
    if (first != nullptr) {
      owner->push_remote(first, last, c);
    }
    recycle(m);
  }

  void flush_all() {
    for (std::size_t c = 0; c < kClasses && outgoing_open != 0; ++c) {
      if (outgoing[c] != nullptr) {
        flush(c);
      }
    }
  }

  /// Pushes the chain first..last (linked by `next`) onto the remote stack of class c.
  void push_remote(remote_node* first, remote_node* last, std::size_t c) {
    std::atomic<remote_node*>& stack = remote[c];
    // relaxed: the CAS below checks the guess.
    remote_node* head = stack.load(std::memory_order_relaxed);
    do {
      last->next = head;
      // Failure relaxed: it only reloads the guess; success seq_cst (see `orphaned`).
    } while (!stack.compare_exchange_weak(head, first, std::memory_order_seq_cst, std::memory_order_relaxed));
    if (orphaned.load(std::memory_order_seq_cst)) {
      orphans().work.store(true, std::memory_order_seq_cst);
    }
  }

  /// One block of this cache's chunks, freed elsewhere, back onto its remote stack alone
  /// (a bare node: the block's first bytes become its header). One CAS.
  void push_bare(void* block, std::size_t c) {
    remote_node* bare = ::new (block) remote_node{nullptr, 0};
    push_remote(bare, bare, c);
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
      give_all(std::exchange(inbox[c], nullptr), c);
      // seq_cst, not relaxed: after retire()'s store of `orphaned`, this load is the
      // owner's half of the store-buffer pair (a stale empty stack must not be skipped).
      if (remote[c].load(std::memory_order_seq_cst) != nullptr) {
        give_all(remote[c].exchange(nullptr, std::memory_order_seq_cst), c);
      }
    }
  }

  /// Whether any block waits in the inbox or a remote stack.
  bool has_returns() const {
    for (std::size_t c = 0; c < kClasses; ++c) {
      // relaxed: a hint; trim() synchronizes.
      if (inbox[c] != nullptr || remote[c].load(std::memory_order_relaxed) != nullptr) {
        return true;
      }
    }
    return false;
  }

  bool wants_trim() const {
    return free_bytes > kept_free_bytes || has_returns();
  }

  /// Sends the outgoing magazines, takes back remote frees and unmaps the empty chunks
  /// beyond `keep_empty` (never the current bump chunk).
  void trim(std::size_t keep_empty) {
    flush_all();
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
    while (spares != nullptr) {
      delete std::exchange(spares, static_cast<magazine*>(spares->next));
    }
    spare_count = 0;
    return chunks.empty();
  }
};

}  // namespace corio::detail::frame_slab
