// corio::ipc::command: a builder for a child process, and spawn().
//
// Design: spawn() runs glibc's posix_spawn (posix_spawnp for a bare name), which clones
// with CLONE_VM | CLONE_VFORK: the child runs only glibc's exec preparation on its own
// stack and then execs, so spawning is safe while the other workers run (no copy of a
// busy multithreaded address space runs arbitrary code), and glibc (>= 2.24) reports a
// failed exec as the return value: a missing program is ENOENT from spawn(), not a child
// that exits 127. The pidfd is taken with pidfd_open() right after (race-free: the pid
// cannot be reused while it is our unreaped child). bench/process measured posix_spawn
// from the workers at 0.97x the 20-thread posix_spawn + waitpid floor; clone3(CLONE_PIDFD
// | CLONE_VFORK) would save only that pidfd_open (4.2 µs with its close, measured here,
// of a ~400 µs spawn), not worth a hand-written vfork child and its signal/TLS hazards.
// The one exception: parent_death_signal() needs a prctl between the clone and the exec,
// which posix_spawn cannot do, so such a spawn goes through a small vfork child of our
// own (ipc/process/launch.cpp: raw syscalls only, the same steps as posix_spawn's).
//
// Hygiene: the child gets an empty signal mask and default dispositions for every signal
// (corio's workers block SIGPIPE; a parent may ignore signals), and only fds 0, 1 and 2
// plus those given with inherit_fd(): every other fd is closed in the child
// (posix_spawn_file_actions_addclosefrom_np, i.e. close_range, plus one close per unused
// number below the highest inherited fd), whether or not it was O_CLOEXEC.
// inherit_fd(parent_fd, child_fd): the parent's fd is first duplicated above every
// target (F_DUPFD_CLOEXEC, closed again in the parent after the spawn), so that no dup2
// in the child can clobber another's source (fd swaps work); the child's actions are:
// stdio dup2s, then dup2(copy, child_fd) for each, then close every other fd >= 3.
//
// Bad input: a program name, argument, working directory or environment value with an
// embedded NUL byte (a C string would end there: the child would see it cut), or an
// environment name that is empty or holds '=' or a NUL (it would set another variable),
// makes spawn() fail with std::errc::invalid_argument, its detail() naming the offending
// part, e.g. `cannot run "echo": argument 1 ("x\0; y") contains a NUL byte` — nothing
// is spawned. Every spawn failure's detail() names the program.
//
// Environment: inherited from `environ` at spawn time (not thread-safe against a
// concurrent setenv(), as with every exec), then edited by env()/env_remove()/env_clear().
// PATH lookup uses the PATH the child will see (the edited one if env() set PATH).
//
// Cancellation: spawn() does not suspend. output() and status() honour the inherited
// token (when_any, timeout): they yield operation_canceled and kill the child (SIGKILL,
// then an uncancellable reap of at most ~1 s), consistent with child::wait_for(); a
// child you spawn() yourself is yours to wait for, kill or drop (see child.hpp).
//
// Thread-safety: a command is a plain value; spawn() may be called from any thread, and
// concurrently on different commands. Cost: one clone + exec (~250-400 µs here), during
// which the calling thread is suspended by the kernel (vfork semantics: it uses no CPU,
// but a worker that spawns runs nothing else meanwhile); one pipe2 per piped stream, one
// pidfd_open; no thread, no allocation beyond argv/env.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <corio/ipc/process/child.hpp>
#include <corio/ipc/process/exit_status.hpp>
#include <corio/ipc/process/process_result.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// What one of the child's standard streams is connected to.
class stdio {
 public:
  /// Which of the four connections (see the factory functions below).
  enum class kind { inherit, null, piped, fd };
  /// The parent's own stream (the default for spawn()).
  static stdio inherit() noexcept { return stdio(kind::inherit, -1); }
  /// /dev/null.
  static stdio null() noexcept { return stdio(kind::null, -1); }
  /// A new pipe; the parent's end appears in child::stdin_pipe() / stdout_pipe() / stderr_pipe().
  static stdio piped() noexcept { return stdio(kind::piped, -1); }
  /// A duplicate of `fd` (borrowed: the caller keeps and closes its own fd).
  static stdio from_fd(int fd) noexcept { return stdio(kind::fd, fd); }

  /// The kind of connection.
  [[nodiscard]] kind mode() const noexcept { return m_kind; }
  /// The borrowed descriptor of from_fd(), else -1.
  [[nodiscard]] int fd() const noexcept { return m_fd; }

 private:
  stdio(kind k, int fd) noexcept : m_kind(k), m_fd(fd) {}
  kind m_kind;
  int m_fd;
};

/// Everything a finished child produced (command::output(), child::output()).
struct process_output {
  /// How the child ended.
  exit_status status;
  std::string out;  ///< standard output
  std::string err;  ///< standard error
};

/// A process to spawn: program, arguments, environment, directory, stdio, process group.
class command {
 public:
  /// `program`: a path (contains '/') or a name looked up in PATH. argv[0] = program.
  /// One with a NUL byte makes spawn() fail (see the header comment).
  explicit command(std::string program);

  /// Appends an argument (argv[1], argv[2], ...). One with a NUL byte makes spawn() fail
  /// with invalid_argument naming it (see the header comment).
  command& arg(std::string a);
  /// Appends every element of `range` (anything convertible to std::string).
  template <class Range>
  command& args(const Range& range) {
    for (const auto& a : range) {
      arg(std::string(a));
    }
    return *this;
  }
  /// Appends the listed arguments: `cmd.args({"-l", "-a"})`.
  command& args(std::initializer_list<std::string_view> list) {
    for (auto a : list) {
      arg(std::string(a));
    }
    return *this;
  }
  /// Sets (or overrides) one variable of the child's environment. A `key` that is empty
  /// or holds '=' or a NUL, or a `value` with a NUL, makes spawn() fail with
  /// invalid_argument naming it.
  command& env(std::string key, std::string value);
  /// Removes one variable from the child's environment.
  command& env_remove(std::string key);
  /// Starts the child's environment empty (later env() calls still apply).
  command& env_clear();
  /// The child's working directory.
  command& cwd(std::string dir);
  /// What the child's stdin is connected to (default: inherited; output(): /dev/null).
  command& stdin_mode(stdio s) noexcept { m_stdio[0] = s; return *this; }
  /// What the child's stdout is connected to (default: inherited).
  command& stdout_mode(stdio s) noexcept { m_stdio[1] = s; return *this; }
  /// What the child's stderr is connected to (default: inherited).
  command& stderr_mode(stdio s) noexcept { m_stdio[2] = s; return *this; }
  /// The child gets a duplicate of the parent's `parent_fd` as its fd `child_fd` (not
  /// close-on-exec there), e.g. a pipe end as fd 3. Borrowed: the caller keeps and closes
  /// its own fd (it must stay open until spawn() returns). child_fd 0..2 is the same as
  /// stdin/stdout/stderr_mode(stdio::from_fd(parent_fd)). Giving a child_fd again
  /// replaces the earlier one. Errors at spawn(): EBADF for a closed parent_fd, EINVAL
  /// for a negative child_fd, and EINVAL (from F_DUPFD_CLOEXEC) when the highest child_fd
  /// plus one reaches RLIMIT_NOFILE's soft limit. Cost: one fcntl in the parent per fd;
  /// in the child one dup2 per fd, plus one close per unused fd number between 3 and the
  /// highest child_fd (keep child_fd small: a child_fd of 10,000 means ~10,000 actions).
  command& inherit_fd(int parent_fd, int child_fd);
  /// Puts the child into process group `pgid` (0: a new group led by the child).
  command& process_group(pid_t pgid) noexcept { m_pgroup = pgid; return *this; }
  /// SIGKILL the child when its `child` handle is dropped without being waited for.
  command& kill_on_drop(bool on) noexcept { m_kill_on_drop = on; return *this; }
  /// Sends the child `sig` (e.g. SIGKILL or SIGTERM; 0: none, the default) when its
  /// parent dies, even by kill -9 — so it is not left running as an orphan
  /// (PR_SET_PDEATHSIG, set in the child before its exec; if the parent died before
  /// that, the child sends itself `sig` at once instead of running; a number that is not
  /// a signal makes spawn() fail with invalid_argument). Read this before using it:
  /// Linux sends the signal when the *thread* that spawned the child exits, not only
  /// when the process dies. A child spawned from a corio worker gets it when that
  /// runtime is destroyed (its worker threads exit); one spawned from a spawn_blocking
  /// thread when that pool retires the thread. Spawn from a thread that lives as long
  /// as the child should (the main thread, or a runtime kept for the program's life).
  /// The setting is cleared by exec of a set-user-ID program. Cost: such a spawn goes
  /// through a hand-written vfork child instead of posix_spawn (same cost).
  command& parent_death_signal(int sig) noexcept { m_parent_death_signal = sig; return *this; }

  /// Starts the process.
  /// Errors: invalid_argument for bad input (see the header comment), the exec's errno
  /// (ENOENT: no such program, EACCES: not executable, ENOEXEC, ...), EAGAIN at the
  /// process limit (RLIMIT_NPROC, pid_max), EMFILE for the pipes, or a pidfd_open()
  /// failure (then the child is killed and reaped). The result's detail() names the
  /// program (and the PATH searched, or the offending argument).
  /// Thread-safety: any thread; needs no runtime (the pipes need one to be used).
  [[nodiscard]] process_result<child> spawn() const;

  /// Spawns with stdout and stderr piped (stdin /dev/null unless set), feeds nothing,
  /// collects both streams and the exit status. Errors: spawn()'s, or the I/O's.
  /// Cancellation: as child::output(): operation_canceled, and the child is SIGKILLed and
  /// reaped before the call returns (its pid is gone).
  /// Lifetime: the task holds its own copy of the command, taken at this call, so it may
  /// outlive the command (`co_await ipc::command("ls").output()`, or a task stored and
  /// awaited later); changes made to the command afterwards do not reach it.
  task<process_result<process_output>> output() const& { return run_output(*this); }
  /// output() on a temporary: the task takes the command over instead of copying it.
  task<process_result<process_output>> output() && { return run_output(std::move(*this)); }
  /// Spawns with the configured stdio and awaits the exit status.
  /// Cancellation: as child::wait(…, on_cancel::kill): operation_canceled, and the child
  /// is SIGKILLed and reaped before the call returns (its pid is gone).
  /// Lifetime: as output(), the task holds its own copy of the command.
  task<process_result<exit_status>> status() const& { return run_status(*this); }
  /// status() on a temporary: the task takes the command over instead of copying it.
  task<process_result<exit_status>> status() && { return run_status(std::move(*this)); }

  /// The program as given to the constructor.
  [[nodiscard]] const std::string& program() const noexcept { return m_program; }

 private:
  struct env_edit {
    std::string key;
    std::optional<std::string> value;  // nullopt: remove
  };
  [[nodiscard]] std::vector<std::string> build_env() const;
  /// output() and status(): coroutines that own `cmd` (a parameter lives in the frame).
  static task<process_result<process_output>> run_output(command cmd);
  static task<process_result<exit_status>> run_status(command cmd);
  /// spawn() for input already checked; errors without a detail.
  [[nodiscard]] result<child> spawn_checked() const;
  /// What spawn() must refuse (see the header comment), in words; empty if nothing.
  [[nodiscard]] std::string invalid_part() const;
  /// The detail of a failed spawn: the program, and `what` if given.
  [[nodiscard]] std::string failure_detail(std::error_code ec, const std::string& what) const;

  std::string m_program;
  std::vector<std::string> m_argv;
  std::vector<env_edit> m_env_edits;
  bool m_env_clear = false;
  std::optional<std::string> m_cwd;
  stdio m_stdio[3] = {stdio::inherit(), stdio::inherit(), stdio::inherit()};
  std::optional<pid_t> m_pgroup;
  bool m_kill_on_drop = false;
  int m_parent_death_signal = 0;
  std::vector<std::pair<int, int>> m_inherit;  // (parent fd, child fd), child fd >= 3 or < 0

};

}  // namespace corio::ipc
