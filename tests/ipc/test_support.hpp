// Helpers shared by the ipc tests.
#pragma once

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ipc_test {

inline corio::runtime_config workers(unsigned n) {
  corio::runtime_config c;
  c.workers = n;
  return c;
}

/// The SQEs all of `rt`'s workers have submitted so far (runtime_metrics).
inline std::uint64_t sqes_submitted(const corio::runtime& rt) {
  std::uint64_t n = 0;
  for (const auto& w : rt.metrics().workers) {
    n += w.sqes_submitted;
  }
  return n;
}

inline std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }
inline std::span<std::byte> wbytes(std::string& s) { return std::as_writable_bytes(std::span(s.data(), s.size())); }
inline std::span<std::byte> wbytes(std::vector<char>& v) { return std::as_writable_bytes(std::span(v)); }

/// A per-test temporary directory, removed (with its files) at the end.
struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/corio-ipc-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() {
    std::string cmd = "rm -rf '" + path + "'";
    (void)std::system(cmd.c_str());
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

}  // namespace ipc_test
