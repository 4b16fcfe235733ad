// POSIX shared memory (ipc/shared_memory.hpp): create (exclusive unless the options say
// otherwise), open and remove a named segment, and map it; and how an opener tells an
// object its creator is still sizing from one whose creator died before it sized it
// (the sizing flock, and the object's age).
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

std::error_code error(std::errc e) noexcept { return std::make_error_code(e); }

/// How long an object may stay empty (size 0) with no creator holding its sizing flock
/// before open() calls its creator dead (see the header's "Lifetime").
constexpr std::chrono::seconds abandoned_after{5};

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

/// Drops the flock, keeping errno.
void unlock(int fd) noexcept {
  const int saved = errno;
  (void)::flock(fd, LOCK_UN);
  errno = saved;
}

/// Takes the object's flock shared, without waiting: 0 when taken, else the error
/// (resource_unavailable_try_again while a creator or another program holds it
/// exclusively, or a signal came).
std::error_code lock_shared_now(int fd) noexcept {
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
    return {};
  }
  return errno == EWOULDBLOCK || errno == EINTR ? error(std::errc::resource_unavailable_try_again) : last_os_error();
}

/// An opener's verdict on an object found empty: its creator is between shm_open and
/// ftruncate (corio's under its flock from just after shm_open, Python's without one), or
/// died there. 0 when it has been sized meanwhile (`st` then holds its size); else
/// resource_unavailable_try_again while it is younger than abandoned_after or its flock
/// is held (a live creator), owner_dead once neither (its creator died before sizing it;
/// nobody will). The age is the time since the object's last inode change (st_ctim: its
/// creation, for an object never sized), by the realtime clock.
std::error_code empty_verdict(int fd, struct stat& st) noexcept {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const auto age = std::chrono::seconds(now.tv_sec - st.st_ctim.tv_sec) +
                   std::chrono::nanoseconds(now.tv_nsec - st.st_ctim.tv_nsec);
  if (age < abandoned_after) {  // (a clock set back makes it younger: try again, later)
    return error(std::errc::resource_unavailable_try_again);
  }
  if (auto busy = lock_shared_now(fd)) {
    return busy;  // a creator stopped between its flock and its ftruncate, or another program's lock
  }
  const bool sized = ::fstat(fd, &st) == 0 && st.st_size != 0;  // by a creator that just ended
  unlock(fd);
  return sized ? std::error_code{} : error(std::errc::owner_dead);
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
  if (st.st_size == 0) {
    if (auto verdict = empty_verdict(object.fd(), st)) {
      return unexpected(verdict);
    }
  }
  auto map = memory_map::map(object.fd(), static_cast<std::size_t>(st.st_size), access);
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
