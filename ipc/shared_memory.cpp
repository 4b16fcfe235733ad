// POSIX shared memory (ipc/shared_memory.hpp): create (exclusive unless the options say
// otherwise), open and remove a named segment, and map it; and how an opener tells an
// object its creator (or shm_queue's builder) is still making from one whose creator
// died before it finished (the sizing flock, and for an empty object its age).
#include <corio/ipc/shared_memory.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <new>

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

/// Takes flock(LOCK_EX) of a new or existing object: false on failure (errno). Another
/// creator holds the lock for an fstat and the object's growth (an fallocate: ~0.25 ms
/// per MiB added; a queue's builder for its build too), and an opener briefly shares it
/// to look at an object that has not been finished; the lock is tried without blocking,
/// every 20 µs for at most 10 ms, so a program that holds a flock on the object for its
/// own ends, or a creator stopped under a debugger, costs the caller's thread (a worker,
/// perhaps) that much and then EWOULDBLOCK, not a wait of unknown length.
bool lock_exclusive(int fd) noexcept {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(10);
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      return true;
    }
    if ((errno != EWOULDBLOCK && errno != EINTR) || std::chrono::steady_clock::now() >= give_up) {
      return false;  // (errno: flock's)
    }
    const timespec pause{0, 20'000};
    ::nanosleep(&pause, nullptr);
  }
}

/// Grows the object from `from` bytes (its size now) to `size`, committing the memory it
/// adds and nothing else (a sparse object's holes below `from` stay holes): fallocate
/// (mode 0) of [from, size) has tmpfs allocate every page first and set the size last,
/// and on failure give back what it took, leaving the size as it was. So a size that
/// /dev/shm cannot hold is no_space_on_device here, not a SIGBUS later in whichever
/// process first touches a page that cannot be had. Signals are blocked meanwhile: on
/// older kernels tmpfs abandons the whole call (EINTR) when one is pending, and a retry
/// starts again from nothing (a periodic signal could starve a large object); a stop
/// (SIGSTOP, the freezer) is retried, SIGKILL ends the process. Not covered: on kernels
/// 5.11 to 6.0, io_uring task work for this thread's ring (TIF_NOTIFY_SIGNAL, which no
/// mask blocks) interrupts it too, so a busy worker retries. A filesystem without
/// fallocate (EOPNOTSUPP; ENOSYS where a seccomp filter refuses it) is grown with
/// ftruncate, uncommitted, as before.
std::error_code grow_committed(int fd, std::size_t from, std::size_t size) noexcept {
  sigset_t all{};
  sigset_t old{};
  ::sigfillset(&all);
  const bool masked = ::pthread_sigmask(SIG_SETMASK, &all, &old) == 0;
  int rc = 0;
  do {
    rc = ::fallocate(fd, 0, static_cast<off_t>(from), static_cast<off_t>(size - from));
  } while (rc != 0 && errno == EINTR);
  const int failed = rc == 0 ? 0 : errno;
  if (masked) {
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  if (failed == 0) {
    return {};
  }
  if (failed == EOPNOTSUPP || failed == ENOSYS) {
    return ::ftruncate(fd, static_cast<off_t>(size)) == 0 ? std::error_code{} : last_os_error();
  }
  return os_error(-failed);
}

/// Under the exclusive flock: the object mapped whole, first grown to `size` if smaller
/// (grow_committed). Mapped before it grows (mapping past the end of a file is allowed),
/// so that a mapping that does not fit the address space fails first, allocating
/// nothing. An object already large enough is mapped as it is, nothing committed (as
/// open() does).
result<memory_map> map_grown_locked(int fd, std::size_t size) noexcept {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return unexpected(last_os_error());
  }
  const auto now = static_cast<std::size_t>(st.st_size);
  auto map = memory_map::map(fd, std::max(now, size), map_access::read_write);
  if (!map) {
    return map;
  }
  if (now < size) {
    if (auto ec = grow_committed(fd, now, size)) {
      return unexpected(ec);  // (the mapping is undone on the way out)
    }
  }
  return map;
}

/// Whether the object's name has been removed (a creator that failed unlinks it under its
/// lock; an opener that had it open then says "try again" and finds the name gone, or a
/// new object, instead of calling that creator dead).
bool is_unlinked(int fd) noexcept {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && st.st_nlink == 0;
}

/// Drops the flock, keeping errno.
void unlock(int fd) noexcept {
  const int saved = errno;
  (void)::flock(fd, LOCK_UN);
  errno = saved;
}

/// Takes the object's flock shared, without waiting: 0 when taken, else the error
/// (resource_unavailable_try_again while a creator, a builder or another program holds
/// it exclusively, or a signal came).
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
  const bool removed = st.st_nlink == 0;
  unlock(fd);
  if (sized) {
    return {};
  }
  return error(removed ? std::errc::resource_unavailable_try_again : std::errc::owner_dead);
}

/// An opener's verdict on a builder's object whose first word `first` still read
/// `building_word` (shared_memory::create_building): while the builder holds the flock,
/// resource_unavailable_try_again; once not, 0 if the word changed meanwhile (the builder
/// finished), else owner_dead (it died before it finished).
std::error_code building_verdict(int fd, std::uint32_t& first, std::uint32_t building_word) noexcept {
  if (auto busy = lock_shared_now(fd)) {
    return busy;
  }
  // We hold the lock shared, so the builder has let it go: it unlocked after it replaced
  // the word, or died. What keeps us from reading the old word after a builder that
  // finished: its store came before its unlock, the unlock and our flock go through the
  // kernel's lock (a spinlock: release, then acquire), and flock() is an opaque call, so
  // the compiler cannot move our load above it; the C++ model says nothing between
  // processes, so this rests on the kernel and the hardware (x86, arm64). acquire on the
  // load: later reads of the header come after it (recognise() reloads with acquire
  // too). A false owner_dead would tell the user to remove a live queue.
  const std::uint32_t now = std::atomic_ref<std::uint32_t>(first).load(std::memory_order_acquire);
  const bool removed = is_unlinked(fd);
  unlock(fd);
  if (now != building_word) {
    return {};
  }
  return error(removed ? std::errc::resource_unavailable_try_again : std::errc::owner_dead);
}

/// What create_object() and open_object() made: the name and the mapping.
struct made {
  std::string path;
  memory_map map;
};

/// create() (with `building_word` 0 and no `keep_lock`) and create_building(). An object
/// this call made and cannot finish is unlinked while the lock is still held: an opener
/// that got it first then finds it unlinked ("try again", then the name gone), not a
/// builder's word with the lock free, which reads as a dead builder (owner_dead).
result<made> create_object(std::string_view name, std::size_t size, const shared_memory_options& options,
                           std::uint32_t building_word, owned_fd* keep_lock) {
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
  auto fail = [&](std::error_code ec) -> result<made> {
    if (created) {
      ::shm_unlink(path.c_str());  // ours, and unusable (under the lock where we took it)
    }
    return unexpected(ec);
  };
  // Grow, never shrink: the size is read and set under an exclusive flock of the object,
  // which every creator takes, so a creator that read a smaller size cannot truncate the
  // object after another one grew it and mapped the larger size (its accesses past the
  // new end would raise SIGBUS). Held for an fstat, a mapping and the growth (an
  // fallocate: microseconds, plus ~0.25 ms per MiB added; a builder holds it until it has
  // built what goes in: shm_queue's header); it is dropped
  // explicitly (LOCK_UN: our mapping keeps the open file description, and with it the
  // lock, past a close), and by the kernel when the holder dies.
  if (!lock_exclusive(object.fd())) {
    return fail(last_os_error());
  }
  // A builder's first word goes in before the object has any size (pwrite makes it 4
  // bytes long), so an opener never finds a builder's object sized without it: while
  // the builder holds the lock it is "try again", once the lock is free and the word
  // still there the builder is dead. (created: nobody else has written to it.)
  if (building_word != 0 && created) {
    const ssize_t wrote = ::pwrite(object.fd(), &building_word, sizeof building_word, 0);
    if (wrote != static_cast<ssize_t>(sizeof building_word)) {
      return fail(wrote < 0 ? last_os_error() : error(std::errc::no_space_on_device));
    }
  }
  auto map = map_grown_locked(object.fd(), size);
  if (!map) {
    auto failed = fail(map.error());  // unlinked before the lock goes
    unlock(object.fd());
    return failed;
  }
  if (keep_lock == nullptr) {
    unlock(object.fd());
  }
  if (keep_lock != nullptr) {
    *keep_lock = std::move(object);  // the lock stays held until the builder unlocks it (LOCK_UN)
  }
  return made{std::move(path), std::move(*map)};
}

/// open() (with `building_word` 0) and open_building().
result<made> open_object(std::string_view name, map_access access, std::uint32_t building_word) {
  if (!detail::valid_posix_ipc_name(name)) {
    return unexpected(invalid_argument());
  }
  std::string path(name);
  owned_fd object(::shm_open(path.c_str(), (access == map_access::read_write ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0));
  if (!object) {
    return unexpected(last_os_error());
  }
  for (bool again = true;; again = false) {
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
    if (building_word != 0 && map->size() >= sizeof building_word) {
      auto& first = *std::launder(reinterpret_cast<std::uint32_t*>(map->data()));  // page-aligned
      // relaxed: which value only; a finished builder's word is read again with acquire
      // order by the caller (recognise()).
      if (std::atomic_ref<std::uint32_t>(first).load(std::memory_order_relaxed) == building_word) {
        if (auto verdict = building_verdict(object.fd(), first, building_word)) {
          return unexpected(verdict);
        }
      }
      // The word is not (or no longer) building_word, so a builder has finished, and it
      // sized the object before it replaced the word; but our fstat may have come just
      // after its pwrite, when the object was 4 bytes long: then map it again, whole.
      if (again && map->size() == sizeof building_word) {
        continue;
      }
    }
    return made{std::move(path), std::move(*map)};
  }
}

}  // namespace

result<shared_memory> shared_memory::create(std::string_view name, std::size_t size,
                                            const shared_memory_options& options) {
  auto m = create_object(name, size, options, 0, nullptr);
  if (!m) {
    return unexpected(m.error());
  }
  return shared_memory(std::move(m->path), std::move(m->map));
}

result<shared_memory> shared_memory::create_building(std::string_view name, std::size_t size, mode_t mode,
                                                     std::uint32_t building_word, owned_fd& lock) {
  if (building_word == 0 || size < sizeof building_word) {
    return unexpected(invalid_argument());
  }
  auto m = create_object(name, size, {mode, /*exclusive=*/true}, building_word, &lock);
  if (!m) {
    return unexpected(m.error());
  }
  return shared_memory(std::move(m->path), std::move(m->map));
}

result<shared_memory> shared_memory::open(std::string_view name, map_access access) {
  auto m = open_object(name, access, 0);
  if (!m) {
    return unexpected(m.error());
  }
  return shared_memory(std::move(m->path), std::move(m->map));
}

result<shared_memory> shared_memory::open_building(std::string_view name, std::uint32_t building_word) {
  auto m = open_object(name, map_access::read_write, building_word);
  if (!m) {
    return unexpected(m.error());
  }
  return shared_memory(std::move(m->path), std::move(m->map));
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
