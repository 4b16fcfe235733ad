// The length prefix of Python's multiprocessing.connection messages: encode and decode
// (ipc/frame.hpp).
#include <corio/ipc/frame.hpp>

namespace corio::ipc::frame {

namespace {

void put_be(std::byte* out, std::uint64_t v, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    out[n - 1 - i] = static_cast<std::byte>(v & 0xff);
    v >>= 8;
  }
}

std::uint64_t get_be(std::span<const std::byte> in) noexcept {
  std::uint64_t v = 0;
  for (std::byte b : in) {
    v = (v << 8) | std::to_integer<std::uint64_t>(b);
  }
  return v;
}

}  // namespace

header_bytes encode_header(std::uint64_t length) noexcept {
  header_bytes h;
  if (length > max_short_length) {
    put_be(h.bytes.data(), 0xffffffff, 4);
    put_be(h.bytes.data() + 4, length, 8);
    h.size = 12;
  } else {
    put_be(h.bytes.data(), length, 4);
    h.size = 4;
  }
  return h;
}

result<header> decode_header(std::span<const std::byte> bytes, std::uint64_t max_length) noexcept {
  if (bytes.size() < 4) {
    return header{};
  }
  auto prefix = static_cast<std::int32_t>(static_cast<std::uint32_t>(get_be(bytes.first(4))));
  std::uint64_t length = 0;
  std::size_t size = 4;
  if (prefix == -1) {
    if (bytes.size() < 12) {
      return header{};
    }
    length = get_be(bytes.subspan(4, 8));
    size = 12;
  } else if (prefix < 0) {
    return unexpected(make_error_code(errc::protocol_error));
  } else {
    length = static_cast<std::uint64_t>(prefix);
  }
  if (length > max_length) {
    return unexpected(make_error_code(errc::message_size));
  }
  return header{size, length};
}

}  // namespace corio::ipc::frame
