// The orphan reaper: the thread that epolls adopted pidfds and reaps each child as it
// exits, and the fallback queue polled every 10 ms by a second thread. The design:
// detail/orphan_reaper.hpp.
#include <corio/ipc/process/detail/orphan_reaper.hpp>

#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <vector>
#include <cstdio>
#include <mutex>
#include <pthread.h>
#include <thread>

namespace corio::ipc::detail {

namespace {

int g_epoll = -1;
std::once_flag g_started;
// relaxed: a statistic for tests; the reaping itself is ordered by the epoll syscalls.
std::atomic<std::size_t> g_pending{0};

void adopt_fallback(int pidfd) noexcept;

void reaper_loop() noexcept {
  sigset_t all;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(g_epoll, events, 64, -1);
    if (n < 0) {
      continue;  // EINTR (every signal is blocked, but ptrace may still interrupt)
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      siginfo_t info{};
      int rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd), &info, WEXITED | WNOHANG);
      if (rc == 0 && info.si_pid == 0) {
        // Dead but not ours to reap yet: a tracer other than us has it (a traced child's
        // exit goes to its tracer first). The pidfd stays readable, so the level-triggered
        // set would report it again at once and this thread would spin until the tracer
        // let go; the fallback's 10 ms poll takes it over instead (still pending).
        ::epoll_ctl(g_epoll, EPOLL_CTL_DEL, fd, nullptr);
        adopt_fallback(fd);
        continue;
      }
      // Reaped, or ECHILD (someone else reaped it): either way it is done.
      // why: remove the registration explicitly before close(). A child being spawned
      // right now may hold a copy of this pidfd in its fd table (until its exec closes
      // it); the file then outlives our close(), and so would a registration left to
      // the implicit removal — reporting a stale fd number that may be reused.
      ::epoll_ctl(g_epoll, EPOLL_CTL_DEL, fd, nullptr);
      ::close(fd);
      g_pending.fetch_sub(1, std::memory_order_relaxed);
    }
  }
}

void start() {
  g_epoll = ::epoll_create1(EPOLL_CLOEXEC);
  if (g_epoll < 0) {
    std::perror("corio: orphan reaper: epoll_create1");
    return;
  }
  try {
    std::thread(reaper_loop).detach();
  } catch (...) {
    ::close(g_epoll);  // no thread to serve it: every adopt() takes the fallback
    g_epoll = -1;
  }
}

// The fallback, for a pidfd the epoll set refused (ENOMEM, ENOSPC at max_user_watches)
// or when epoll/the thread never started: a queue polled by its own thread with
// waitid(WNOHANG) every 10 ms. Never blocks the adopting thread, never kills (a child is
// SIGKILLed only by kill_on_drop, before adopt()).
// Both never destroyed: the fallback thread polls until the process exits, which runs the
// static destructors while the thread may still be in the queue (ThreadSanitizer saw the
// vector's destructor race with its swap at exit).
std::mutex& g_fallback_mu = *new std::mutex;
std::vector<int>& g_fallback = *new std::vector<int>;  // guarded by g_fallback_mu
bool g_fallback_running = false;  // guarded by g_fallback_mu

void fallback_loop() noexcept {
  sigset_t all;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
  for (;;) {
    std::vector<int> fds;
    {
      std::lock_guard lock(g_fallback_mu);
      fds.swap(g_fallback);
    }
    std::vector<int> left;
    for (int fd : fds) {
      siginfo_t info{};
      int rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd), &info, WEXITED | WNOHANG);
      if (rc == 0 && info.si_pid == 0) {
        left.push_back(fd);  // still running
        continue;
      }
      ::close(fd);
      g_pending.fetch_sub(1, std::memory_order_relaxed);
    }
    {
      std::lock_guard lock(g_fallback_mu);
      g_fallback.insert(g_fallback.end(), left.begin(), left.end());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void adopt_fallback(int pidfd) noexcept {
  std::lock_guard lock(g_fallback_mu);
  try {
    g_fallback.push_back(pidfd);
    if (!g_fallback_running) {
      std::thread(fallback_loop).detach();
      g_fallback_running = true;
    }
  } catch (...) {
    // No memory or no thread: the pidfd stays queued (if it was) and is reaped once a
    // later adopt() manages to start the thread; if not even queued, it is leaked open
    // (the child stays a zombie until we exit) rather than blocking this thread.
    std::fprintf(stderr, "corio: orphan reaper: cannot start the fallback thread\n");
  }
}

}  // namespace

void orphan_reaper_adopt(int pidfd) noexcept {
  if (pidfd < 0) {
    return;
  }
  try {
    std::call_once(g_started, start);
  } catch (...) {
    // std::thread could not start: the fallback below takes the child.
  }
  g_pending.fetch_add(1, std::memory_order_relaxed);
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: a pidfd stays readable after the exit
  ev.data.fd = pidfd;
  if (g_epoll < 0 || ::epoll_ctl(g_epoll, EPOLL_CTL_ADD, pidfd, &ev) != 0) {
    adopt_fallback(pidfd);  // non-blocking, and no kill the user did not ask for
  }
}

std::size_t orphan_reaper_pending() noexcept { return g_pending.load(std::memory_order_relaxed); }

}  // namespace corio::ipc::detail
