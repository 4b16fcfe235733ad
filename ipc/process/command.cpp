// corio::ipc::command (see command.hpp for the design).
#include <corio/ipc/process/command.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

extern char** environ;

namespace corio::ipc {

namespace {

/// Closes the fds it holds on scope exit (the child's pipe ends, temporary dups).
struct fd_closer {
  std::vector<int> fds;
  void add(int fd) { fds.push_back(fd); }
  fd_closer() { fds.reserve(6); }
  fd_closer(const fd_closer&) = delete;
  fd_closer& operator=(const fd_closer&) = delete;
  ~fd_closer() {
    for (int fd : fds) {
      ::close(fd);
    }
  }
};

/// RAII for posix_spawn_file_actions_t / posix_spawnattr_t.
struct spawn_plan {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  spawn_plan() {
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawnattr_init(&attr);
  }
  ~spawn_plan() {
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attr);
  }
  spawn_plan(const spawn_plan&) = delete;
  spawn_plan& operator=(const spawn_plan&) = delete;
};

/// An fd >= 3 (O_CLOEXEC) for `fd`, so that no dup2 onto 0..2 clobbers a later source.
int high_fd(int fd, fd_closer& closer) {
  if (fd >= 3) {
    return fd;
  }
  int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (d >= 0) {
    closer.add(d);
  }
  return d;
}

/// Resolves a bare program name against `path` (a PATH value): ENOENT or EACCES if not.
result<std::string> lookup(const std::string& name, const std::string& path) {
  int err = ENOENT;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) {
      end = path.size();
    }
    std::string dir = path.substr(start, end - start);
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    if (errno == EACCES) {
      err = EACCES;
    }
    start = end + 1;
  }
  return unexpected(os_error(-err));
}

}  // namespace

command::command(std::string program) : m_program(std::move(program)) { m_argv.push_back(m_program); }

command& command::arg(std::string a) {
  m_argv.push_back(std::move(a));
  return *this;
}
command& command::env(std::string key, std::string value) {
  m_env_edits.push_back({std::move(key), std::move(value)});
  return *this;
}
command& command::env_remove(std::string key) {
  m_env_edits.push_back({std::move(key), std::nullopt});
  return *this;
}
command& command::env_clear() {
  m_env_clear = true;
  m_env_edits.clear();
  return *this;
}
command& command::inherit_fd(int parent_fd, int child_fd) {
  if (child_fd >= 0 && child_fd < 3) {
    m_stdio[child_fd] = stdio::from_fd(parent_fd);
    return *this;
  }
  std::erase_if(m_inherit, [&](const auto& p) { return p.second == child_fd; });
  m_inherit.emplace_back(parent_fd, child_fd);
  return *this;
}
command& command::cwd(std::string dir) {
  m_cwd = std::move(dir);
  return *this;
}

std::vector<std::string> command::build_env() const {
  std::vector<std::string> env;
  if (!m_env_clear) {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      env.emplace_back(*e);
    }
  }
  for (const auto& edit : m_env_edits) {
    std::string prefix = edit.key + "=";
    std::erase_if(env, [&](const std::string& kv) { return kv.compare(0, prefix.size(), prefix) == 0; });
    if (edit.value) {
      env.push_back(prefix + *edit.value);
    }
  }
  return env;
}

result<child> command::spawn() const {
  spawn_plan plan;
  fd_closer closer;
  int parent_end[3] = {-1, -1, -1};
  auto fail = [&](int err) -> result<child> {
    for (int fd : parent_end) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
    return unexpected(os_error(-err));
  };

  for (int i = 0; i < 3; ++i) {
    const stdio& s = m_stdio[i];
    switch (s.mode()) {
      case stdio::kind::inherit:
        break;
      case stdio::kind::null:
        ::posix_spawn_file_actions_addopen(&plan.actions, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
        break;
      case stdio::kind::piped: {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) {
          return fail(errno);
        }
        int child_end = i == 0 ? p[0] : p[1];
        parent_end[i] = i == 0 ? p[1] : p[0];
        closer.add(child_end);
        int src = high_fd(child_end, closer);
        if (src < 0) {
          return fail(errno);
        }
        ::posix_spawn_file_actions_adddup2(&plan.actions, src, i);
        break;
      }
      case stdio::kind::fd: {
        int src = high_fd(s.fd(), closer);
        if (src < 0) {
          return fail(errno);
        }
        ::posix_spawn_file_actions_adddup2(&plan.actions, src, i);  // clears FD_CLOEXEC on i
        break;
      }
    }
  }
  // Extra fds: each source copied above every target first (see the header comment),
  // then dup2'd onto its target after the stdio dup2s.
  int top = 2;  // the highest inherited child fd
  for (const auto& [from, to] : m_inherit) {
    if (to < 0) {
      return fail(EINVAL);
    }
    top = std::max(top, to);
  }
  for (const auto& [from, to] : m_inherit) {
    int copy = ::fcntl(from, F_DUPFD_CLOEXEC, top + 1);
    if (copy < 0) {
      return fail(errno);
    }
    closer.add(copy);
    ::posix_spawn_file_actions_adddup2(&plan.actions, copy, to);  // clears FD_CLOEXEC on `to`
  }
  for (int fd = 3; fd < top; ++fd) {
    if (std::none_of(m_inherit.begin(), m_inherit.end(), [fd](const auto& p) { return p.second == fd; })) {
      ::posix_spawn_file_actions_addclose(&plan.actions, fd);
    }
  }
  // why: the child inherits 0..2 (and the inherit_fd targets) only, even fds some library
  // opened without O_CLOEXEC (glibc 2.34+; close_range(top + 1, ~0U, 0) in the child,
  // Linux 5.9+). The copies above `top` go with it, after their dup2s.
  ::posix_spawn_file_actions_addclosefrom_np(&plan.actions, top + 1);
  if (m_cwd) {
    ::posix_spawn_file_actions_addchdir_np(&plan.actions, m_cwd->c_str());
  }

  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  sigset_t none;
  sigset_t all;
  ::sigemptyset(&none);
  ::sigfillset(&all);
  ::posix_spawnattr_setsigmask(&plan.attr, &none);
  ::posix_spawnattr_setsigdefault(&plan.attr, &all);
  if (m_pgroup) {
    flags |= POSIX_SPAWN_SETPGROUP;
    ::posix_spawnattr_setpgroup(&plan.attr, *m_pgroup);
  }
  ::posix_spawnattr_setflags(&plan.attr, flags);

  std::vector<char*> argv;
  argv.reserve(m_argv.size() + 1);
  for (const auto& a : m_argv) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);

  std::vector<std::string> env_storage;
  std::vector<char*> envp;
  char** env = environ;
  std::string path_value;
  bool custom_path = false;
  if (m_env_clear || !m_env_edits.empty()) {
    env_storage = build_env();
    for (auto& kv : env_storage) {
      envp.push_back(kv.data());
      if (kv.compare(0, 5, "PATH=") == 0) {
        path_value = kv.substr(5);
      }
    }
    envp.push_back(nullptr);
    env = envp.data();
    custom_path = true;
  }

  pid_t pid = -1;
  int rc = 0;
  if (m_program.find('/') != std::string::npos) {
    rc = ::posix_spawn(&pid, m_program.c_str(), &plan.actions, &plan.attr, argv.data(), env);
  } else if (custom_path) {
    auto resolved = lookup(m_program, path_value.empty() ? std::string("/bin:/usr/bin") : path_value);
    if (!resolved) {
      return fail(resolved.error().value());
    }
    rc = ::posix_spawn(&pid, resolved->c_str(), &plan.actions, &plan.attr, argv.data(), env);
  } else {
    rc = ::posix_spawnp(&pid, m_program.c_str(), &plan.actions, &plan.attr, argv.data(), env);
  }
  if (rc != 0) {
    return fail(rc);
  }
  // Race-free: `pid` stays ours until we reap it (the parent must not ignore SIGCHLD).
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return fail(err);
  }
  child c(pid, pidfd, m_kill_on_drop);
  c.set_pipes(child_stdin(parent_end[0]), child_output(parent_end[1]), child_output(parent_end[2]));
  return c;
}

task<result<process_output>> command::output() const {
  command cmd = *this;
  if (cmd.m_stdio[0].mode() == stdio::kind::inherit) {
    cmd.m_stdio[0] = stdio::null();
  }
  cmd.m_stdio[1] = stdio::piped();
  cmd.m_stdio[2] = stdio::piped();
  auto c = cmd.spawn();
  if (!c) {
    co_return unexpected(c.error());
  }
  co_return co_await c->output();
}

task<result<exit_status>> command::status() const {
  auto c = spawn();
  if (!c) {
    co_return unexpected(c.error());
  }
  co_return co_await c->wait({}, on_cancel::kill);
}

}  // namespace corio::ipc
