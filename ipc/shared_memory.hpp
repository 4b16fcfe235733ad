// corio::ipc::shared_memory: a named POSIX shared-memory object (shm_overview(7)),
// mapped into this process.
//
// Concept: the tutorial's shared_memory.SharedMemory. create(name, size) makes the object
// (by default failing if the name exists, like SharedMemory(create=True)) and maps it;
// open(name) attaches to an existing one by name, from this or any other process, and
// maps its whole size; remove(name) unlinks the name (like SharedMemory.unlink(): mappings
// stay valid until they are unmapped). The memory is a memory_map (ipc/memory_map.hpp):
// bytes(), and view<T>(offset, count) for checked typed access.
// Concurrency: plain shared memory. Coordinate processes with lock-free atomics placed in
// it (std::atomic_ref, or a std::atomic<T> that is always lock-free), with corio's
// process-shared primitives built in it (process_mutex.hpp, process_semaphore.hpp,
// process_event.hpp, process_condition_variable.hpp), or with a queue (shm_queue.hpp,
// message_queue.hpp).
// Errors (result<T>): std::errc::invalid_argument for a bad name ('/' then 1..254
// characters, no other '/', not "/." or "/..") or a zero size; the OS errors of shm_open,
// ftruncate, fstat, mmap and fallocate (file_exists when the name exists and exclusive
// is set, no_such_file_or_directory for open() of a missing name, permission_denied,
// no_space_on_device or not_enough_memory from create()'s fallocate: see Memory); for
// open() of an empty object, resource_unavailable_try_again or owner_dead (Lifetime).
// Memory: create() commits the memory it adds to the object (fallocate on /dev/shm's
// tmpfs, which allocates every page first and sets the size last), so a size that
// /dev/shm cannot hold fails there with no_space_on_device (a new name is removed again;
// an existing object keeps its size) instead of raising SIGBUS later in whichever process
// first touches a page that cannot be had (a container's /dev/shm is often 64 MiB). A
// memory cgroup's limit is not caught this way: the kernel reclaims, or OOM-kills the
// creator in the middle of create(), which leaves a new name empty (Lifetime). open()
// commits nothing, nor does a create() that finds the object large enough: an object
// made by another program (Python's SharedMemory only sizes it) can still fault when
// memory runs out.
// Lifetime: the name outlives every handle (like SharedMemory, which also needs an
// explicit unlink): call remove() when done, or the object stays in /dev/shm, even after
// a crash. An open() that races the creator's growth (its fallocate sets the size only
// once every page is there) finds the object empty and returns
// resource_unavailable_try_again: retry, or hand the name over only once create() has
// returned. So does one that finds an empty object whose name a failed create() has just
// removed (it removes the name under its flock, before giving the lock up). A creator
// that died before sizing it leaves it empty for ever: open() returns owner_dead for an
// object that has been empty for 5 s (since it was made, by the realtime clock) with no
// creator holding its sizing flock; remove the name and create it again. A live creator
// leaves the object empty and unlocked only between two syscalls (corio's between
// shm_open and flock; Python's, which takes no lock, between shm_open and ftruncate): one
// stopped there for 5 s reads as dead, and so may one when the clock is set forward
// meanwhile (set back, it delays the verdict).
// Thread-safety: one owner of the handle. Cost: shm_open + flock + fstat + mmap +
// fallocate on create (fallocate allocates and zeroes every page it adds: about 0.25 ms
// per MiB on the 2-vCPU development VM, 0.24 s for 1 GiB), shm_open + fstat + mmap on
// open (with a flock and an fstat more for an object empty for 5 s, never waiting).
// Nothing waits on another process except create()'s flock, which every creator holds
// for its fstat, mapping and growth (microseconds, plus that fallocate's time for what
// it adds): it is tried without blocking every 20 µs for at most 10 ms, then create()
// fails with resource_unavailable_try_again (EWOULDBLOCK) — so a creator stopped under a
// debugger, a program holding a flock of its own on the object, or another creator
// still committing more than ~40 MiB of it, costs the calling thread (a worker,
// perhaps) at most that much.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <corio/ipc/memory_map.hpp>
#include <corio/runtime/result.hpp>

namespace corio::ipc {

class owned_fd;
class shm_queue;

/// How create() makes the object.
struct shared_memory_options {
  mode_t mode = 0600;     ///< permissions of the new object (bits 0777 only: others invalid_argument)
  bool exclusive = true;  ///< fail with file_exists if the name exists (O_EXCL)
};

/// A named POSIX shared-memory object, mapped into this process (like Python's
/// SharedMemory); see the header.
class shared_memory {
 public:
  shared_memory() noexcept = default;

  /// Creates the object `name` with `size` bytes (zero-filled, committed: see Memory in
  /// the header) and maps it read-write.
  /// Without options.exclusive an existing object is opened instead, grown to `size` if
  /// it is smaller (never shrunk: other processes may have it mapped), and mapped whole.
  [[nodiscard]] static result<shared_memory> create(std::string_view name, std::size_t size,
                                                    const shared_memory_options& options = {});
  /// Opens the existing object `name` and maps all of it.
  [[nodiscard]] static result<shared_memory> open(std::string_view name, map_access access = map_access::read_write);
  /// Unlinks `name`; existing mappings stay valid.
  static result<void> remove(std::string_view name);

  /// The object's name, as given to create() or open().
  [[nodiscard]] const std::string& name() const noexcept { return m_name; }
  /// The mapped size in bytes.
  [[nodiscard]] std::size_t size() const noexcept { return m_map.size(); }
  /// The mapping.
  [[nodiscard]] memory_map& map() noexcept { return m_map; }
  /// The mapping, read-only.
  [[nodiscard]] const memory_map& map() const noexcept { return m_map; }
  /// The whole object as bytes.
  [[nodiscard]] std::span<std::byte> bytes() noexcept { return m_map.bytes(); }
  /// The whole object as read-only bytes.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return m_map.bytes(); }
  /// Checked typed access: see memory_map::view (a const handle gives const T only).
  template <class T>
  [[nodiscard]] result<std::span<T>> view(std::size_t offset = 0, std::size_t count = 1) noexcept {
    return m_map.view<T>(offset, count);
  }
  /// view() on a const handle: T must be const.
  template <class T>
  [[nodiscard]] result<std::span<T>> view(std::size_t offset = 0, std::size_t count = 1) const noexcept {
    return m_map.view<T>(offset, count);
  }

 private:
  friend class shm_queue;

  shared_memory(std::string name, memory_map map) noexcept : m_name(std::move(name)), m_map(std::move(map)) {}

  /// For shm_queue::create(): an exclusive create() whose object holds `building_word`
  /// (not 0) in its first 4 bytes from the moment it has any size, and whose sizing flock
  /// stays held through `lock`: the builder unlocks it (flock LOCK_UN: closing is not
  /// enough while the mapping keeps the open file description) once it has replaced the
  /// word (see "Building" in shm_queue.hpp).
  static result<shared_memory> create_building(std::string_view name, std::size_t size, mode_t mode,
                                               std::uint32_t building_word, owned_fd& lock);
  /// For shm_queue::open(): open(), but an object whose first word is `building_word`
  /// is resource_unavailable_try_again while its builder holds the lock, and owner_dead
  /// once the lock is free and the word still there (the builder died).
  static result<shared_memory> open_building(std::string_view name, std::uint32_t building_word);

  std::string m_name;
  memory_map m_map;
};

}  // namespace corio::ipc
