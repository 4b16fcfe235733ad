// corio::ipc byte streams: the one generic layer over every stream that reads or writes
// bytes (tcp_stream, unix_stream, pipe_reader/pipe_writer, child_output/child_stdin, or
// a type of yours), and read_exact / write_all for any of them.
//
// Concept: a `readable_stream` has `read_some(std::span<std::byte>, std::stop_token)` (or,
// like child_output, `read(...)`) whose co_await yields result<std::size_t>, 0 meaning end
// of stream; a `writable_stream` has `write_some(std::span<const std::byte>,
// std::stop_token)` (or `write(...)`, like child_stdin) yielding the bytes accepted.
// ipc::read_some / ipc::write_some call whichever the stream has; ipc::read_exact and
// ipc::write_all loop over them. buffered_reader and buffered_writer
// (ipc/buffered_reader.hpp, ipc/buffered_writer.hpp) are built on the same concepts.
// Thread-safety: as the stream's (one reader and one writer at a time).
// Cost: read_exact / write_all are one task frame (recycled by the frame allocator)
// around the stream's single-SQE operations; read_some / write_some add nothing.
// Cancellation: every call takes a std::stop_token and honours the inherited one
// (std::errc::operation_canceled). A cancelled read_exact or write_all may have moved
// a prefix of the buffer: the stream position is then unknown (close the stream, or use a
// buffered_reader, whose cancelled reads lose nothing).
// Errors: the stream's (OS errors as std::system_category codes); read_exact returns
// corio::errc::closed when the stream ends first (the bytes read so far are in buf).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cstddef>
#include <span>
#include <stop_token>
#include <utility>

#include <corio/ipc/detail/exact_io.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

namespace detail {
template <class S>
concept has_read_some = requires(S& s, std::span<std::byte> b, std::stop_token t) { s.read_some(b, t); };
template <class S>
concept has_read = requires(S& s, std::span<std::byte> b, std::stop_token t) { s.read(b, t); };
template <class S>
concept has_write_some = requires(S& s, std::span<const std::byte> b, std::stop_token t) { s.write_some(b, t); };
template <class S>
concept has_write = requires(S& s, std::span<const std::byte> b, std::stop_token t) { s.write(b, t); };
}  // namespace detail

/// A stream with read_some(buf, token) or read(buf, token) yielding result<std::size_t>.
template <class S>
concept readable_stream = detail::has_read_some<S> || detail::has_read<S>;

/// A stream with write_some(buf, token) or write(buf, token) yielding result<std::size_t>.
template <class S>
concept writable_stream = detail::has_write_some<S> || detail::has_write<S>;

/// One read of up to buf.size() bytes from `s` (its read_some, else its read).
template <readable_stream S>
[[nodiscard]] auto read_some(S& s, std::span<std::byte> buf, std::stop_token token = {}) {
  if constexpr (detail::has_read_some<S>) {
    return s.read_some(buf, std::move(token));
  } else {
    return s.read(buf, std::move(token));
  }
}

/// One write of up to buf.size() bytes to `s` (its write_some, else its write).
template <writable_stream S>
[[nodiscard]] auto write_some(S& s, std::span<const std::byte> buf, std::stop_token token = {}) {
  if constexpr (detail::has_write_some<S>) {
    return s.write_some(buf, std::move(token));
  } else {
    return s.write(buf, std::move(token));
  }
}

namespace detail {
/// Gives any readable/writable stream the const read_some/write_some that the loops of
/// exact_io.hpp call.
template <class S>
struct some_io {
  S* stream;
  auto read_some(std::span<std::byte> buf, std::stop_token token) const {
    return ipc::read_some(*stream, buf, std::move(token));
  }
  auto write_some(std::span<const std::byte> buf, std::stop_token token) const {
    return ipc::write_some(*stream, buf, std::move(token));
  }
};

template <class S>
task<result<void>> read_exact_any(S& s, std::span<std::byte> buf, std::stop_token token) {
  co_return co_await read_exact_loop(some_io<S>{&s}, buf, std::move(token));
}
template <class S>
task<result<void>> write_all_any(S& s, std::span<const std::byte> buf, std::stop_token token) {
  co_return co_await write_all_loop(some_io<S>{&s}, buf, std::move(token));
}
}  // namespace detail

/// Reads exactly buf.size() bytes from `s`; corio::errc::closed if the stream ends first.
/// `s` and `buf` must outlive the await.
template <readable_stream S>
[[nodiscard]] task<result<void>> read_exact(S& s, std::span<std::byte> buf, std::stop_token token = {}) {
  return detail::read_exact_any(s, buf, std::move(token));
}

/// Writes all of buf to `s` (several writes when the stream takes less at a time).
/// `s` and `buf` must outlive the await.
template <writable_stream S>
[[nodiscard]] task<result<void>> write_all(S& s, std::span<const std::byte> buf, std::stop_token token = {}) {
  return detail::write_all_any(s, buf, std::move(token));
}

}  // namespace corio::ipc
