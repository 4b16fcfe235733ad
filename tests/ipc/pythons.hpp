// Every Python 3 on the machine, for the tests that run Python's own
// multiprocessing.connection against corio (the project's rule: every Python 3 found,
// not only Debian's): /usr/bin/python3 always, the first python3 on PATH, then each version
// under pyenv's versions folder ($PYENV_ROOT, default ~/.pyenv), found at run time, >= 3.6,
// without duplicates (one interpreter reached by two paths counts once).
// pythons() looks once per test executable and prints what it found.
#pragma once

#include <dirent.h>
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

// Every Python >= 3.6 found now: Debian's, PATH's, then pyenv's, without duplicates.
inline std::vector<python> find_pythons() {
  std::vector<std::string> candidates{"/usr/bin/python3"};
  if (const char* path = std::getenv("PATH")) {
    std::string dirs = path;
    for (std::size_t at = 0; at <= dirs.size();) {
      std::size_t end = std::min(dirs.find(':', at), dirs.size());
      std::string candidate = (end > at ? dirs.substr(at, end - at) : std::string(".")) + "/python3";
      if (::access(candidate.c_str(), X_OK) == 0) {
        candidates.push_back(candidate);
        break;
      }
      at = end + 1;
    }
  }
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
  std::set<std::string> seen;  // the interpreters' own paths: a pyenv shim and its version are one
  for (auto& c : candidates) {
    if (::access(c.c_str(), X_OK) != 0) {
      continue;
    }
    std::string line = first_line_of(
        c, "import os, sys; print(\"%d.%d.%d\" % sys.version_info[:3] if sys.version_info >= (3, 6) else \"\", "
           "os.path.realpath(sys.executable))");
    std::size_t space = line.find(' ');
    if (space == 0 || space == std::string::npos || !seen.insert(line.substr(space + 1)).second) {
      continue;
    }
    found.push_back({c, line.substr(0, space)});
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
