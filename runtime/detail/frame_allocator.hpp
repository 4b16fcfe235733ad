// Slab allocator for coroutine frames and join states.
//
// Blocks are binned in 16-byte classes up to 1 KiB, carved from 2 MiB huge-page chunks
// that each belong to one thread's cache; larger frames go to operator new/delete. Every
// block is aligned to 16 bytes (__STDCPP_DEFAULT_NEW_ALIGNMENT__, as plain operator new;
// an over-aligned task result is refused at compile time, runtime/task.hpp);
// frame_allocate throws std::bad_alloc when no memory is left, and frame_deallocate must
// be given the size that frame_allocate was. A
// block freed on its chunk's owner thread goes onto that thread's list (no atomics). One
// freed on another thread goes into that thread's outgoing magazine for the owner (an
// array of up to 62 addresses), pushed onto the owner's remote stack (one CAS) when full,
// when a block of another owner arrives, on frame_idle() (a runtime worker about to
// park), on a trim and when the freeing thread exits; a magazine of fewer than 8 goes as
// a chain of bare blocks instead, and is kept. The owner takes its remote stack back
// whole when its lists run dry or when it trims, and prefetches the blocks of a magazine
// a few allocations before it hands them out (they were last written on another core).
//
// Memory policy: a chunk whose blocks are all free is returned to the OS (munmap) when
// its owner trims: when a runtime worker is about to sleep (frame_idle(), which otherwise
// only sends the outgoing magazines, unless the thread holds more than kept_free_bytes of
// free blocks or blocks freed by others), on an explicit frame_trim(), and when the
// thread exits. A thread keeps its current chunk and at most one other empty chunk for
// reuse. A chunk with one live block stays mapped (fragmentation: the footprint is
// bounded by the live blocks' chunks, not their bytes); so does one whose block waits in
// another thread's outgoing magazine (at most 61 blocks per size class per thread, until
// that thread parks as a worker, trims or exits: a thread in block_on, a blocking-pool
// thread or one of the user's holds them until it trims or exits; each can keep a whole
// chunk mapped). An exited thread's chunks that still hold live blocks wait, with its
// cache, to be adopted by the next thread that allocates or frees another thread's
// block; idle workers trim such caches too.
//
// Thread-safety: each thread has its own cache (thread_local, created or adopted on its
// first allocation or its first free of another thread's block); frame_deallocate may
// run on any thread. Cost: allocate and free are a list pop/push and a counter update on
// the owner thread. A free on another thread is an array store, plus a CAS per magazine
// sent (one per 62 frees of one owner's blocks in a run; one per free when consecutive
// frees alternate between owners; one per park of a worker that holds a part-filled
// magazine) and a new magazine (an aligned operator new of 512 bytes) per magazine of 8
// or more sent, unless the thread has spares (the magazines it emptied as an owner); an
// owner holding 8 spares deletes the magazines it empties. A trim walks the thread's free
// blocks once. Under AddressSanitizer and ThreadSanitizer the slab is bypassed (plain
// new/delete, so use-after-free stays detectable; frame_memory_mapped() is then 0).
#pragma once

#include <cstddef>

namespace corio::detail {

void* frame_allocate(std::size_t size);
void frame_deallocate(void* block, std::size_t size) noexcept;

/// Free bytes a thread may hold in its lists before frame_idle() trims (4 MiB).
inline constexpr std::size_t kept_free_bytes = std::size_t{4} << 20;

/// Bytes of slab chunks mapped now, all threads together. Any thread; one relaxed load.
std::size_t frame_memory_mapped() noexcept;
/// The calling thread sends its outgoing magazines to their owners, takes back the blocks
/// other threads freed into its chunks and returns its empty chunks to the OS (keeping
/// its current chunk and one empty one). Cost: one pass over the thread's free blocks
/// and chunks.
void frame_trim() noexcept;
/// frame_trim() if the calling thread holds more than kept_free_bytes of free blocks or
/// blocks freed by other threads, else the sending of its outgoing magazines; and a trim
/// of the exited threads' caches if blocks were freed into them. Otherwise a scan of the
/// thread's 128 inbox and remote heads (relaxed loads) and a CAS per outgoing magazine.
/// Runtime workers call it before they sleep.
void frame_idle() noexcept;

}  // namespace corio::detail
