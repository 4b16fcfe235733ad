// corio::ipc::command: the builder's setters, the check of its input, spawn() as a few
// named steps (the child's stdio and inherited fds, the exec's arguments, the launch —
// detail/launch.hpp — and the adoption of its pidfd and pipes), and output() /
// status(). The design: command.hpp.
#include <corio/ipc/process/command.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>

#include <corio/ipc/process/detail/launch.hpp>

extern char** environ;

namespace corio::ipc {

namespace {

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

/// Takes the launched child (its pidfd: see detail::adopt_pid) and the parent's pipe ends.
result<child> adopt(pid_t pid, detail::child_setup& setup, bool kill_on_drop) {
  auto c = detail::adopt_pid(pid, kill_on_drop);
  if (!c) {
    return c;
  }
  int* end = setup.parent_end;
  c->set_pipes(child_stdin(std::exchange(end[0], -1)), child_output(std::exchange(end[1], -1)),
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
  if (m_parent_death_signal < 0 || m_parent_death_signal >= NSIG) {
    std::string text = "the parent-death signal ";
    text += std::to_string(m_parent_death_signal);
    text += " is not a signal number";
    return text;
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
    if (path.empty()) {
      path = "/bin:/usr/bin";
    }
    if (auto found = detail::lookup_program(m_program, path)) {
      // Found, yet ENOENT: what is missing is elsewhere.
      detail += " (found as " + quoted(*found) + "; missing: " +
                (m_cwd ? "the directory " + quoted(*m_cwd) + ", or " : std::string()) +
                "the interpreter its #! line names, or a library it needs)";
    } else {
      detail += " (not found in PATH " + quoted(path) + ")";
    }
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
  detail::child_setup setup;
  if (auto r = detail::add_stdio(setup, m_stdio); !r) {
    return unexpected(r.error());
  }
  if (auto r = detail::add_inherited(setup, m_inherit); !r) {
    return unexpected(r.error());
  }
  setup.cwd = m_cwd ? m_cwd->c_str() : nullptr;
  setup.pgroup = m_pgroup;
  setup.parent_death_signal = m_parent_death_signal;
  bool custom = m_env_clear || !m_env_edits.empty();
  detail::exec_args args(m_argv, custom ? std::optional(build_env()) : std::nullopt);
  auto pid = detail::launch(setup, args, m_program);
  if (!pid) {
    return unexpected(pid.error());
  }
  return adopt(*pid, setup, m_kill_on_drop);
}

task<process_result<process_output>> command::run_output(command cmd) {
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

task<process_result<exit_status>> command::run_status(command cmd) {
  auto c = cmd.spawn();
  if (!c) {
    co_return process_result<exit_status>::failure(c.error(), c.detail());
  }
  co_return co_await c->wait({}, on_cancel::kill);
}

}  // namespace corio::ipc
