// corio::ipc::command: the builder's setters, spawn() as a few named steps (the child's
// stdio, its inherited fds, the exec's arguments, the launch through posix_spawn, the
// adoption of its pidfd and pipes), and output() / status(). The design: command.hpp.
#include <corio/ipc/process/command.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
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

/// What the child does between its clone and its exec, collected in the parent: fd
/// actions in order, then every fd >= close_from closed, then the directory change.
/// Owns the temporary fd copies (closed once the child is launched) and the parent's
/// pipe ends (closed on failure; handed to the child object on success).
struct child_setup {
  struct action {
    enum kind : unsigned char { dup2, open_null, close } what;
    int fd;      // dup2: the source; open_null: O_RDONLY or O_WRONLY; close: the fd
    int target;  // dup2 / open_null: the child's fd
  };
  std::vector<action> actions;
  int close_from = 3;
  const char* cwd = nullptr;
  std::optional<pid_t> pgroup;
  fd_closer temporaries;
  int parent_end[3] = {-1, -1, -1};

  child_setup() = default;
  child_setup(const child_setup&) = delete;
  child_setup& operator=(const child_setup&) = delete;
  ~child_setup() {
    for (int fd : parent_end) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
  }

  /// An fd >= 3 (O_CLOEXEC) for `fd`, so that no dup2 onto 0..2 clobbers a later source.
  int high_fd(int fd) {
    if (fd >= 3) {
      return fd;
    }
    int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d >= 0) {
      temporaries.add(d);
    }
    return d;
  }
};

/// The child's stdin, stdout and stderr: /dev/null, a new pipe or a given fd (inherit:
/// nothing to do).
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

/// Extra fds: each source copied above every target first (see command.hpp), then
/// dup2'd onto its target after the stdio dup2s; the unused numbers between 3 and the
/// highest target closed, and every fd above it (close_from).
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

/// The exec's argv and environment (nullptr-terminated views of strings that outlive it).
struct exec_args {
  std::vector<char*> argv;
  std::vector<std::string> env_storage;
  std::vector<char*> envp;
  char** env = environ;
  bool custom_env = false;
  std::string path_value;  // PATH in a custom environment ("" if unset)

  exec_args(const std::vector<std::string>& args, std::optional<std::vector<std::string>> custom) {
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
  exec_args(const exec_args&) = delete;
  exec_args& operator=(const exec_args&) = delete;
};

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

bool has_nul(const std::string& s) noexcept { return s.find('\0') != std::string::npos; }

/// `s` in double quotes for an error text: control bytes escaped (a NUL as \0), cut
/// after 100 bytes.
std::string quoted(const std::string& s) {
  std::string q = "\"";
  for (std::size_t i = 0; i < s.size() && i < 100; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) {
      q += "\\0";
    } else if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      q += hex;
    } else {
      q += static_cast<char>(c);
    }
  }
  return q + (s.size() > 100 ? "\"..." : "\"");
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

namespace {

/// Starts the child with posix_spawn (posix_spawnp for a bare name, unless a custom
/// environment brings its own PATH, which is searched here); yields its pid.
result<pid_t> launch(const child_setup& setup, exec_args& args, const std::string& program) {
  spawn_attributes attrs;
  if (int rc = attrs.fill(setup); rc != 0) {
    return unexpected(os_error(-rc));
  }
  pid_t pid = -1;
  int rc = 0;
  if (program.find('/') != std::string::npos) {
    rc = ::posix_spawn(&pid, program.c_str(), attrs.actions(), attrs.attr(), args.argv.data(), args.env);
  } else if (args.custom_env) {
    auto resolved = lookup(program, args.path_value.empty() ? std::string("/bin:/usr/bin") : args.path_value);
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

/// Takes the launched child: its pidfd (race-free: `pid` stays ours until we reap it;
/// the parent must not ignore SIGCHLD) and the parent's pipe ends.
result<child> adopt(pid_t pid, child_setup& setup, bool kill_on_drop) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return unexpected(os_error(-err));
  }
  child c(pid, pidfd, kill_on_drop);
  int* end = setup.parent_end;
  c.set_pipes(child_stdin(std::exchange(end[0], -1)), child_output(std::exchange(end[1], -1)),
              child_output(std::exchange(end[2], -1)));
  return c;
}

}  // namespace

std::string command::invalid_part() const {
  if (has_nul(m_program)) {
    return "the program name " + quoted(m_program) + " contains a NUL byte";
  }
  for (std::size_t i = 1; i < m_argv.size(); ++i) {
    if (has_nul(m_argv[i])) {
      return "argument " + std::to_string(i) + " (" + quoted(m_argv[i]) + ") contains a NUL byte";
    }
  }
  for (const auto& edit : m_env_edits) {
    if (edit.key.empty()) {
      return "an environment variable name is empty";
    }
    if (edit.key.find('=') != std::string::npos) {
      return "the environment variable name " + quoted(edit.key) + " contains '='";
    }
    if (has_nul(edit.key)) {
      return "the environment variable name " + quoted(edit.key) + " contains a NUL byte";
    }
    if (edit.value && has_nul(*edit.value)) {
      return "the value of environment variable " + quoted(edit.key) + " contains a NUL byte";
    }
  }
  if (m_cwd && has_nul(*m_cwd)) {
    return "the working directory " + quoted(*m_cwd) + " contains a NUL byte";
  }
  return {};
}

std::string command::failure_detail(std::error_code ec, const std::string& what) const {
  std::string detail = "cannot run " + quoted(m_program);
  if (!what.empty()) {
    return detail + ": " + what;
  }
  if (ec == std::errc::no_such_file_or_directory && m_program.find('/') == std::string::npos) {
    std::string path;
    for (const auto& kv : build_env()) {
      if (kv.compare(0, 5, "PATH=") == 0) {
        path = kv.substr(5);
      }
    }
    detail += " (not found in PATH " + quoted(path.empty() ? std::string("/bin:/usr/bin") : path) + ")";
  }
  return detail;
}

process_result<child> command::spawn() const {
  if (std::string bad = invalid_part(); !bad.empty()) {
    return process_result<child>::failure(std::make_error_code(std::errc::invalid_argument), failure_detail({}, bad));
  }
  auto spawned = spawn_checked();
  if (!spawned) {
    return process_result<child>::failure(spawned.error(), failure_detail(spawned.error(), {}));
  }
  return std::move(*spawned);
}

result<child> command::spawn_checked() const {
  child_setup setup;
  if (auto r = add_stdio(setup, m_stdio); !r) {
    return unexpected(r.error());
  }
  if (auto r = add_inherited(setup, m_inherit); !r) {
    return unexpected(r.error());
  }
  setup.cwd = m_cwd ? m_cwd->c_str() : nullptr;
  setup.pgroup = m_pgroup;
  bool custom = m_env_clear || !m_env_edits.empty();
  exec_args args(m_argv, custom ? std::optional(build_env()) : std::nullopt);
  auto pid = launch(setup, args, m_program);
  if (!pid) {
    return unexpected(pid.error());
  }
  return adopt(*pid, setup, m_kill_on_drop);
}

task<process_result<process_output>> command::output() const {
  command cmd = *this;
  if (cmd.m_stdio[0].mode() == stdio::kind::inherit) {
    cmd.m_stdio[0] = stdio::null();
  }
  cmd.m_stdio[1] = stdio::piped();
  cmd.m_stdio[2] = stdio::piped();
  auto c = cmd.spawn();
  if (!c) {
    co_return process_result<process_output>::failure(c.error(), c.detail());
  }
  co_return co_await c->output();
}

task<process_result<exit_status>> command::status() const {
  auto c = spawn();
  if (!c) {
    co_return process_result<exit_status>::failure(c.error(), c.detail());
  }
  co_return co_await c->wait({}, on_cancel::kill);
}

}  // namespace corio::ipc
