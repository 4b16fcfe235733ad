// Launching a prepared child (detail/launch.hpp): collecting its stdio and inherited
// fds, then starting it — through posix_spawn (the default), or, when the child must get
// a signal at its parent's death, through a hand-written vfork child, since posix_spawn
// has no hook for PR_SET_PDEATHSIG between its clone and its exec.
#include <corio/ipc/process/detail/launch.hpp>

#include <dlfcn.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>

extern char** environ;

namespace corio::ipc::detail {

exec_args::exec_args(const std::vector<std::string>& args, std::optional<std::vector<std::string>> custom) {
  argv.reserve(args.size() + 1);
  for (const auto& a : args) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  if (custom) {
    env_storage = std::move(*custom);
    for (auto& kv : env_storage) {
      envp.push_back(kv.data());
      if (kv.compare(0, 5, "PATH=") == 0) {
        path_value = kv.substr(5);
      }
    }
    envp.push_back(nullptr);
    env = envp.data();
    custom_env = true;
  }
}

result<void> add_stdio(child_setup& setup, const stdio (&streams)[3]) {
  for (int i = 0; i < 3; ++i) {
    int src = -1;
    switch (streams[i].mode()) {
      case stdio::kind::inherit:
        continue;
      case stdio::kind::null:
        setup.actions.push_back({child_setup::action::open_null, i == 0 ? O_RDONLY : O_WRONLY, i});
        continue;
      case stdio::kind::piped: {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) {
          return unexpected(os_error(-errno));
        }
        int child_end = i == 0 ? p[0] : p[1];
        setup.parent_end[i] = i == 0 ? p[1] : p[0];
        setup.temporaries.add(child_end);
        src = setup.high_fd(child_end);
        break;
      }
      case stdio::kind::fd:
        src = setup.high_fd(streams[i].fd());
        break;
    }
    if (src < 0) {
      return unexpected(os_error(-errno));
    }
    setup.actions.push_back({child_setup::action::dup2, src, i});  // clears FD_CLOEXEC on i
  }
  return {};
}

result<void> add_inherited(child_setup& setup, const std::vector<std::pair<int, int>>& inherit) {
  int top = 2;  // the highest inherited child fd
  for (const auto& [from, to] : inherit) {
    if (to < 0) {
      return unexpected(os_error(-EINVAL));
    }
    top = std::max(top, to);
  }
  for (const auto& [from, to] : inherit) {
    int copy = ::fcntl(from, F_DUPFD_CLOEXEC, top + 1);
    if (copy < 0) {
      return unexpected(os_error(-errno));
    }
    setup.temporaries.add(copy);
    setup.actions.push_back({child_setup::action::dup2, copy, to});  // clears FD_CLOEXEC on `to`
  }
  for (int fd = 3; fd < top; ++fd) {
    if (std::none_of(inherit.begin(), inherit.end(), [fd](const auto& p) { return p.second == fd; })) {
      setup.actions.push_back({child_setup::action::close, fd, -1});
    }
  }
  // why: the child inherits 0..2 (and the inherit_fd targets) only, even fds some library
  // opened without O_CLOEXEC. The copies above `top` go with it, after their dup2s.
  setup.close_from = top + 1;
  return {};
}

namespace {

/// posix_spawn's file actions and attributes for a child_setup (RAII).
class spawn_attributes {
 public:
  spawn_attributes() {
    ::posix_spawn_file_actions_init(&m_actions);
    ::posix_spawnattr_init(&m_attr);
  }
  ~spawn_attributes() {
    ::posix_spawn_file_actions_destroy(&m_actions);
    ::posix_spawnattr_destroy(&m_attr);
  }
  spawn_attributes(const spawn_attributes&) = delete;
  spawn_attributes& operator=(const spawn_attributes&) = delete;

  /// Translates `setup`; 0 or the errno of the first action that could not be added.
  int fill(const child_setup& setup) {
    for (const auto& a : setup.actions) {
      if (int rc = add(a); rc != 0) {
        return rc;
      }
    }
    int rc = ::posix_spawn_file_actions_addclosefrom_np(&m_actions, setup.close_from);
    if (rc == 0 && setup.cwd != nullptr) {
      rc = ::posix_spawn_file_actions_addchdir_np(&m_actions, setup.cwd);
    }
    // An empty signal mask and default dispositions for every signal (see command.hpp).
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    sigset_t none;
    sigset_t all;
    ::sigemptyset(&none);
    ::sigfillset(&all);
    ::posix_spawnattr_setsigmask(&m_attr, &none);
    ::posix_spawnattr_setsigdefault(&m_attr, &all);
    if (setup.pgroup) {
      flags |= POSIX_SPAWN_SETPGROUP;
      ::posix_spawnattr_setpgroup(&m_attr, *setup.pgroup);
    }
    ::posix_spawnattr_setflags(&m_attr, flags);
    return rc;
  }

  const posix_spawn_file_actions_t* actions() const noexcept { return &m_actions; }
  const posix_spawnattr_t* attr() const noexcept { return &m_attr; }

 private:
  int add(const child_setup::action& a) {
    switch (a.what) {
      case child_setup::action::dup2:
        return ::posix_spawn_file_actions_adddup2(&m_actions, a.fd, a.target);
      case child_setup::action::open_null:
        return ::posix_spawn_file_actions_addopen(&m_actions, a.target, "/dev/null", a.fd, 0);
      case child_setup::action::close:
        return ::posix_spawn_file_actions_addclose(&m_actions, a.fd);
    }
    return EINVAL;
  }

  posix_spawn_file_actions_t m_actions;
  posix_spawnattr_t m_attr;
};

// The vfork child's code: not instrumented by any sanitizer (see raw()).
#define CORIO_VFORK_CHILD_CODE __attribute__((no_sanitize("address", "undefined", "thread")))

/// What the vfork child needs; `err` is how it reports a failure (it shares our memory).
struct vfork_call {
  const child_setup* setup;
  const char* path;
  char* const* argv;
  char* const* envp;
  pid_t parent;
  int err;
};

/// The kernel's struct sigaction (for the raw rt_sigaction call below).
struct kernel_sigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  std::uint64_t mask;
};

/// One raw syscall; -errno on failure. The vfork child makes only these: it runs on our
/// memory and thread state while we wait, so it must not enter a sanitizer's or libc's
/// interposed wrappers (which keep per-thread state), nor allocate.
CORIO_VFORK_CHILD_CODE long raw(long nr, long a = 0, long b = 0, long c = 0, long d = 0) noexcept {
  long rc = ::syscall(nr, a, b, c, d);
  return rc < 0 ? -errno : rc;
}

/// Performs one fd action of the setup in the child; 0 or -errno.
CORIO_VFORK_CHILD_CODE long child_action(const child_setup::action& a) noexcept {
  switch (a.what) {
    case child_setup::action::dup2:
      return raw(SYS_dup3, a.fd, a.target, 0);  // sources never equal targets (see add_stdio)
    case child_setup::action::open_null: {
      long fd = raw(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/dev/null"), a.fd);
      if (fd < 0 || fd == a.target) {
        return fd < 0 ? fd : 0;
      }
      long rc = raw(SYS_dup3, fd, a.target, 0);
      raw(SYS_close, fd);
      return rc;
    }
    case child_setup::action::close:
      raw(SYS_close, a.fd);  // (EBADF: nothing was open there)
      return 0;
  }
  return -EINVAL;
}

/// The child's preparation, in posix_spawn's order plus the parent-death signal; 0 or
/// -errno.
CORIO_VFORK_CHILD_CODE long prepare_child(const vfork_call& c) noexcept {
  const child_setup& s = *c.setup;
  kernel_sigaction dfl{SIG_DFL, 0, nullptr, 0};
  for (long sig = 1; sig < NSIG; ++sig) {
    raw(SYS_rt_sigaction, sig, reinterpret_cast<long>(&dfl), 0, sizeof dfl.mask);  // (SIGKILL/STOP: EINVAL)
  }
  if (long rc = raw(SYS_prctl, PR_SET_PDEATHSIG, s.parent_death_signal); rc < 0) {
    return rc;
  }
  if (raw(SYS_getppid) != c.parent) {
    // The parent died before the prctl: its signal will never come, so the child takes
    // it now (every signal is still blocked here but SIGKILL; for another signal the
    // child exits 127 as for a failed exec).
    raw(SYS_kill, raw(SYS_getpid), s.parent_death_signal);
    return -ESRCH;
  }
  if (s.pgroup) {
    if (long rc = raw(SYS_setpgid, 0, *s.pgroup); rc < 0) {
      return rc;
    }
  }
  for (const auto& a : s.actions) {
    if (long rc = child_action(a); rc < 0) {
      return rc;
    }
  }
  if (long rc = raw(SYS_close_range, s.close_from, ~0U, 0); rc < 0) {
    return rc;
  }
  if (s.cwd != nullptr) {
    if (long rc = raw(SYS_chdir, reinterpret_cast<long>(s.cwd)); rc < 0) {
      return rc;
    }
  }
  std::uint64_t none = 0;
  return raw(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&none), 0, sizeof none);
}

/// The vfork child: runs on its own stack while the parent thread is suspended; execs or
/// exits, never returns. Not instrumented: see raw().
CORIO_VFORK_CHILD_CODE int vfork_child(void* arg) {
  auto* c = static_cast<vfork_call*>(arg);
  long rc = prepare_child(*c);
  if (rc == 0) {
    rc = raw(SYS_execve, reinterpret_cast<long>(c->path), reinterpret_cast<long>(c->argv),
             reinterpret_cast<long>(c->envp));
  }
  c->err = static_cast<int>(-rc);
  raw(SYS_exit_group, 127);
  return 127;
}

using clone_fn = int (*)(int (*)(void*), void*, int, void*, ...);

/// glibc's own clone(), found in libc itself: a sanitizer's interceptor is skipped, as
/// glibc's posix_spawn skips it by calling its internal clone. (ThreadSanitizer treats an
/// intercepted clone as a fork and resets its bookkeeping in the child — which, with
/// CLONE_VM, is our own memory: the parent then reports false races and dies at its next
/// thread start.) Falls back to the linked clone() if libc cannot be looked up.
clone_fn libc_clone() noexcept {
  static const clone_fn fn = [] {
    clone_fn found = &::clone;
    if (void* libc = ::dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD)) {
      if (void* sym = ::dlsym(libc, "clone")) {
        found = reinterpret_cast<clone_fn>(sym);
      }
      ::dlclose(libc);  // (RTLD_NOLOAD: only drops the reference just taken)
    }
    return found;
  }();
  return fn;
}

/// Starts the child through clone(CLONE_VM | CLONE_VFORK) and vfork_child: the only way
/// to run prctl(PR_SET_PDEATHSIG) between the clone and the exec. Every signal is blocked
/// in this thread meanwhile, so no handler of ours runs on memory the child shares.
result<pid_t> launch_vfork(const child_setup& setup, exec_args& args, const std::string& path) {
  constexpr std::size_t stack_bytes = 64 * 1024;
  void* stack = ::mmap(nullptr, stack_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    return unexpected(os_error(-errno));
  }
  // why: the child calls syscall() and __errno_location() through the PLT; a lazily bound
  // entry would run the dynamic linker in the child, on our memory. This failing call
  // (EBADF) binds both here first.
  (void)raw(SYS_close, -1);
  vfork_call call{&setup, path.c_str(), args.argv.data(), args.env, static_cast<pid_t>(raw(SYS_getpid)), 0};
  // Every signal blocked, glibc's internal ones too (sigfillset + pthread_sigmask would
  // leave those two open), as glibc's posix_spawn does.
  std::uint64_t all = ~std::uint64_t{0};
  std::uint64_t old = 0;
  clone_fn start = libc_clone();  // (looked up before every signal is blocked)
  (void)raw(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<long>(&all), reinterpret_cast<long>(&old), sizeof all);
  pid_t pid = start(&vfork_child, static_cast<char*>(stack) + stack_bytes, CLONE_VM | CLONE_VFORK | SIGCHLD, &call);
  int clone_err = errno;
  (void)raw(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&old), 0, sizeof old);
  ::munmap(stack, stack_bytes);
  if (pid < 0) {
    return unexpected(os_error(-clone_err));
  }
  if (call.err != 0) {
    ::waitpid(pid, nullptr, 0);  // exited already (vfork: we resumed at its exit)
    return unexpected(os_error(-call.err));
  }
  return pid;
}

// The directories a program name without '/' is looked up in: PATH's value, or where it
// is unset or empty, /bin:/usr/bin (what execvp and posix_spawnp use then).
std::string search_path(const char* path_value) {
  return path_value == nullptr || *path_value == '\0' ? std::string("/bin:/usr/bin") : std::string(path_value);
}

}  // namespace

// As execvp searches: the first regular file in `path`'s directories that we may
// execute; a directory or a file without execute permission on the way is skipped, and
// makes the final error EACCES instead of ENOENT (access(X_OK) alone accepted a
// directory named like the program, where posix_spawnp went on to the next entry).
result<std::string> lookup_program(const std::string& name, const std::string& path) {
  int err = ENOENT;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) {
      end = path.size();
    }
    std::string dir = path.substr(start, end - start);
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0) {
      if (S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) {
        return candidate;
      }
      err = EACCES;
    } else if (errno == EACCES) {
      err = EACCES;
    }
    start = end + 1;
  }
  return unexpected(os_error(-err));
}

result<pid_t> launch(const child_setup& setup, exec_args& args, const std::string& program) {
  if (setup.parent_death_signal != 0) {
    if (program.find('/') != std::string::npos) {
      return launch_vfork(setup, args, program);
    }
    const char* path = args.custom_env ? args.path_value.c_str() : ::getenv("PATH");
    auto resolved = lookup_program(program, search_path(path));
    if (!resolved) {
      return unexpected(resolved.error());
    }
    return launch_vfork(setup, args, *resolved);
  }
  spawn_attributes attrs;
  if (int rc = attrs.fill(setup); rc != 0) {
    return unexpected(os_error(-rc));
  }
  pid_t pid = -1;
  int rc = 0;
  if (program.find('/') != std::string::npos) {
    rc = ::posix_spawn(&pid, program.c_str(), attrs.actions(), attrs.attr(), args.argv.data(), args.env);
  } else if (args.custom_env) {
    auto resolved = lookup_program(program, search_path(args.path_value.c_str()));
    if (!resolved) {
      return unexpected(resolved.error());
    }
    rc = ::posix_spawn(&pid, resolved->c_str(), attrs.actions(), attrs.attr(), args.argv.data(), args.env);
  } else {
    rc = ::posix_spawnp(&pid, program.c_str(), attrs.actions(), attrs.attr(), args.argv.data(), args.env);
  }
  if (rc != 0) {
    return unexpected(os_error(-rc));
  }
  return pid;
}

result<child> adopt_pid(pid_t pid, bool kill_on_drop) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {  // reaped, even if a signal comes
    }
    return unexpected(os_error(-err));
  }
  return child(pid, pidfd, kill_on_drop);
}

}  // namespace corio::ipc::detail
