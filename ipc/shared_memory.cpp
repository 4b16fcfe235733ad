// POSIX shared memory (ipc/shared_memory.hpp): create (exclusive unless the options say
// otherwise), open and remove a named segment, and map it.
#include <corio/ipc/shared_memory.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>

#include <corio/ipc/detail/posix_name.hpp>
#include <corio/ipc/owned_fd.hpp>

namespace corio::ipc {

namespace {

std::error_code last_os_error() noexcept { return os_error(-errno); }

std::error_code invalid_argument() noexcept { return std::make_error_code(std::errc::invalid_argument); }

// Under flock(LOCK_EX): the object's size, grown to `size` if smaller. 0 on failure
// (errno). Another creator holds the lock for an fstat and an ftruncate; the lock is
// tried without blocking, every 20 µs for at most 10 ms, so a program that holds a flock
// on the object for its own ends, or a creator stopped under a debugger, costs the
// caller's thread (a worker, perhaps) that much and then EWOULDBLOCK, not a wait of
// unknown length.
std::size_t grow_locked(int fd, std::size_t size) noexcept {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(10);
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      break;
    }
    if ((errno != EWOULDBLOCK && errno != EINTR) || std::chrono::steady_clock::now() >= give_up) {
      return 0;  // (errno: flock's)
    }
    const timespec pause{0, 20'000};
    ::nanosleep(&pause, nullptr);
  }
  std::size_t now = 0;
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    now = static_cast<std::size_t>(st.st_size);
    if (now < size) {  // a new object (size 0), or an existing smaller one
      now = ::ftruncate(fd, static_cast<off_t>(size)) == 0 ? size : 0;
    }
  }
  const int saved = errno;
  (void)::flock(fd, LOCK_UN);
  errno = saved;
  return now;
}

}  // namespace

result<shared_memory> shared_memory::create(std::string_view name, std::size_t size,
                                            const shared_memory_options& options) {
  if (!detail::valid_posix_ipc_name(name) || size == 0 || (options.mode & ~static_cast<mode_t>(0777)) != 0) {
    return unexpected(invalid_argument());  // mode: permission bits only (no setuid, no file type)
  }
  std::string path(name);
  // O_EXCL first, so we know whether the object is ours to size (and to unlink on failure).
  owned_fd object(::shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, options.mode));
  bool created = object.is_open();
  if (!created) {
    if (errno != EEXIST || options.exclusive) {
      return unexpected(last_os_error());
    }
    object = owned_fd(::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0));
    if (!object) {
      return unexpected(last_os_error());
    }
  }
  auto fail = [&](std::error_code ec) -> result<shared_memory> {
    if (created) {
      ::shm_unlink(path.c_str());  // ours, and unusable
    }
    return unexpected(ec);
  };
  // Grow, never shrink: the size is read and set under an exclusive flock of the object,
  // which every creator takes, so a creator that read a smaller size cannot truncate the
  // object after another one grew it and mapped the larger size (its accesses past the
  // new end would raise SIGBUS). Held for an fstat and an ftruncate: microseconds; the
  // lock goes with the descriptor, also when the holder dies.
  const std::size_t mapped = grow_locked(object.fd(), size);
  if (mapped == 0) {
    return fail(last_os_error());
  }
  auto map = memory_map::map(object.fd(), mapped, map_access::read_write);
  if (!map) {
    return fail(map.error());
  }
  return shared_memory(std::move(path), std::move(*map));
}

result<shared_memory> shared_memory::open(std::string_view name, map_access access) {
  if (!detail::valid_posix_ipc_name(name)) {
    return unexpected(invalid_argument());
  }
  std::string path(name);
  owned_fd object(::shm_open(path.c_str(), (access == map_access::read_write ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0));
  if (!object) {
    return unexpected(last_os_error());
  }
  struct stat st {};
  if (::fstat(object.fd(), &st) != 0) {
    return unexpected(last_os_error());
  }
  auto map = memory_map::map(object.fd(), static_cast<std::size_t>(st.st_size), access);  // empty: invalid_argument
  if (!map) {
    return unexpected(map.error());
  }
  return shared_memory(std::move(path), std::move(*map));
}

result<void> shared_memory::remove(std::string_view name) {
  if (!detail::valid_posix_ipc_name(name)) {
    return unexpected(invalid_argument());
  }
  if (::shm_unlink(std::string(name).c_str()) != 0) {
    return unexpected(last_os_error());
  }
  return {};
}

}  // namespace corio::ipc
