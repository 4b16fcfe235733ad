// corio::ipc::fork_server and fork_raw (see fork.hpp for the design and its limits).
//
// Wire format of a request (one SOCK_SEQPACKET message, so never split or merged):
//   request_header { u64 entry; u32 nfds; u32 nargs; i32 death_signal; u32 0 } then
//   `nargs` argument bytes;
//   SCM_RIGHTS: [reply pipe write end, user fd 0, ..., user fd nfds-1].
// Reply (on the reply pipe): one i32, the new pid, or -errno if the clone failed. The pid
// is written twice, by the helper after the clone and by the new process itself before
// anything else, so that it reaches us if either dies or stops first (a helper killed
// right after the clone, a child killed or stopped before its write); we read the first
// four bytes (each write is atomic on a pipe) and the second copy goes with the pipe.
//
// No child is lost: once a request may have reached the helper, its reply is owed to the
// parent. fork_raw reads it; if fork_raw's frame ends first (its runtime destroyed while
// it awaits the reply), the reply pipe's read end goes to a detached thread that reads it
// and drops the child to the orphan reaper (take_reply_later).
#include <corio/ipc/process/fork.hpp>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poll.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>

#include <corio/ipc/process/detail/launch.hpp>
#include <corio/ipc/process/detail/test_hooks.hpp>
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

// Test hooks (detail::set_fork_test_hooks, declared in detail/test_hooks.hpp). relaxed:
// set before fork_server::start() and read only in the helper and its new processes,
// which got them as copies of our memory when start() forked the helper; nothing is
// published with them.
std::atomic<void (*)(pid_t)> g_hook_after_clone{nullptr};
std::atomic<void (*)(pid_t)> g_hook_before_reply{nullptr};

void run_hook(const std::atomic<void (*)(pid_t)>& hook, pid_t pid) noexcept {
  if (auto f = hook.load(std::memory_order_relaxed)) {
    f(pid);
  }
}

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

/// Writes the reply (a pid or -errno) to the reply pipe: 0, or the write's errno. A
/// reader that is gone (the parent died, or already read the other copy and closed its
/// end) is EPIPE; the SIGPIPE it raises is the caller's to deal with (the helper ignores
/// it; the new process takes it back, see report_pid).
int write_reply(int reply, std::int32_t value) noexcept {
  for (;;) {
    if (::write(reply, &value, sizeof value) >= 0) {
      return 0;
    }
    if (errno != EINTR) {
      return errno;
    }
  }
}

/// In the new process: tells the parent our pid (the reply), first thing. Every signal
/// is blocked here (the helper blocks them across the clone) until reset_signals()
/// unblocks them with their default actions: a signal sent to us meanwhile waits for that.
/// Our own write's SIGPIPE (the parent has usually read the helper's copy and closed the
/// pipe) would wait too and then kill us: after an EPIPE it is taken back from the
/// pending set. (A SIGPIPE someone else sent us before that write merges with ours and is
/// taken back with it: standard signals do not queue.)
void report_pid(int reply) noexcept {
  const pid_t self = ::getpid();
  run_hook(g_hook_before_reply, self);
  if (write_reply(reply, static_cast<std::int32_t>(self)) == EPIPE) {
    sigset_t pipe_signal;
    ::sigemptyset(&pipe_signal);
    ::sigaddset(&pipe_signal, SIGPIPE);
    const timespec now{0, 0};
    (void)::sigtimedwait(&pipe_signal, nullptr, &now);
  }
  ::close(reply);
}

[[noreturn]] void run_child(int sock, int reply, const request_header& h, const std::byte* args, const int* fds,
                            pid_t parent) {
  ::close(sock);
  report_pid(reply);
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

/// In the helper: makes the new process for request `h` (fds[0]: the reply pipe, then the
/// user's fds) and writes its pid, or the clone's -errno, to the reply pipe.
void clone_and_reply(int sock, const int* fds, const request_header& h, const std::byte* args, pid_t parent) {
  // why: CLONE_PARENT makes the new process the parent's child (it can waitid/pidfd it);
  // a raw clone, not fork(), since glibc's fork cannot pass CLONE_PARENT.
  // Every signal blocked across the clone: the pid reaches the parent (from us) before
  // the child has reset its signals, and a signal sent to it at once must wait for that
  // reset, not meet our dispositions (SIGPIPE ignored, or SIGINT under a shell's
  // background job); reset_signals() unblocks it with the default action in place.
  sigset_t all;
  sigset_t ours;
  ::sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, &ours);
  long pid = ::syscall(SYS_clone, CLONE_PARENT | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  const int clone_errno = errno;
  if (pid == 0) {
    run_child(sock, fds[0], h, args, fds + 1, parent);
  }
  ::sigprocmask(SIG_SETMASK, &ours, nullptr);
  const std::int32_t reply = pid > 0 ? static_cast<std::int32_t>(pid) : -clone_errno;
  if (pid > 0) {
    run_hook(g_hook_after_clone, static_cast<pid_t>(pid));
  }
  (void)write_reply(fds[0], reply);  // (the new process writes its pid too)
}

/// The helper: answers requests until the parent closes the socket.
[[noreturn]] void serve(int sock, pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::signal(SIGPIPE, SIG_IGN);  // a reply nobody reads any more is EPIPE, not our death
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
    clone_and_reply(sock, fds, h, buffer + sizeof h, parent);
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

// Qualified, so that a definition that does not match its declaration
// (detail/test_hooks.hpp) is an error rather than an overload of its own.
void detail::set_fork_test_hooks(void (*after_clone)(pid_t), void (*before_reply)(pid_t)) noexcept {
  g_hook_after_clone.store(after_clone, std::memory_order_relaxed);
  g_hook_before_reply.store(before_reply, std::memory_order_relaxed);
}

namespace {

/// Reads the reply on `fd` (blocking) and closes it; a child it names is adopted and
/// dropped at once: ~child hands it to the orphan reaper (not killed, reaped at its exit).
void adopt_owed_reply(int fd) noexcept {
  std::int32_t reply = 0;
  ssize_t n = 0;
  while ((n = ::read(fd, &reply, sizeof reply)) < 0 && errno == EINTR) {
  }
  ::close(fd);
  if (n == static_cast<ssize_t>(sizeof reply) && reply > 0) {
    (void)detail::adopt_pid(reply, false);
  }
}

/// A reply owed to a fork_raw that ended before reading it: taken here if it is already
/// there (or EOF: no child), else by a detached thread that waits for it (the helper and
/// the new process each write it; EOF only if both end without writing), so that the
/// thread that ended fork_raw (a runtime's destructor) never waits for the helper. No
/// thread to spare: waited for here.
void take_reply_later(int fd) noexcept {
  pollfd ready{fd, POLLIN, 0};
  if (::poll(&ready, 1, 0) > 0) {  // (an error, EINTR say, reads as "not yet")
    adopt_owed_reply(fd);
    return;
  }
  // The thread starts with every signal blocked (a signal for the program must not land
  // on it); it inherits the mask, so there is no window before it could block them itself.
  sigset_t all;
  sigset_t before;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &before);
  bool started = false;
  try {
    std::thread([fd] { adopt_owed_reply(fd); }).detach();
    started = true;
  } catch (...) {
  }
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  if (!started) {
    adopt_owed_reply(fd);
  }
}

/// The reply pipe of one request. `owed` is set while the request may be with the helper
/// and its reply has not been taken: then the destructor (fork_raw's frame destroyed
/// under the await, or an error of the read) adopts the child whose pid the read already
/// put in `reply` (a read that completed while the frame was never resumed: a runtime
/// shutting down drains the ring before it destroys frames), or else hands the read end
/// to take_reply_later(), after closing our write end (else a request that never left
/// would not end in EOF).
struct reply_pipe {
  detail::process_fd read_end;
  detail::process_fd write_end;
  std::int32_t reply = 0;  // the read's target: a pid, -errno, or 0 while nothing came
  bool owed = false;

  reply_pipe(int r, int w) noexcept : read_end(r), write_end(w) {}
  reply_pipe(const reply_pipe&) = delete;
  reply_pipe& operator=(const reply_pipe&) = delete;
  ~reply_pipe() {
    write_end.close();
    if (!owed) {
      return;
    }
    if (reply > 0) {
      (void)detail::adopt_pid(reply, false);  // dropped at once: to the orphan reaper
    } else if (reply == 0) {
      take_reply_later(read_end.release());
    }
  }
};

/// Sends the request and reads the reply (awaited shielded: see fork_raw); clears
/// `pipe->owed` once the reply is read or cannot come.
task<result<void>> request_reply(int sock, msghdr* mp, reply_pipe* pipe) {
  // MSG_NOSIGNAL: a dead helper is EPIPE here, never a SIGPIPE (even on a thread that
  // does not block it).
  auto sent =
      co_await io_op([sock, mp](io_uring_sqe* sqe) { io_uring_prep_sendmsg(sqe, sock, mp, MSG_NOSIGNAL); });
  pipe->write_end.close();  // the helper holds its own copy; EOF if it drops the request
  if (!sent) {
    pipe->owed = false;  // not sent: no child
    co_return unexpected(sent.error() == std::errc::broken_pipe || sent.error() == std::errc::connection_reset
                             ? std::make_error_code(std::errc::not_connected)
                             : sent.error());
  }
  auto got = co_await io::read(pipe->read_end.get(), std::as_writable_bytes(std::span(&pipe->reply, 1)));
  if (!got) {
    co_return unexpected(got.error());  // still owed: read by take_reply_later()
  }
  pipe->owed = false;  // the reply (4 bytes: one write to a pipe) or EOF: no child
  if (*got != sizeof pipe->reply) {
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

// The reply (the new process's pid, or the helper's -errno): the child, its pidfd opened;
// a child whose pidfd cannot be opened is killed and reaped.
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
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0) {
    co_return unexpected(os_error(-errno));
  }
  reply_pipe pipe(ends[0], ends[1]);

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
  passed[0] = pipe.write_end.get();
  std::copy(fds.begin(), fds.end(), passed + 1);
  std::memcpy(CMSG_DATA(c), passed, sizeof(int) * (1 + fds.size()));

  // Cancellation is honoured only before the request is sent. Once it may have been
  // sent, the helper may clone: the send and the reply are awaited without any token
  // (shield), so that a child that was created is always taken (its pidfd opened) and
  // returned. A caller that drops it (when_any's loser) hands it to the orphan reaper.
  // If this frame ends before the reply is read (its runtime destroyed), `pipe` hands the
  // reply over (reply_pipe, take_reply_later).
  if (std::stop_token stop = co_await get_stop_token(); stop.stop_requested()) {
    co_return unexpected(cancelled_error());
  }
  pipe.owed = true;
  auto exchanged = co_await corio::shield(request_reply(sock, &msg, &pipe));
  if (!exchanged) {
    co_return unexpected(exchanged.error());
  }
  co_return adopt_reply(pipe.reply);
}

}  // namespace corio::ipc
