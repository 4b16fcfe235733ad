// Helpers shared by the process tests: a /proc scan for zombies and vanished pids (the
// runtime configs come from tests/support/helpers.hpp).
#pragma once

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace corio_test {

/// Reads /proc/<pid>/stat: state (field 3) and ppid (field 4). False if gone.
inline bool proc_state(pid_t pid, char& state, pid_t& ppid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) {
    return false;
  }
  char buf[512] = {};
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* close = std::strrchr(buf, ')');
  if (close == nullptr) {
    return false;
  }
  int pp = 0;
  if (std::sscanf(close + 2, "%c %d", &state, &pp) != 2) {
    return false;
  }
  ppid = pp;
  return true;
}

/// Our children in state 'Z' right now.
inline int zombie_children(bool report = false) {
  int zombies = 0;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) {
    return -1;
  }
  pid_t self = ::getpid();
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') {
      continue;
    }
    char state = 0;
    pid_t ppid = 0;
    if (proc_state(static_cast<pid_t>(pid), state, ppid) && ppid == self && state == 'Z') {
      ++zombies;
      if (report) {
        char path[64];
        char comm[64] = {};
        std::snprintf(path, sizeof path, "/proc/%ld/comm", pid);
        if (FILE* f = std::fopen(path, "r")) {
          std::size_t n = std::fread(comm, 1, sizeof comm - 1, f);
          comm[n] = '\0';
          std::fclose(f);
        }
        std::fprintf(stderr, "zombie child: pid %ld (%s)\n", pid, comm);
      }
    }
  }
  ::closedir(d);
  return zombies;
}

/// Waits up to `limit` for our zombies to be reaped; returns how many remain.
inline int zombies_after_settle(std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  int z = zombie_children();
  while (z != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    z = zombie_children();
  }
  if (z != 0) {
    zombie_children(true);
  }
  return z;
}

/// True once `pid` no longer exists at all (not even as a zombie): kill(pid, 0) is ESRCH.
inline bool pid_gone(pid_t pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

/// Waits up to `limit` for pid_gone(pid).
inline bool pid_gone_within(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pid_gone(pid)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

/// Reads a decimal pid from `path` (written by a child's `echo $$ > path`), waiting up to
/// 2 s for it to appear; -1 if it never does.
inline pid_t pid_from_file(const std::string& path) {
  for (int i = 0; i < 200; ++i) {
    if (FILE* f = std::fopen(path.c_str(), "r")) {
      long pid = -1;
      int got = std::fscanf(f, "%ld", &pid);
      std::fclose(f);
      if (got == 1 && pid > 0) {
        return static_cast<pid_t>(pid);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

}  // namespace corio_test
