// Every Python 3 on the machine, for the tests that run Python's own
// multiprocessing.connection against corio (the project's rule: every Python 3 found,
// not only Debian's): /usr/bin/python3 always, then each version under pyenv's versions
// folder ($PYENV_ROOT, default ~/.pyenv), found at run time, >= 3.6, without duplicates.
// pythons() looks once per test executable and prints what it found.
#pragma once

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

namespace corio_test {

// Runs `python -c code` synchronously (outside the runtime) and returns its first line.
inline std::string first_line_of(const std::string& python, const std::string& code) {
  std::string cmd = "'" + python + "' -c '" + code + "' 2>/dev/null";
  std::string out;
  if (FILE* f = ::popen(cmd.c_str(), "r")) {
    char buf[256];
    if (std::fgets(buf, sizeof buf, f) != nullptr) {
      out = buf;
    }
    ::pclose(f);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) {
    out.pop_back();
  }
  return out;
}

struct python {
  std::string path;
  std::string version;  // "3.11.2"
};

// Every Python >= 3.6 found now: Debian's, then pyenv's, without duplicates.
inline std::vector<python> find_pythons() {
  std::vector<std::string> candidates{"/usr/bin/python3"};
  std::string root;
  if (const char* r = std::getenv("PYENV_ROOT")) {
    root = r;
  } else if (const char* home = std::getenv("HOME")) {
    root = std::string(home) + "/.pyenv";
  }
  if (!root.empty()) {
    std::vector<std::string> names;
    if (DIR* d = ::opendir((root + "/versions").c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] != '.') {
          names.emplace_back(e->d_name);
        }
      }
      ::closedir(d);
    }
    std::sort(names.begin(), names.end());
    for (auto& n : names) {
      candidates.push_back(root + "/versions/" + n + "/bin/python3");
    }
  }
  std::vector<python> found;
  std::set<std::string> seen;
  for (auto& c : candidates) {
    char real[PATH_MAX];
    if (::access(c.c_str(), X_OK) != 0 || ::realpath(c.c_str(), real) == nullptr || !seen.insert(real).second) {
      continue;
    }
    std::string v = first_line_of(c, "import sys; print(\"%d.%d.%d\" % sys.version_info[:3] if sys.version_info >= (3, 6) else \"\")");
    if (!v.empty()) {
      found.push_back({c, v});
    }
  }
  return found;
}

inline const std::vector<python>& pythons() {
  static const std::vector<python> all = [] {
    auto p = find_pythons();
    std::printf("python interop: testing");
    for (auto& x : p) {
      std::printf(" %s (%s)", x.version.c_str(), x.path.c_str());
    }
    std::printf("\n");
    return p;
  }();
  return all;
}

}  // namespace corio_test
