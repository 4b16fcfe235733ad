// corio::ipc::child_stdin / child_output: the parent's ends of a child's stdio pipes.
//
// A `child_stdin` writes into the child's standard input; a `child_output` reads the
// child's standard output or error. Both own their fd (O_CLOEXEC, closed by the
// destructor or close()) and do their I/O through the current worker's io_uring
// (corio::io::read / io::write), so a large transfer never blocks a worker. They are
// deliberately thin and private to processes, so that this folder does not depend on the
// general pipe types of ipc/pipe.hpp.
//
// Thread-safety: one owner; one read (or write) in flight at a time keeps the byte order.
// Cancellation: as io::read / io::write (operation_canceled; bytes already moved are
// not lost: a cancelled read returns its data if the CQE came first).
// Errors: the OS error of the read or write; writing after the child closed its end
// yields EPIPE (the worker threads block SIGPIPE, so no signal kills the parent).
// Resumes on: the worker whose ring completed the operation (maybe stolen later).
// Cost: one owned fd each; a read or write is one io_uring SQE (no thread, no copy beyond
// the kernel's pipe buffer); write_all() loops on short writes; read_to_end() grows its
// string by 64 KiB (one pipe's capacity) per read.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cstddef>
#include <span>
#include <stop_token>
#include <string>
#include <utility>

#include <corio/runtime/io.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

namespace detail {
/// An owned file descriptor (move-only; -1 when empty).
class process_fd {
 public:
  process_fd() noexcept = default;
  explicit process_fd(int fd) noexcept : m_fd(fd) {}
  process_fd(process_fd&& o) noexcept : m_fd(std::exchange(o.m_fd, -1)) {}
  process_fd& operator=(process_fd&& o) noexcept {
    if (this != &o) {
      close();
      m_fd = std::exchange(o.m_fd, -1);
    }
    return *this;
  }
  process_fd(const process_fd&) = delete;
  process_fd& operator=(const process_fd&) = delete;
  ~process_fd() { close(); }

  [[nodiscard]] int get() const noexcept { return m_fd; }
  [[nodiscard]] bool is_open() const noexcept { return m_fd >= 0; }
  [[nodiscard]] int release() noexcept { return std::exchange(m_fd, -1); }
  void close() noexcept;

 private:
  int m_fd = -1;
};
}  // namespace detail

/// The write end of a child's stdin pipe.
class child_stdin {
 public:
  child_stdin() noexcept = default;
  /// Takes ownership of the pipe's write end `fd`.
  explicit child_stdin(int fd) noexcept : m_fd(fd) {}

  /// The parent's end of the pipe (-1 once closed). Ownership stays here.
  [[nodiscard]] int fd() const noexcept { return m_fd.get(); }
  /// True until close().
  [[nodiscard]] bool is_open() const noexcept { return m_fd.is_open(); }
  /// Closes the pipe: the child then reads end-of-file.
  void close() noexcept { m_fd.close(); }

  /// Writes up to buf.size() bytes; yields result<std::size_t>.
  auto write(std::span<const std::byte> buf, std::stop_token token = {}) {
    return io::write(m_fd.get(), buf, -1, std::move(token));
  }
  /// Writes all of `data` (several writes if the pipe is full). Yields result<void>.
  task<result<void>> write_all(std::span<const std::byte> data, std::stop_token token = {});

 private:
  detail::process_fd m_fd;
};

/// The read end of a child's stdout or stderr pipe.
class child_output {
 public:
  child_output() noexcept = default;
  /// Takes ownership of the pipe's read end `fd`.
  explicit child_output(int fd) noexcept : m_fd(fd) {}

  /// The parent's end of the pipe (-1 once closed). Ownership stays here.
  [[nodiscard]] int fd() const noexcept { return m_fd.get(); }
  /// True until close().
  [[nodiscard]] bool is_open() const noexcept { return m_fd.is_open(); }
  /// Closes the parent's end now (idempotent).
  void close() noexcept { m_fd.close(); }

  /// Reads up to buf.size() bytes (0 = the child closed its end); yields result<std::size_t>.
  auto read(std::span<std::byte> buf, std::stop_token token = {}) {
    return io::read(m_fd.get(), buf, -1, std::move(token));
  }
  /// Reads until end-of-file, appending to `out`; yields the number of bytes read.
  task<result<std::size_t>> read_to_end(std::string& out, std::stop_token token = {});

 private:
  detail::process_fd m_fd;
};

}  // namespace corio::ipc
