// raw_header: the header of an ipc::shm_queue through a raw mapping of its shared memory
// object, for tests that read its words, set a bit a peer would have set, or damage a
// slot's stored size (shm_queue_test, shm_queue_edges_test).
#pragma once

#include <corio/ipc/detail/shm_queue_layout.hpp>
#include <corio/ipc/shared_memory.hpp>

#include <cstdint>
#include <cstring>
#include <string>

namespace corio_test {

/// The header of queue `name`, mapped anew (the object must exist: the test opened it):
/// what a peer with write access to the object (a bug or an attacker) can change at any time.
struct raw_header {
  corio::ipc::shared_memory memory;
  explicit raw_header(const std::string& name) : memory(*corio::ipc::shared_memory::open(name)) {}
  corio::ipc::detail::queue_header* operator->() {
    return reinterpret_cast<corio::ipc::detail::queue_header*>(memory.bytes().data());
  }
  /// Writes `size` as the stored size of slot `index`, as laid out at creation.
  void set_slot_size(std::uint64_t slots_offset, std::uint32_t stride, std::size_t index, std::uint32_t size) {
    std::memcpy(memory.bytes().data() + slots_offset + index * stride, &size, sizeof size);
  }
};

}  // namespace corio_test
