// Memory maps (ipc/memory_map.hpp): mapping a descriptor, a file or anonymous memory, the
// asynchronous flush (msync on the blocking pool) and unmapping.
#include <corio/ipc/memory_map.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <corio/ipc/owned_fd.hpp>
#include <corio/runtime/blocking.hpp>

namespace corio::ipc {

namespace {

std::error_code last_os_error() noexcept { return os_error(-errno); }

std::error_code invalid_argument() noexcept { return std::make_error_code(std::errc::invalid_argument); }

}  // namespace

result<memory_map> memory_map::map(int fd, std::size_t length, map_access access, std::size_t offset) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  if (length == 0 || offset % page != 0) {
    return unexpected(invalid_argument());
  }
  const int prot = access == map_access::read_write ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = ::mmap(nullptr, length, prot, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) {
    return unexpected(last_os_error());
  }
  return memory_map(static_cast<std::byte*>(p), length, access);
}

result<memory_map> memory_map::map_file(const std::string& path, map_access access) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer, blocking the caller's
  // thread, a worker perhaps (mmap then refuses it). On a regular file it matters only
  // under a lease (F_SETLEASE), where it fails with EWOULDBLOCK instead of waiting for
  // the lease to break: that open is made again as before, waiting.
  const int flags = (access == map_access::read_write ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  owned_fd file(::open(path.c_str(), flags | O_NONBLOCK));
  if (!file && errno == EWOULDBLOCK) {
    file = owned_fd(::open(path.c_str(), flags));
  }
  if (!file) {
    return unexpected(last_os_error());
  }
  struct stat st {};
  if (::fstat(file.fd(), &st) != 0) {
    return unexpected(last_os_error());
  }
  return map(file.fd(), static_cast<std::size_t>(st.st_size), access);  // an empty file: invalid_argument
}

result<memory_map> memory_map::anonymous(std::size_t length) {
  if (length == 0) {
    return unexpected(invalid_argument());
  }
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return unexpected(last_os_error());
  }
  return memory_map(static_cast<std::byte*>(p), length, map_access::read_write);
}

task<result<void>> memory_map::flush(std::stop_token token) const {
  if (m_data == nullptr) {
    co_return unexpected(invalid_argument());
  }
  void* data = m_data;
  const std::size_t size = m_size;
  auto done = co_await spawn_blocking([data, size] { return ::msync(data, size, MS_SYNC) == 0 ? 0 : errno; },
                                      std::move(token));
  if (!done) {
    co_return unexpected(done.error());
  }
  if (*done != 0) {
    co_return unexpected(os_error(-*done));
  }
  co_return result<void>{};
}

void memory_map::unmap() noexcept {
  if (m_data != nullptr) {
    ::munmap(m_data, m_size);
    m_data = nullptr;
    m_size = 0;
  }
}

}  // namespace corio::ipc
