// Helpers for the tests of corio's process-shared primitives and shm_queue: forked
// children that are always reaped (and killed if a test fails early), shared flags to
// step them, unique shared-memory names, a private small /dev/shm for a forked child.
//
// Children are plain fork()s of the test process, taken while no runtime runs in it; a
// child may build its own runtime. ThreadSanitizer refuses thread creation after a fork
// of a multithreaded process by default (the per-process sentinel thread of
// process_mutex makes this one multithreaded); the option below allows it — at that
// fork no thread of ours holds a lock (the sentinel only sleeps). Each test executable
// that forks defines it once: CORIO_SHM_TEST_TSAN_OPTIONS.
#pragma once

#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <string>
#include <thread>

#include <corio/ipc/detail/shared_word.hpp>
#include <corio/ipc/memory_map.hpp>
#include <corio/ipc/shared_memory.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

#define CORIO_SHM_TEST_TSAN_OPTIONS                                                                 \
  extern "C" __attribute__((visibility("default"), used)) const char* __tsan_default_options() { \
    return "die_after_fork=0";                                                                   \
  }

namespace corio_test {

/// A unique shared-memory name, removed before and after the test.
struct scoped_name {
  std::string name;
  explicit scoped_name(const char* tag) : name("/corio-test-" + std::to_string(::getpid()) + "-" + tag) {
    (void)corio::ipc::shared_memory::remove(name);
  }
  ~scoped_name() { (void)corio::ipc::shared_memory::remove(name); }
};

/// A forked child running `fn` (its return value is the exit code). The destructor
/// kills (SIGKILL) and reaps a child still running, so a failing test leaves no process.
class child {
 public:
  template <class F>
  explicit child(F fn) {
    m_pid = ::fork();
    if (m_pid == 0) {
      ::_exit(fn());
    }
  }
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() {
    if (m_pid > 0 && !m_reaped) {
      ::kill(m_pid, SIGKILL);
      wait_status();
    }
  }
  [[nodiscard]] bool started() const noexcept { return m_pid > 0; }
  [[nodiscard]] pid_t pid() const noexcept { return m_pid; }
  /// Waits for the exit; the exit code, or 128 + signal.
  int wait_status() {
    if (m_reaped || m_pid <= 0) {
      return m_reaped ? m_status : -1;  // reaped, or never started (no pid to wait for)
    }
    int status = 0;
    while (::waitpid(m_pid, &status, 0) < 0) {
    }
    m_reaped = true;
    m_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return m_status;
  }
  /// kill -9 and reap; returns 128 + SIGKILL if it was still running.
  int kill9() {
    if (m_pid > 0) {  // never kill(-1): that is every process we may signal
      ::kill(m_pid, SIGKILL);
    }
    return wait_status();
  }

 private:
  pid_t m_pid = -1;
  bool m_reaped = false;
  int m_status = -1;
};

/// A flag in shared memory, set by one process, awaited by another (polling with short
/// sleeps: for stepping test processes only). Gives up after `limit` so that a broken
/// protocol fails the test instead of hanging it.
inline bool wait_for(const std::atomic<std::uint32_t>& flag, std::uint32_t value,
                     std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (flag.load(std::memory_order_acquire) != value) {
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

/// Whether process `pid` is asleep (state 'S' in /proc/<pid>/stat) — used to know that
/// a child reached its futex wait before the test acts on it. Polls like wait_for.
inline bool wait_until_sleeping(pid_t pid, std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  for (;;) {
    if (FILE* f = std::fopen(path.c_str(), "r")) {
      char buf[512] = {};
      std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      std::fclose(f);
      std::string s(buf, n);
      auto close = s.rfind(')');
      if (close != std::string::npos && close + 2 < s.size() && s[close + 2] == 'S') {
        return true;
      }
    }
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

/// Waits (from a task) until `pred` holds; the 60 s bound only turns a broken protocol
/// into a failure instead of a hang.
template <class Pred>
corio::task<bool> eventually(Pred pred) {
  const auto end = corio::clock::now() + std::chrono::seconds(60);
  while (!pred()) {
    if (corio::clock::now() > end) {
      co_return false;
    }
    (void)co_await corio::sleep_for(std::chrono::microseconds(200));
  }
  co_return true;
}

/// How many waits sleep on `word` in the kernel right now, from any process: an io_uring
/// FUTEX_WAIT and a thread's futex(2) alike (both queue on the word's shared futex key).
/// Counted by a FUTEX_CMP_REQUEUE of the word onto itself that wakes none: the kernel
/// returns how many it requeued, and requeuing onto the same key moves nobody. -errno if
/// the kernel refuses it.
inline int sleepers_on(const corio::ipc::detail::shared_word& word) {
  auto* address = const_cast<corio::ipc::detail::shared_word*>(&word);
  for (;;) {
    const std::uint32_t now = word.load();
    const long n = ::syscall(SYS_futex, address, FUTEX_CMP_REQUEUE, 0, reinterpret_cast<void*>(std::uintptr_t{INT_MAX}),
                             address, now);
    if (n >= 0) {
      return static_cast<int>(n);
    }
    if (errno != EAGAIN) {  // EAGAIN: the word changed between the load and the call
      return -errno;
    }
  }
}

/// One page of anonymous shared memory (inherited by forked children): primitives at its
/// start, counters from byte 2048, stepping flags from byte 3072 (each on a line of its own).
struct shared_page {
  corio::ipc::memory_map map = *corio::ipc::memory_map::anonymous(4096);
  std::span<std::byte> bytes() { return map.bytes(); }
  std::atomic<std::uint32_t>& flag(int i) {
    return *std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(map.data() + 3072 + 64 * i));
  }
  std::atomic<std::int64_t>& counter(int i) {
    return *std::launder(reinterpret_cast<std::atomic<std::int64_t>*>(map.data() + 2048 + 64 * i));
  }
  /// The state of a primitive built at `offset`, as the kernel and the tests see it.
  template <class State>
  State& state_at(std::size_t offset) {
    return *std::launder(reinterpret_cast<State*>(map.data() + offset));
  }
};

/// Exit status of a child that could not make its own small /dev/shm (no CAP_SYS_ADMIN
/// and no user namespace, or a container that forbids mounts): the test is skipped with
/// a warning (the child says why on stderr).
inline constexpr int no_private_dev_shm = 77;

/// Writes `text` to the file `path` (a /proc file of this process): false on failure.
inline bool write_proc_file(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    return false;
  }
  const bool ok = std::fputs(text.c_str(), f) >= 0;
  return std::fclose(f) == 0 && ok;
}

/// private_dev_shm()'s work: false (errno set) where it is not allowed.
inline bool make_private_dev_shm(const char* size) {
  if (::unshare(CLONE_NEWNS) != 0) {
    const std::string uid = std::to_string(::getuid());
    const std::string gid = std::to_string(::getgid());
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0 || !write_proc_file("/proc/self/setgroups", "deny") ||
        !write_proc_file("/proc/self/uid_map", "0 " + uid + " 1") ||
        !write_proc_file("/proc/self/gid_map", "0 " + gid + " 1")) {
      return false;
    }
  }
  const std::string options = std::string("size=") + size;
  return ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&  // nothing leaks out
         ::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) == 0;
}

/// In a forked child only (it must be single-threaded: under TSan a child may have the
/// sanitizer's thread, and then the user namespace is refused): gives this process a
/// mount namespace of its own whose /dev/shm is a new tmpfs of `size` (e.g. "1m"), so
/// that a test can fill it without touching the machine's. Without CAP_SYS_ADMIN it
/// enters a user namespace first (mapping its own uid and gid to root there), where tmpfs
/// may be mounted. Returns false where neither is allowed, saying why on stderr.
inline bool private_dev_shm(const char* size) {
  const bool made = make_private_dev_shm(size);
  if (!made) {
    std::fprintf(stderr, "a private /dev/shm could not be made: %s\n", std::strerror(errno));
  }
  return made;
}

}  // namespace corio_test
