// Helpers shared by corio's tests.
#pragma once

#include <dirent.h>

#include <corio/runtime/config.hpp>

#include <cstddef>
#include <cstdio>
#include <string>

namespace corio_test {

/// A runtime configuration with `n` workers and the defaults otherwise.
inline corio::runtime_config workers(unsigned n) {
  corio::runtime_config c;
  c.workers = n;
  return c;
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
