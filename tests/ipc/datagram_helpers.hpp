// Scaffolding shared by the datagram socket tests (udp_test, unix_test): the outcome of a
// connected recv in words, so that a case compares one string.
#pragma once

#include <corio/ipc/socket.hpp>
#include <corio/runtime/result.hpp>

#include <string>

namespace corio_test {

/// A connected recv's outcome in words: the bytes stored and whether the datagram was cut,
/// or the error.
inline std::string described(const corio::result<corio::ipc::datagram>& d, const std::string& buf) {
  if (!d) {
    return d.error().message();
  }
  std::string out = "'";
  out.append(buf, 0, d->size);
  out += d->truncated ? "' truncated" : "' whole";
  return out;
}

}  // namespace corio_test
