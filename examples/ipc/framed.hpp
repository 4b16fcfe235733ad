// Length-prefixed messages, as multiprocessing.connection does (a 4-byte big-endian length
// then the bytes): shared by the socket_server and socket_client examples.
#pragma once

#include <corio/corio.hpp>
#include <corio/ipc/tcp.hpp>

#include <cstdint>
#include <string>

namespace framed {

inline corio::task<corio::result<void>> send(const corio::ipc::tcp_stream& s, std::string msg) {
  auto n = static_cast<std::uint32_t>(msg.size());
  unsigned char header[4] = {static_cast<unsigned char>(n >> 24), static_cast<unsigned char>(n >> 16),
                             static_cast<unsigned char>(n >> 8), static_cast<unsigned char>(n)};
  iovec iov[2] = {{header, 4}, {msg.data(), msg.size()}};
  co_return co_await s.writev_all(iov);
}

/// A message, or an error: corio::errc::closed when the peer closed, std::errc::bad_message
/// for a length over 1 MiB (garbage).
inline corio::task<corio::result<std::string>> recv(const corio::ipc::tcp_stream& s) {
  unsigned char header[4];
  if (auto r = co_await s.read_exact(std::as_writable_bytes(std::span(header))); !r) {
    co_return corio::unexpected(r.error());
  }
  std::uint32_t n = (std::uint32_t{header[0]} << 24) | (header[1] << 16) | (header[2] << 8) | header[3];
  if (n > (1u << 20)) {
    co_return corio::unexpected(std::make_error_code(std::errc::bad_message));
  }
  std::string msg(n, '\0');
  if (auto r = co_await s.read_exact(std::as_writable_bytes(std::span(msg))); !r) {
    co_return corio::unexpected(r.error());
  }
  co_return msg;
}

}  // namespace framed
