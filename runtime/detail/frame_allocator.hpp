// Slab allocator for coroutine frames and join states.
//
// Blocks are binned in 16-byte classes up to 1 KiB, carved from 2 MiB huge-page chunks;
// a freed block goes onto the freeing thread's list, so spawn costs no malloc in the
// steady state. Blocks freed on another thread than the one that allocated them simply
// join that thread's list (surplus lists move through a global pool). Larger frames go to
// operator new/delete. Memory is kept for reuse, never returned to the OS.
// Thread-safety: each thread has its own cache (thread_local); no locks, no atomics.
// Under AddressSanitizer the cache is bypassed so use-after-free stays detectable.
#pragma once

#include <cstddef>

namespace corio::detail {

void* frame_allocate(std::size_t size);
void frame_deallocate(void* block, std::size_t size) noexcept;

}  // namespace corio::detail
