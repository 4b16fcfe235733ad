// corio::ipc::frame: the length prefix of Python's multiprocessing.connection messages.
//
// Concept: on a byte stream, every message is a length prefix followed by that many bytes.
// The prefix is a 4-byte big-endian signed integer; a message of 2 GiB or more (length >
// 0x7fffffff) is prefixed with -1 (ff ff ff ff) followed by an 8-byte big-endian unsigned
// length. Python writes the 12-byte form only for such lengths but reads it for any length,
// and so does decode_header. A negative 4-byte prefix other than -1 is malformed (Python
// would read it as an empty message; corio refuses it as errc::protocol_error).
// These are pure functions on bytes (no I/O, no allocation), used by ipc::connection and
// fuzzed on their own.
// Thread-safety: pure functions. Cost: a few byte operations.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include <corio/runtime/result.hpp>

namespace corio::ipc::frame {

/// The longest prefix: -1 and an 8-byte length.
inline constexpr std::size_t max_header_size = 12;
/// The longest length the 4-byte prefix carries.
inline constexpr std::uint64_t max_short_length = 0x7fffffff;

/// An encoded prefix: bytes[0, size) go on the wire before the message.
struct header_bytes {
  std::array<std::byte, max_header_size> bytes{};  ///< the prefix, in its first `size` bytes
  std::size_t size = 0;                            ///< 4, or 12 for the long form
  /// The prefix as a span of `size` bytes.
  [[nodiscard]] std::span<const std::byte> view() const noexcept { return std::span(bytes).first(size); }
};

/// The prefix of a message of `length` bytes, exactly as Python writes it.
[[nodiscard]] header_bytes encode_header(std::uint64_t length) noexcept;

/// A decoded prefix: the message that follows is `length` bytes; the prefix itself took
/// `header_size` bytes (4 or 12). header_size == 0 means more bytes are needed.
struct header {
  std::size_t header_size = 0;  ///< bytes the prefix took (4 or 12); 0: more bytes needed
  std::uint64_t length = 0;     ///< bytes of the message that follows the prefix
  /// The whole prefix was there (header_size != 0).
  [[nodiscard]] bool complete() const noexcept { return header_size != 0; }
};

/// Decodes the prefix at the start of `bytes` (which may hold less than a prefix, or the
/// message and more after it). Errors: errc::protocol_error for a negative 4-byte prefix
/// other than -1; errc::message_size for a length above `max_length` (checked as soon as
/// the length is known, before anything is allocated for the message).
[[nodiscard]] result<header> decode_header(std::span<const std::byte> bytes, std::uint64_t max_length) noexcept;

}  // namespace corio::ipc::frame
