// corio::ipc::detail: launching a prepared child process — what command::spawn()
// collects (the child's fd actions, directory, process group, parent-death signal, its
// argv and environment) and the two ways to start it (launch.cpp). Private to the
// library (not installed).
//
// Thread-safety: plain values, one spawn at a time each. Cost: see command.hpp.
#pragma once

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <corio/ipc/process/command.hpp>
#include <corio/runtime/result.hpp>

namespace corio::ipc::detail {

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
  int parent_death_signal = 0;  // PR_SET_PDEATHSIG in the child (0: none)
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

/// The exec's argv and environment (nullptr-terminated views of strings that outlive it).
struct exec_args {
  std::vector<char*> argv;
  std::vector<std::string> env_storage;
  std::vector<char*> envp;
  char** env = environ;
  bool custom_env = false;
  std::string path_value;  // PATH in a custom environment ("" if unset)

  /// Views of `args`; `custom`: the child's whole environment (else `environ`).
  exec_args(const std::vector<std::string>& args, std::optional<std::vector<std::string>> custom);
  exec_args(const exec_args&) = delete;
  exec_args& operator=(const exec_args&) = delete;
};

/// The child's stdin, stdout and stderr: /dev/null, a new pipe or a given fd (inherit:
/// nothing to do).
result<void> add_stdio(child_setup& setup, const stdio (&streams)[3]);
/// Extra fds: each source copied above every target first (see command.hpp), then
/// dup2'd onto its target after the stdio dup2s; the unused numbers between 3 and the
/// highest target closed, and every fd above it (close_from).
result<void> add_inherited(child_setup& setup, const std::vector<std::pair<int, int>>& inherit);

/// A bare program name resolved against `path` (a PATH value) as execvp would: the
/// first regular, executable file; ENOENT, or EACCES if something by that name was seen
/// but could not be run (a directory, no execute permission).
result<std::string> lookup_program(const std::string& name, const std::string& path);

/// Starts the child as `setup` says and execs `program` (a path, or a name looked up in
/// PATH); yields its pid. posix_spawn, or with a parent-death signal the vfork child of
/// launch.cpp. Errors: the exec's errno, or the setup's.
result<pid_t> launch(const child_setup& setup, exec_args& args, const std::string& program);

/// The child object for a started child `pid` (by command::spawn() and fork_raw()): its
/// pidfd opened (race-free: `pid` stays ours until we reap it; the parent must not ignore
/// SIGCHLD). A child whose pidfd cannot be opened is killed and reaped: the error is
/// pidfd_open's.
result<child> adopt_pid(pid_t pid, bool kill_on_drop);

}  // namespace corio::ipc::detail
