// corio::ipc::owned_fd: the RAII owner of one file descriptor, base of every ipc handle.
//
// Concept: holds a descriptor and closes it on destruction (a synchronous close(2): it is
// cheap for sockets and pipes and cannot block unless SO_LINGER is set). Move-only.
// Thread-safety: one owner. Closing a descriptor while an operation on it is in flight
// from another task is a bug (the number may be reused); cancel the operation first.
// Cost: an int. Cancellation: nothing here waits.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <unistd.h>

#include <utility>

namespace corio::ipc {

/// Owns a file descriptor and closes it on destruction. Move-only; the base of corio's
/// sockets, pipes and queues.
class owned_fd {
 public:
  /// Empty: no descriptor.
  owned_fd() noexcept = default;
  /// Takes ownership of `fd` (-1 for none).
  explicit owned_fd(int fd) noexcept : m_fd(fd) {}
  /// Takes over `other`'s descriptor; `other` is empty afterwards.
  owned_fd(owned_fd&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
  /// Closes the descriptor held so far (if any), then takes over `other`'s.
  owned_fd& operator=(owned_fd&& other) noexcept {
    if (this != &other) {
      close();
      m_fd = std::exchange(other.m_fd, -1);
    }
    return *this;
  }
  owned_fd(const owned_fd&) = delete;
  owned_fd& operator=(const owned_fd&) = delete;
  ~owned_fd() { close(); }

  /// The descriptor (-1 when empty). Ownership stays here.
  [[nodiscard]] int fd() const noexcept { return m_fd; }
  /// True while a descriptor is held.
  [[nodiscard]] bool is_open() const noexcept { return m_fd >= 0; }
  /// is_open().
  explicit operator bool() const noexcept { return is_open(); }
  /// Gives up ownership and returns the descriptor.
  [[nodiscard]] int release() noexcept { return std::exchange(m_fd, -1); }
  /// Closes the descriptor now (idempotent).
  void close() noexcept {
    if (m_fd >= 0) {
      ::close(m_fd);
      m_fd = -1;
    }
  }

 private:
  int m_fd = -1;
};

}  // namespace corio::ipc
