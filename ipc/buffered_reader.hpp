// corio::ipc::buffered_reader: reads ahead from any readable stream (ipc/byte_stream.hpp:
// sockets, pipes, child stdout/stderr) into a buffer of its own, for line and delimiter
// protocols: read_line, read_until, read_exact, read_some.
//
// Concept: `buffered_reader reader(stream);` then `co_await reader.read_line()` yields the
// next line without its "\n" (or "\r\n"); corio::errc::closed marks the end of the
// stream. A last line without a newline is still returned as a line. read_until(out,
// delimiter) appends through the delimiter. The reader refers to the stream (which must
// outlive it) and never owns it: write replies to the stream itself, or through a
// buffered_writer.
// Limit: a delimiter must appear within max_line bytes (default 64 KiB, the delimiter
// included), or read_until / read_line return buffered_errc::too_long (equal to
// std::errc::message_size) and consume nothing: the first max_line bytes stay in
// buffered(); the usual answer is to close the connection (or consume() and go on).
// Memory: the buffer is allocated by the first read (an idle reader costs nothing), starts
// at `capacity` bytes (default 4 KiB) and grows only as far as a line needs (at most
// max_line); release() gives it back when nothing is buffered.
// Thread-safety: one task at a time per reader. Cost: each call is a task frame (recycled)
// and at most one read_some of the stream per buffer refill; bytes already buffered are
// copied without a system call; a read_some or read_exact of at least `capacity` bytes
// with nothing buffered goes straight into the caller's buffer.
// Cancellation: every call takes a std::stop_token and honours the inherited one
// (std::errc::operation_canceled). A cancelled read_line, read_until or read_some loses
// nothing: bytes read before the cancel stay buffered for the next call. A cancelled
// read_exact of more than `capacity` bytes may have consumed a prefix.
// Errors: the stream's errors, as they come; read_exact returns corio::errc::closed if
// the stream ends first.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <corio/ipc/byte_stream.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// Errors of buffered_reader (category "corio.buffered").
enum class buffered_errc {
  too_long = 1,  ///< no delimiter within max_line bytes; compares equal to std::errc::message_size
};

/// The category of buffered_errc ("corio.buffered").
const std::error_category& buffered_category() noexcept;

/// Lets a buffered_errc compare with and convert to std::error_code.
inline std::error_code make_error_code(buffered_errc e) noexcept { return {static_cast<int>(e), buffered_category()}; }

/// The buffer sizes of a buffered_reader.
struct buffered_reader_options {
  /// The buffer's first size, allocated by the first read (at least 1).
  std::size_t capacity = 4096;
  /// The longest line (delimiter included) read_line and read_until accept (at least 1).
  std::size_t max_line = 64 * 1024;
};

/// Reads ahead from a readable stream into a buffer of its own, for line and delimiter
/// protocols; see the header.
template <readable_stream Stream>
class buffered_reader {
 public:
  /// A reader of `stream` (which must outlive it); nothing is allocated or read yet.
  explicit buffered_reader(Stream& stream, buffered_reader_options options = {}) noexcept
      : m_stream(&stream),
        m_capacity(std::max<std::size_t>(options.capacity, 1)),
        m_max_line(std::max<std::size_t>(options.max_line, 1)) {}

  /// Takes over `other`'s stream reference and buffered bytes.
  buffered_reader(buffered_reader&&) noexcept = default;
  /// Drops what was buffered so far, then takes over `other`'s stream and bytes.
  buffered_reader& operator=(buffered_reader&&) noexcept = default;

  /// The stream read from.
  [[nodiscard]] Stream& get() const noexcept { return *m_stream; }
  /// Bytes read ahead and not consumed yet.
  [[nodiscard]] std::span<const std::byte> buffered() const noexcept {
    return std::span<const std::byte>(m_buf).subspan(m_begin, m_end - m_begin);
  }
  /// Drops the first n buffered bytes (at most all of them).
  void consume(std::size_t n) noexcept {
    m_begin += std::min(n, m_end - m_begin);
    m_scanned = 0;
    if (m_begin == m_end) {
      m_begin = m_end = 0;
    }
  }
  /// Frees the buffer if nothing is buffered (the next read allocates it again).
  void release() noexcept {
    if (m_begin == m_end) {
      m_buf = std::vector<std::byte>();
      m_begin = m_end = m_scanned = 0;
    }
  }
  /// The buffer's current size in bytes (0 before the first read and after release()).
  [[nodiscard]] std::size_t buffer_size() const noexcept { return m_buf.size(); }

  /// Reads once more from the stream into the buffer (growing it up to max_line if it
  /// is full); yields the bytes added, 0 at end of stream; buffered_errc::too_long when
  /// the buffer cannot take more (it holds max(capacity, max_line) bytes).
  [[nodiscard]] task<result<std::size_t>> fill(std::stop_token token = {}) {
    if (!make_room()) {
      co_return unexpected(make_error_code(buffered_errc::too_long));
    }
    co_return co_await fill_once(std::move(token));
  }

  /// Up to buf.size() bytes: buffered ones first (no system call), else one read.
  /// Yields 0 at end of stream.
  [[nodiscard]] task<result<std::size_t>> read_some(std::span<std::byte> buf, std::stop_token token = {}) {
    if (buf.empty()) {
      co_return 0;
    }
    if (m_begin == m_end) {
      if (buf.size() >= m_capacity) {
        co_return co_await ipc::read_some(*m_stream, buf, std::move(token));
      }
      auto n = co_await fill_once(std::move(token));
      if (!n || *n == 0) {
        co_return n;
      }
    }
    co_return take(buf);
  }

  /// Exactly buf.size() bytes; corio::errc::closed if the stream ends first.
  [[nodiscard]] task<result<void>> read_exact(std::span<std::byte> buf, std::stop_token token = {}) {
    if (buf.size() <= m_capacity) {
      // Read ahead until it is all buffered, then copy: a cancel loses nothing.
      while (m_end - m_begin < buf.size()) {
        auto n = co_await fill_once(token);
        if (!n) {
          co_return unexpected(n.error());
        }
        if (*n == 0) {
          co_return unexpected(make_error_code(errc::closed));
        }
      }
      (void)take(buf);
      co_return result<void>{};
    }
    std::size_t got = take(buf);
    co_return co_await ipc::read_exact(*m_stream, buf.subspan(got), std::move(token));
  }

  /// Appends to `out` the bytes up to and including the next `delimiter`; yields how many.
  /// At end of stream it appends what is left without a delimiter, then yields 0.
  /// buffered_errc::too_long when no delimiter appears within max_line bytes.
  [[nodiscard]] task<result<std::size_t>> read_until(std::string& out, std::string_view delimiter,
                                                     std::stop_token token = {}) {
    auto n = co_await find(delimiter, std::move(token));
    if (!n) {
      co_return unexpected(n.error());
    }
    out.append(reinterpret_cast<const char*>(m_buf.data()) + m_begin, *n);
    consume(*n);
    co_return *n;
  }
  /// read_until() with a one-character delimiter.
  [[nodiscard]] task<result<std::size_t>> read_until(std::string& out, char delimiter, std::stop_token token = {}) {
    const char d[1] = {delimiter};
    co_return co_await read_until(out, std::string_view(d, 1), std::move(token));
  }

  /// The next line without its "\n" or "\r\n"; corio::errc::closed at end of stream;
  /// buffered_errc::too_long for a line longer than max_line.
  [[nodiscard]] task<result<std::string>> read_line(std::stop_token token = {}) {
    auto n = co_await find("\n", std::move(token));
    if (!n) {
      co_return unexpected(n.error());
    }
    if (*n == 0) {
      co_return unexpected(make_error_code(errc::closed));
    }
    std::string line(reinterpret_cast<const char*>(m_buf.data()) + m_begin, *n);
    consume(*n);
    if (line.ends_with('\n')) {
      line.pop_back();
      if (line.ends_with('\r')) {
        line.pop_back();
      }
    }
    co_return line;
  }

 private:
  // Copies buffered bytes into buf; returns how many.
  std::size_t take(std::span<std::byte> buf) noexcept {
    std::size_t n = std::min(buf.size(), m_end - m_begin);
    if (n != 0) {
      std::memcpy(buf.data(), m_buf.data() + m_begin, n);
      consume(n);
    }
    return n;
  }

  // Makes room at the end of the buffer: moves the data to the front, or grows (up to
  // max_line) when it is full. Returns false when the buffer holds max_line bytes.
  bool make_room() {
    if (m_buf.empty()) {
      m_buf.resize(m_capacity);
      return true;
    }
    if (m_end < m_buf.size()) {
      return true;
    }
    if (m_begin > 0) {
      std::memmove(m_buf.data(), m_buf.data() + m_begin, m_end - m_begin);
      m_end -= m_begin;
      m_begin = 0;
      return true;
    }
    if (m_buf.size() >= m_max_line) {
      return false;
    }
    m_buf.resize(std::min(m_buf.size() * 2, m_max_line));
    return true;
  }

  task<result<std::size_t>> fill_once(std::stop_token token) {
    if (!make_room()) {
      co_return 0;
    }
    auto room = std::span<std::byte>(m_buf).subspan(m_end);
    auto n = co_await ipc::read_some(*m_stream, room, std::move(token));
    if (n) {
      m_end += *n;
    }
    co_return n;
  }

  // Yields the length of the buffered prefix through the next delimiter, filling as
  // needed; at end of stream, everything buffered (0 when nothing is).
  task<result<std::size_t>> find(std::string_view delimiter, std::stop_token token) {
    for (;;) {
      std::string_view data(reinterpret_cast<const char*>(m_buf.data()) + m_begin, m_end - m_begin);
      // m_scanned: how far earlier calls searched without a match (minus a partial delimiter).
      std::size_t at = data.find(delimiter, m_scanned);
      if (at != std::string_view::npos && at + delimiter.size() <= m_max_line) {
        m_scanned = 0;
        co_return at + delimiter.size();
      }
      if (data.size() >= m_max_line) {
        m_scanned = 0;
        co_return unexpected(make_error_code(buffered_errc::too_long));
      }
      m_scanned = data.size() >= delimiter.size() ? data.size() - delimiter.size() + 1 : 0;
      auto n = co_await fill_once(token);
      if (!n) {
        // m_scanned holds only for this delimiter: a later call may look for another.
        m_scanned = 0;
        co_return unexpected(n.error());
      }
      if (*n == 0) {
        m_scanned = 0;
        co_return m_end - m_begin;  // end of stream: the rest, without a delimiter
      }
    }
  }

  Stream* m_stream;
  std::size_t m_capacity;
  std::size_t m_max_line;
  std::vector<std::byte> m_buf;
  std::size_t m_begin = 0;    // first buffered byte
  std::size_t m_end = 0;      // one past the last buffered byte
  std::size_t m_scanned = 0;  // bytes from m_begin known to hold no delimiter start
};

}  // namespace corio::ipc

template <>
struct std::is_error_code_enum<corio::ipc::buffered_errc> : std::true_type {};
