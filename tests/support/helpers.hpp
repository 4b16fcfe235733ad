// Helpers shared by all of corio's tests (namespace corio_test): runtime configurations,
// descriptor and memory accounting, byte views of strings, temporary directories.
// Helpers of one layer's tests live next to them (tests/<layer>/*_helpers.hpp), in the
// same namespace, and build on these.
#pragma once

#include <dirent.h>
#include <sys/resource.h>

#include <corio/runtime/config.hpp>
#include <corio/runtime/runtime.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace corio_test {

/// A runtime configuration with `n` workers and the defaults otherwise.
inline corio::runtime_config workers(unsigned n) {
  corio::runtime_config c;
  c.workers = n;
  return c;
}

/// `n` workers and at most `blocking` spawn_blocking threads.
inline corio::runtime_config workers(unsigned n, unsigned blocking) {
  corio::runtime_config c = workers(n);
  c.max_blocking_threads = blocking;
  return c;
}

/// Raises the soft RLIMIT_NOFILE to `want` (up to the hard limit); false if it cannot.
inline bool raise_fd_limit(rlim_t want) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    return false;
  }
  if (rl.rlim_cur >= want) {
    return true;
  }
  rl.rlim_cur = std::min(want, rl.rlim_max);
  return ::setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= want;
}

/// Number of open file descriptors of this process.
inline std::size_t open_fd_count() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') {
        ++n;
      }
    }
    ::closedir(d);
  }
  return n - 1;  // the DIR's own fd
}

/// The open descriptor count once descriptors held for a moment by threads that outlive
/// the code under test (a detached helper between its open() and close()) are gone:
/// polls until it equals `expected` or `within` has passed, and returns the last count.
/// A real leak never goes back, so the check still fails for it.
inline std::size_t settled_fd_count(std::size_t expected,
                                    std::chrono::milliseconds within = std::chrono::milliseconds(10000)) {
  const auto until = std::chrono::steady_clock::now() + within;
  std::size_t n = open_fd_count();
  while (n != expected && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    n = open_fd_count();
  }
  return n;
}

/// Resident set size of this process in KiB.
inline long rss_kib() {
  long kib = -1;
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f)) {
      if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1) {
        break;
      }
    }
    std::fclose(f);
  }
  return kib;
}

/// The SQEs all of `rt`'s workers have submitted so far (runtime_metrics).
inline std::uint64_t sqes_submitted(const corio::runtime& rt) {
  std::uint64_t n = 0;
  for (const auto& w : rt.metrics().workers) {
    n += w.sqes_submitted;
  }
  return n;
}

/// Byte views of a string's or a vector's storage.
inline std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }
inline std::span<std::byte> wbytes(std::string& s) { return std::as_writable_bytes(std::span(s.data(), s.size())); }
inline std::span<std::byte> wbytes(std::vector<char>& v) { return std::as_writable_bytes(std::span(v)); }

/// A per-test temporary directory, removed (with its files) at the end; `path` is empty
/// if it could not be made.
struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/corio-test-XXXXXX";
    if (const char* made = ::mkdtemp(tmpl)) {
      path = made;
    }
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    if (!path.empty()) {
      std::string cmd = "rm -rf '" + path + "'";
      (void)std::system(cmd.c_str());
    }
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

}  // namespace corio_test
