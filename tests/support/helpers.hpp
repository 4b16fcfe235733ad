// Helpers shared by corio's tests.
#pragma once

#include <dirent.h>
#include <sys/resource.h>

#include <corio/runtime/config.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <string>
#include <thread>

namespace corio_test {

/// A runtime configuration with `n` workers and the defaults otherwise.
inline corio::runtime_config workers(unsigned n) {
  corio::runtime_config c;
  c.workers = n;
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

}  // namespace corio_test
