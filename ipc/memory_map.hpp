// corio::ipc::memory_map: an RAII mapping (mmap(2)) of a file, of a shared-memory object,
// or of anonymous memory shared with forked children.
//
// Concept: the tutorial's `mmap` on a file, done safely: map_file() maps a whole file,
// map() a range of any descriptor, anonymous() memory that fork()ed children share. All
// mappings are MAP_SHARED: writes reach the file (or object) and every other mapping of
// it, in this process or another. Typed access goes through view<T>(offset, count), which
// checks bounds, alignment and writability and returns a std::span (T must be trivially
// copyable: the bytes are shared with other processes, which run no constructors).
// Unmapped on destruction (munmap); move-only.
// Waiting: touching the memory never suspends — a page fault on a file-backed mapping may
// read from disk on the touching thread (a worker, if a task touches it), as with any
// memory access. flush() writes dirty pages back (msync(MS_SYNC)) on the runtime's
// blocking pool, so the disk wait never blocks a worker.
// Concurrency: the mapping itself is plain memory. Data shared with other threads or
// processes needs atomics (std::atomic_ref / lock-free std::atomic<T> in the mapping) or a
// lock that lives in it (process_mutex.hpp and its siblings, built at an offset of it).
// Errors (result<T>): the OS error of open/fstat/mmap; std::errc::invalid_argument for a
// zero length or a file whose size is 0 (an empty file, but also /proc files and block
// devices: map those with map() and an explicit length), an offset that is not a
// multiple of the page size, and a view out of bounds or misaligned; permission_denied
// for a writable view of a read-only mapping.
// SIGBUS: map() does not check offset + length against the file; touching a page wholly
// past the end of the file (or of an object another process shrank) raises SIGBUS, as
// with any mmap.
// Thread-safety: one owner of the handle; the memory is as shared as the data in it.
// Cost: one mmap / munmap per handle; a view is a few comparisons and a division.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <stop_token>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// What a mapping allows: reading only (PROT_READ) or reading and writing.
enum class map_access { read_only, read_write };

/// A mapped region of a file, of shared memory or of anonymous memory, unmapped on
/// destruction. Move-only; see the header.
class memory_map {
 public:
  memory_map() noexcept = default;
  /// Takes over `other`'s mapping; `other` is empty afterwards.
  memory_map(memory_map&& other) noexcept
      : m_data(std::exchange(other.m_data, nullptr)),
        m_size(std::exchange(other.m_size, 0)),
        m_access(other.m_access) {}
  /// Unmaps the region held so far (if any), then takes over `other`'s.
  memory_map& operator=(memory_map&& other) noexcept {
    if (this != &other) {
      unmap();
      m_data = std::exchange(other.m_data, nullptr);
      m_size = std::exchange(other.m_size, 0);
      m_access = other.m_access;
    }
    return *this;
  }
  memory_map(const memory_map&) = delete;
  memory_map& operator=(const memory_map&) = delete;
  ~memory_map() { unmap(); }

  /// Maps `length` bytes of `fd` from `offset` (a multiple of the page size). The
  /// descriptor may be closed afterwards: the mapping keeps the file.
  [[nodiscard]] static result<memory_map> map(int fd, std::size_t length, map_access access, std::size_t offset = 0);
  /// Maps the whole file at `path`.
  [[nodiscard]] static result<memory_map> map_file(const std::string& path, map_access access = map_access::read_only);
  /// `length` bytes of zeroed memory shared with children forked after this call.
  [[nodiscard]] static result<memory_map> anonymous(std::size_t length);

  /// The first byte of the mapping (nullptr when empty).
  [[nodiscard]] std::byte* data() noexcept { return m_data; }
  /// The first byte of the mapping, read-only (nullptr when empty).
  [[nodiscard]] const std::byte* data() const noexcept { return m_data; }
  /// The mapping's length in bytes.
  [[nodiscard]] std::size_t size() const noexcept { return m_size; }
  /// What the mapping allows.
  [[nodiscard]] map_access access() const noexcept { return m_access; }
  /// False for a default-constructed or moved-from handle.
  [[nodiscard]] bool is_mapped() const noexcept { return m_data != nullptr; }
  /// The whole mapping as bytes.
  [[nodiscard]] std::span<std::byte> bytes() noexcept { return {m_data, m_size}; }
  /// The whole mapping as read-only bytes.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {m_data, m_size}; }

  /// `count` objects of type T at byte `offset`. A writable T needs a read-write mapping
  /// and a non-const handle; use a const T otherwise.
  template <class T>
  [[nodiscard]] result<std::span<T>> view(std::size_t offset = 0, std::size_t count = 1) noexcept {
    return checked_view<T>(offset, count);
  }
  /// view() on a const handle: T must be const.
  template <class T>
  [[nodiscard]] result<std::span<T>> view(std::size_t offset = 0, std::size_t count = 1) const noexcept {
    static_assert(std::is_const_v<T>, "memory_map::view on a const handle: use a const T");
    return checked_view<T>(offset, count);
  }

  /// Writes the dirty pages of a file-backed mapping back to the file and waits for the
  /// disk (msync(MS_SYNC)), on the runtime's blocking pool. The handle must outlive the
  /// awaited call. Cancellation: `token` (or the inherited one) withdraws it while it is
  /// still queued (operation_canceled); a started msync is waited for.
  [[nodiscard]] task<result<void>> flush(std::stop_token token = {}) const;

  /// Unmaps now (idempotent). Views and pointers into the mapping become invalid.
  void unmap() noexcept;

 private:
  memory_map(std::byte* data, std::size_t size, map_access access) noexcept
      : m_data(data), m_size(size), m_access(access) {}

  template <class T>
  result<std::span<T>> checked_view(std::size_t offset, std::size_t count) const noexcept {
    static_assert(std::is_trivially_copyable_v<T>, "memory_map::view: T must be trivially copyable");
    if (m_data == nullptr || offset > m_size || count > (m_size - offset) / sizeof(T) ||
        (reinterpret_cast<std::uintptr_t>(m_data) + offset) % alignof(T) != 0) {
      return unexpected(std::make_error_code(std::errc::invalid_argument));
    }
    if (!std::is_const_v<T> && m_access == map_access::read_only) {
      return unexpected(std::make_error_code(std::errc::permission_denied));
    }
    return std::span<T>(reinterpret_cast<T*>(m_data + offset), count);
  }

  std::byte* m_data = nullptr;
  std::size_t m_size = 0;
  map_access m_access = map_access::read_only;
};

}  // namespace corio::ipc
