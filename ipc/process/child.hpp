// corio::ipc::child: a running (or finished) child process, as spawned by
// command::spawn() or ipc::fork().
//
// Waiting: `co_await c.wait()` submits IORING_OP_WAITID on the pidfd (P_PIDFD, WEXITED;
// Linux 6.7+, found by probing the worker's ring) — one SQE, no thread per child, and the
// kernel reaps the child. On older kernels it polls the pidfd (IORING_OP_POLL_ADD, POLLIN
// at exit; Linux 5.3+) and then reaps with waitid(P_PIDFD, WNOHANG). Tests force that
// fallback with detail::set_exit_wait() (detail/exit_wait.hpp).
//
// No zombies: a child dropped before it was reaped is handed to the orphan reaper, one
// background thread per process (started on first use, independent of any runtime) that
// epolls the pidfds it adopted and reaps each with waitid(P_PIDFD) as it exits. With
// command::kill_on_drop(true) the child is sent SIGKILL first. (The parent must not set
// SIGCHLD to SIG_IGN or SA_NOCLDWAIT: the kernel would then reap children itself and
// their pids could be reused under us.)
//
// Cancellation: wait() honours its explicit token and the inherited one; what happens to
// the child then is on_cancel's choice (leave_running by default; wait_for() and
// output() kill and reap it). try_wait() and kill() never suspend. Dropping a child is
// never blocking: the orphan reaper reaps it (kill_on_drop: after a SIGKILL).
//
// Thread-safety: one owner. Only one of wait() / try_wait() at a time. kill() from any
// thread while the child is not yet reaped.
// Cost: the child holds one pidfd and up to three pipe ends.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <stop_token>
#include <string>

#include <corio/ipc/process/child_stdio.hpp>
#include <corio/ipc/process/exit_status.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc {

struct process_output;

/// What a cancelled wait does to the child.
enum class on_cancel {
  leave_running,  ///< the child runs on; wait() may be awaited again
  kill,           ///< SIGKILL; the child is reaped in the background (the handle empties)
};

/// A running or finished child process, held by its pidfd: wait, kill, piped stdio;
/// never left a zombie. Move-only; see the header.
class child {
 public:
  child() noexcept = default;
  /// Adopts `pid` (our unreaped child) and its `pidfd`.
  child(pid_t pid, int pidfd, bool kill_on_drop = false) noexcept
      : m_pid(pid), m_pidfd(pidfd), m_kill_on_drop(kill_on_drop) {}
  /// Takes over `o`'s process and pipes; `o` is empty afterwards.
  child(child&& o) noexcept;
  /// Drops the process held so far (as the destructor does), then takes over `o`'s.
  child& operator=(child&& o) noexcept;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  /// Not reaped yet: kill_on_drop → SIGKILL; then the orphan reaper reaps it.
  ~child();

  /// The process id (0 for an empty handle).
  [[nodiscard]] pid_t id() const noexcept { return m_pid; }
  /// The pidfd the handle waits on (-1 for an empty handle). Ownership stays here.
  [[nodiscard]] int pidfd() const noexcept { return m_pidfd.get(); }
  /// The exit status once wait() or try_wait() has seen it.
  [[nodiscard]] std::optional<exit_status> status() const noexcept { return m_status; }

  /// The parent's pipe ends (nullptr unless the stream was stdio::piped()).
  child_stdin* stdin_pipe() noexcept { return m_in.is_open() ? &m_in : nullptr; }
  /// The parent's end of the child's stdout (nullptr unless stdio::piped()).
  child_output* stdout_pipe() noexcept { return m_out.is_open() ? &m_out : nullptr; }
  /// The parent's end of the child's stderr (nullptr unless stdio::piped()).
  child_output* stderr_pipe() noexcept { return m_err.is_open() ? &m_err : nullptr; }
  /// Used by command::spawn(): hands the child the parent's ends of its piped streams.
  void set_pipes(child_stdin in, child_output out, child_output err) noexcept;

  /// Awaits the exit and reaps the child; yields its exit_status (again on later calls).
  /// Cancellation: the explicit token and the inherited one (when_any, timeout). On
  /// cancel it yields operation_canceled; with on_cancel::kill the child is first sent
  /// SIGKILL and reaped before the call returns (its pid is gone; the reap is not
  /// cancellable and waits at most ~1 s for the kernel to finish the kill, after which
  /// the orphan reaper takes it over); later waits yield ECHILD.
  /// Errors: ECHILD if the child was released; the ring's errors. Resumes on: a worker.
  task<result<exit_status>> wait(std::stop_token token = {}, on_cancel action = on_cancel::leave_running);
  /// wait() for at most `limit`; errc::timed_out after it (the child killed and
  /// reaped in the background with on_cancel::kill, the default). Any duration; a huge
  /// one saturates to "no limit" (runtime/time.hpp).
  task<result<exit_status>> wait_for(saturating_duration limit, on_cancel action = on_cancel::kill);
  /// Reaps the child if it has exited; nullopt while it runs. Never blocks.
  [[nodiscard]] result<std::optional<exit_status>> try_wait();
  /// Sends `sig` through the pidfd (no pid-reuse race). ESRCH once the child was reaped.
  result<void> kill(int sig = SIGKILL) noexcept;

  /// Writes `input` to the stdin pipe (then closes it) while reading the stdout and
  /// stderr pipes to their ends, all concurrently (no pipe deadlock whatever the sizes),
  /// then waits. A stream that is not piped is skipped. A child that exits without
  /// reading all of its input is not an error (EPIPE is ignored).
  /// Cancellation: the inherited token (when_any, timeout) ends the I/O and the wait with
  /// operation_canceled, and the child is killed and reaped as by on_cancel::kill (its pid
  /// is gone when the call returns). Data already read is discarded.
  task<result<process_output>> output(std::string input = {});

  /// Gives up the handle without reaping: the orphan reaper adopts the child.
  void release() noexcept;

 private:
  void reset_reaped(const siginfo_t& info) noexcept;
  /// SIGKILL, then reap (uncancellable, at most ~1 s; then the orphan reaper); empties.
  task<void> kill_and_reap();

  pid_t m_pid = -1;
  detail::process_fd m_pidfd;
  bool m_kill_on_drop = false;
  std::optional<exit_status> m_status;
  child_stdin m_in;
  child_output m_out;
  child_output m_err;
};

}  // namespace corio::ipc
