// The shared block of the shm_server / shm_client examples: two process-shared events
// and an array of uint64 (the Fibonacci numbers 1, 1, 2, 3, 5, 8 ..., modulo 2^64: from
// the 94th on they no longer fit 64 bits, and unsigned arithmetic wraps where signed
// overflow would be undefined), at fixed offsets of a named shared-memory object.
#pragma once

#include <unistd.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>

namespace shm_array {

constexpr std::size_t kFilledAt = 0;   ///< process_event: the server has filled the array
constexpr std::size_t kDoneAt = 64;    ///< process_event: the client has read it
constexpr std::size_t kCountAt = 128;  ///< std::uint64_t: how many numbers
constexpr std::size_t kArrayAt = 192;  ///< std::uint64_t[count]
constexpr std::size_t kMaxCount = 1000;
constexpr std::size_t kSize = kArrayAt + kMaxCount * sizeof(std::uint64_t);

/// The sibling program `name` in the directory of this executable.
inline std::string sibling(const char* name) {
  char self[PATH_MAX] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string dir = n > 0 ? std::string(self, static_cast<std::size_t>(n)) : std::string("./x");
  return dir.substr(0, dir.rfind('/') + 1) + name;
}

}  // namespace shm_array
