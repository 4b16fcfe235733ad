// corio::ipc::fork_server and fork_raw (see fork.hpp for the design and its limits).
//
// Wire format of a request (one SOCK_SEQPACKET message, so never split or merged):
//   request_header { u64 entry; u32 nfds; u32 nargs; i32 death_signal; u32 0 } then
//   `nargs` argument bytes;
//   SCM_RIGHTS: [reply pipe write end, user fd 0, ..., user fd nfds-1].
// Reply (on the reply pipe): one i32, the new pid, or -errno if the clone failed.
#include <corio/ipc/process/fork.hpp>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <corio/ipc/process/detail/launch.hpp>
#include <corio/runtime/io.hpp>
#include <corio/runtime/io_op.hpp>
#include <corio/runtime/shield.hpp>

namespace corio::ipc {

namespace {

struct request_header {
  std::uint64_t entry;
  std::uint32_t nfds;
  std::uint32_t nargs;
  std::int32_t death_signal;  // PR_SET_PDEATHSIG for the new process (0: none)
  std::uint32_t reserved;
};

// The parent's end of the socketpair and the helper's pid. Written by start()/stop()
// while single-threaded (or at least not concurrently with fork_raw()); atomics so that
// a late reader on a worker is still well-defined. acquire/release: pair with each other.
std::atomic<int> g_sock{-1};
std::atomic<pid_t> g_helper{-1};

constexpr std::size_t cmsg_space = CMSG_SPACE(sizeof(int) * (1 + fork_server::max_fds));

/// In the new process: arms the parent-death signal, unless the parent already died
/// (then the process ends at once, by that signal, as it would have a moment later).
/// `parent` is the pid recorded before the clone: after CLONE_PARENT it is our parent
/// unless it died, when we were re-parented.
void arm_parent_death(int sig, pid_t parent) noexcept {
  if (sig == 0) {
    return;
  }
  ::prctl(PR_SET_PDEATHSIG, sig);
  if (::getppid() != parent) {
    ::kill(::getpid(), sig);  // (not raise(): glibc's cached thread id here is the helper's)
    ::_exit(128 + sig);
  }
}

/// In the new process: the signal state of a freshly exec'd program (see fork.hpp),
/// before the parent-death signal is armed, so that signal is never blocked or ignored.
void reset_signals() noexcept {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    (void)::sigaction(sig, &dfl, nullptr);  // EINVAL for SIGKILL, SIGSTOP and glibc's own: fine
  }
  sigset_t none;
  ::sigemptyset(&none);
  (void)::sigprocmask(SIG_SETMASK, &none, nullptr);
}

[[noreturn]] void run_child(int sock, int reply, const request_header& h, const std::byte* args, const int* fds,
                            pid_t parent) {
  ::close(sock);
  ::close(reply);
  reset_signals();
  arm_parent_death(h.death_signal, parent);
  auto entry = reinterpret_cast<fork_entry>(static_cast<std::uintptr_t>(h.entry));
  int code = 0;
  try {
    code = entry(std::span<const std::byte>(args, h.nargs), std::span<const int>(fds, h.nfds));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "corio::ipc::fork: the child's callable threw: %s\n", e.what());
    code = 70;  // EX_SOFTWARE
  } catch (...) {
    std::fprintf(stderr, "corio::ipc::fork: the child's callable threw\n");
    code = 70;
  }
  std::fflush(nullptr);
  ::_exit(code & 0xff);
}

/// The helper: answers requests until the parent closes the socket.
[[noreturn]] void serve(int sock, pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) {
    ::_exit(0);  // the parent died before the prctl
  }
  static std::byte buffer[sizeof(request_header) + fork_server::max_args];
  alignas(cmsghdr) static char control[cmsg_space];
  for (;;) {
    iovec iov{buffer, sizeof buffer};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n == 0) {
      ::_exit(0);
    }
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      ::_exit(1);
    }
    int fds[1 + fork_server::max_fds];
    std::size_t nfds = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        std::memcpy(fds, CMSG_DATA(c), nfds * sizeof(int));
      }
    }
    request_header h{};
    std::memcpy(&h, buffer, sizeof h);
    if (nfds == 0 || static_cast<std::size_t>(n) != sizeof h + h.nargs || h.nfds + 1 != nfds) {
      for (std::size_t i = 0; i < nfds; ++i) {
        ::close(fds[i]);  // malformed: dropping the reply pipe tells the sender
      }
      continue;
    }
    // why: CLONE_PARENT makes the new process the parent's child (it can waitid/pidfd it);
    // a raw clone, not fork(), since glibc's fork cannot pass CLONE_PARENT.
    long pid = ::syscall(SYS_clone, CLONE_PARENT | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
    if (pid == 0) {
      run_child(sock, fds[0], h, buffer + sizeof h, fds + 1, parent);
    }
    std::int32_t reply = pid > 0 ? static_cast<std::int32_t>(pid) : -errno;
    (void)::write(fds[0], &reply, sizeof reply);
    for (std::size_t i = 0; i < nfds; ++i) {
      ::close(fds[i]);
    }
  }
}

}  // namespace

result<void> fork_server::start() noexcept {
  if (g_sock.load(std::memory_order_acquire) >= 0) {
    return {};
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return unexpected(os_error(-errno));
  }
  pid_t parent = ::getpid();
  std::fflush(nullptr);  // do not let the helper's children flush our buffered output twice
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    return unexpected(os_error(-err));
  }
  if (pid == 0) {
    ::close(sv[0]);
    serve(sv[1], parent);
  }
  ::close(sv[1]);
  g_helper.store(pid, std::memory_order_release);
  g_sock.store(sv[0], std::memory_order_release);  // release: publishes g_helper too
  return {};
}

void fork_server::stop() noexcept {
  int sock = g_sock.exchange(-1, std::memory_order_acq_rel);
  if (sock < 0) {
    return;
  }
  ::close(sock);
  pid_t helper = g_helper.exchange(-1, std::memory_order_acq_rel);
  // Again after EINTR (a signal whose handler lacks SA_RESTART): else the helper would
  // stay a zombie.
  while (::waitpid(helper, nullptr, 0) < 0 && errno == EINTR) {
  }
}

bool fork_server::running() noexcept { return g_sock.load(std::memory_order_acquire) >= 0; }

namespace {

/// Sends the request and reads the helper's reply (awaited shielded: see fork_raw).
task<result<void>> request_reply(int sock, msghdr* mp, detail::process_fd* reply_read,
                                 detail::process_fd* reply_write, std::int32_t* reply) {
  // MSG_NOSIGNAL: a dead helper is EPIPE here, never a SIGPIPE (even on a thread that
  // does not block it).
  auto sent =
      co_await io_op([sock, mp](io_uring_sqe* sqe) { io_uring_prep_sendmsg(sqe, sock, mp, MSG_NOSIGNAL); });
  reply_write->close();  // the helper holds its own copy; EOF if it drops the request
  if (!sent) {
    co_return unexpected(sent.error() == std::errc::broken_pipe || sent.error() == std::errc::connection_reset
                             ? std::make_error_code(std::errc::not_connected)
                             : sent.error());
  }
  auto got = co_await io::read(reply_read->get(), std::as_writable_bytes(std::span(reply, 1)));
  if (!got) {
    co_return unexpected(got.error());
  }
  if (*got != sizeof *reply) {
    co_return unexpected(std::make_error_code(std::errc::not_connected));
  }
  co_return result<void>{};
}

// A request the helper would refuse: too many bytes or fds, or a bad signal number.
std::error_code check_request(const std::vector<std::byte>& args, const std::vector<int>& fds,
                              const fork_options& options) noexcept {
  if (args.size() > fork_server::max_args || fds.size() > fork_server::max_fds) {
    return std::make_error_code(std::errc::message_size);
  }
  if (options.parent_death_signal < 0 || options.parent_death_signal >= NSIG) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  return {};
}

// The helper's reply (a pid, or -errno): the child, its pidfd opened; a child whose pidfd
// cannot be opened is killed and reaped.
result<child> adopt_reply(std::int32_t reply) {
  if (reply < 0) {
    return unexpected(os_error(reply));
  }
  return detail::adopt_pid(reply, false);
}

}  // namespace

task<result<child>> fork_raw(fork_entry entry, std::vector<std::byte> args, std::vector<int> fds,
                             fork_options options) {
  int sock = g_sock.load(std::memory_order_acquire);
  if (sock < 0) {
    co_return unexpected(std::make_error_code(std::errc::not_connected));
  }
  if (auto bad = check_request(args, fds, options)) {
    co_return unexpected(bad);
  }
  int reply_pipe[2];
  if (::pipe2(reply_pipe, O_CLOEXEC) != 0) {
    co_return unexpected(os_error(-errno));
  }
  detail::process_fd reply_read(reply_pipe[0]);
  detail::process_fd reply_write(reply_pipe[1]);

  request_header h{reinterpret_cast<std::uint64_t>(entry), static_cast<std::uint32_t>(fds.size()),
                   static_cast<std::uint32_t>(args.size()), options.parent_death_signal, 0};
  iovec iov[2] = {{&h, sizeof h}, {args.data(), args.size()}};
  alignas(cmsghdr) char control[cmsg_space] = {};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * (1 + fds.size()));
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * (1 + fds.size()));
  int passed[1 + fork_server::max_fds];
  passed[0] = reply_write.get();
  std::copy(fds.begin(), fds.end(), passed + 1);
  std::memcpy(CMSG_DATA(c), passed, sizeof(int) * (1 + fds.size()));

  // Cancellation is honoured only before the request is sent. Once it may have been
  // sent, the helper may clone: the send and the reply are awaited without any token
  // (shield), so that a child that was created is always taken (its pidfd opened) and
  // returned. A caller that drops it (when_any's loser) hands it to the orphan reaper.
  if (std::stop_token stop = co_await get_stop_token(); stop.stop_requested()) {
    co_return unexpected(cancelled_error());
  }
  std::int32_t reply = 0;
  auto exchanged = co_await corio::shield(request_reply(sock, &msg, &reply_read, &reply_write, &reply));
  if (!exchanged) {
    co_return unexpected(exchanged.error());
  }
  co_return adopt_reply(reply);
}

}  // namespace corio::ipc
