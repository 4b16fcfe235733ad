// corio::ipc::buffered_writer: gathers small writes to any writable stream
// (ipc/byte_stream.hpp: sockets, pipes, child stdin) into one buffer and sends it in large
// writes.
//
// Concept: `buffered_writer writer(stream);` then `co_await writer.write("line\n")` copies
// into the buffer and writes to the stream only when the buffer is full; `co_await
// writer.flush()` sends what is buffered. append() only copies (no I/O, the buffer grows
// beyond its capacity if needed), for building a reply before one flush. The writer refers
// to the stream (which must outlive it) and never owns it.
// Nothing is sent by the destructor (it cannot wait): bytes not flushed are dropped, so
// flush() before the writer goes (pending() tells how many are left).
// Memory: the buffer is allocated by the first write (an idle writer costs nothing) at
// `capacity` bytes (default 8 KiB); release() frees it when nothing is pending.
// Thread-safety: one task at a time per writer. Cost: each write/flush is a task frame
// (recycled); a write that fits copies and returns without a system call; a write of at
// least `capacity` bytes with nothing pending goes straight to the stream.
// Back-pressure: flush (and a write that fills the buffer) completes when the stream took
// the bytes; with a peer that stops reading it stays suspended.
// Cancellation: every call takes a std::stop_token and honours the inherited one
// (std::errc::operation_canceled). A cancelled flush keeps the bytes not yet sent in the
// buffer (pending()); a cancelled write may have buffered or sent part of its data.
// Errors: the stream's, as they come; after an error the unsent bytes stay pending.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <span>
#include <stop_token>
#include <string_view>
#include <utility>
#include <vector>

#include <corio/ipc/byte_stream.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// Collects small writes to a writable stream and sends them in large ones; see the header.
template <writable_stream Stream>
class buffered_writer {
 public:
  /// `capacity`: the buffer size (at least 1), allocated by the first write.
  explicit buffered_writer(Stream& stream, std::size_t capacity = 8192) noexcept
      : m_stream(&stream), m_capacity(std::max<std::size_t>(capacity, 1)) {}

  /// Takes over `other`'s stream reference and pending bytes.
  buffered_writer(buffered_writer&&) noexcept = default;
  /// Drops what was pending so far (unsent), then takes over `other`'s stream and bytes.
  buffered_writer& operator=(buffered_writer&&) noexcept = default;

  /// The stream written to.
  [[nodiscard]] Stream& get() const noexcept { return *m_stream; }
  /// Bytes buffered and not sent yet.
  [[nodiscard]] std::size_t pending() const noexcept { return m_buf.size() - m_sent; }
  /// Frees the buffer if nothing is pending.
  void release() noexcept {
    if (pending() == 0) {
      m_buf = std::vector<std::byte>();
      m_sent = 0;
    }
  }

  /// Copies `data` into the buffer without any I/O (the buffer grows as needed).
  void append(std::span<const std::byte> data) {
    if (m_buf.capacity() == 0) {
      m_buf.reserve(m_capacity);
    }
    m_buf.insert(m_buf.end(), data.begin(), data.end());
  }
  /// append() of the characters of `text`.
  void append(std::string_view text) { append(std::as_bytes(std::span(text.data(), text.size()))); }

  /// Buffers `data`, writing to the stream when the buffer is full. `data` must outlive
  /// the await.
  [[nodiscard]] task<result<void>> write(std::span<const std::byte> data, std::stop_token token = {}) {
    if (pending() + data.size() <= m_capacity) {
      append(data);
      co_return result<void>{};
    }
    if (auto r = co_await flush(token); !r) {
      co_return r;
    }
    if (data.size() >= m_capacity) {
      co_return co_await ipc::write_all(*m_stream, data, std::move(token));
    }
    append(data);
    co_return result<void>{};
  }
  /// write() of the characters of `text` (which must outlive the await).
  [[nodiscard]] task<result<void>> write(std::string_view text, std::stop_token token = {}) {
    co_return co_await write(std::as_bytes(std::span(text.data(), text.size())), std::move(token));
  }

  /// Writes everything pending to the stream.
  [[nodiscard]] task<result<void>> flush(std::stop_token token = {}) {
    while (pending() != 0) {
      auto n = co_await ipc::write_some(*m_stream, std::span<const std::byte>(m_buf).subspan(m_sent), token);
      if (!n) {
        co_return unexpected(n.error());
      }
      m_sent += *n;
    }
    m_buf.clear();
    m_sent = 0;
    co_return result<void>{};
  }

 private:
  Stream* m_stream;
  std::size_t m_capacity;
  std::vector<std::byte> m_buf;  // [m_sent, size) pending
  std::size_t m_sent = 0;
};

}  // namespace corio::ipc
