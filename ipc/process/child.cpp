// corio::ipc::child: awaiting a child's exit (IORING_OP_WAITID on its pidfd, or the
// fallback: a poll of the pidfd, then waitid), try_wait, kill, output(), and handing a
// dropped child to the orphan reaper; plus exit_status::to_string and the stdio pipes'
// write_all / read_to_end. The design: child.hpp and child_stdio.hpp.
#include <corio/ipc/process/child.hpp>

#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include <corio/ipc/process/command.hpp>
#include <corio/ipc/process/detail/exit_wait.hpp>
#include <corio/ipc/process/detail/orphan_reaper.hpp>
#include <corio/runtime/io_op.hpp>
#include <corio/runtime/port.hpp>
#include <corio/runtime/shield.hpp>
#include <corio/runtime/timeout.hpp>
#include <corio/runtime/when_all.hpp>

namespace corio::ipc {

namespace detail {

void process_fd::close() noexcept {
  if (m_fd >= 0) {
    ::close(std::exchange(m_fd, -1));
  }
}

namespace {

/// Set by set_exit_wait(force_pidfd_poll) (tests). relaxed: an independent flag read
/// at the start of each wait; no data is published with it.
std::atomic<bool> g_force_pidfd_poll{false};

/// Whether exits are awaited with IORING_OP_WAITID (Linux 6.7+; the port's probe).
bool ring_has_waitid() noexcept {
  return !g_force_pidfd_poll.load(std::memory_order_relaxed) && port::features().waitid;
}

/// One reap of the pidfd: 1 reaped (info filled), 0 still running, <0 -errno.
int reap_now(int pidfd, siginfo_t& info) noexcept {
  info = siginfo_t{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG) != 0) {
    return -errno;
  }
  return info.si_pid != 0 ? 1 : 0;
}

/// Awaits the exit of the child behind `pidfd` and reaps it (fills `info`).
task<result<void>> await_exit(int pidfd, siginfo_t* info, std::stop_token token) {
  if (ring_has_waitid()) {
    *info = siginfo_t{};
    auto r = co_await io_op(
        [pidfd, info](io_uring_sqe* sqe) {
          port::uring::prep_waitid(sqe, P_PIDFD, pidfd, info, WEXITED);
        },
        token);
    if (!r) {
      co_return unexpected(r.error());
    }
    co_return result<void>{};
  }
  for (;;) {  // fallback: POLLIN on the pidfd at exit (Linux 5.3+), then reap
    int rc = reap_now(pidfd, *info);
    if (rc < 0) {
      co_return unexpected(os_error(rc));
    }
    if (rc == 1) {
      co_return result<void>{};
    }
    auto r = co_await io::poll(pidfd, POLLIN, token);
    if (!r) {
      co_return unexpected(r.error());
    }
  }
}

}  // namespace

void set_exit_wait(exit_wait mode) noexcept {
  // relaxed: see g_force_pidfd_poll.
  g_force_pidfd_poll.store(mode == exit_wait::force_pidfd_poll, std::memory_order_relaxed);
}

bool exit_wait_uses_waitid() noexcept { return ring_has_waitid(); }

namespace {

task<result<void>> feed_stdin(child_stdin* in, std::string input) {
  if (in == nullptr) {
    co_return result<void>{};
  }
  auto r = co_await in->write_all(std::as_bytes(std::span(input.data(), input.size())));
  in->close();
  if (!r && r.error() != std::errc::broken_pipe) {
    co_return r;
  }
  co_return result<void>{};
}

task<result<std::string>> drain(child_output* out) {
  std::string text;
  if (out != nullptr) {
    auto r = co_await out->read_to_end(text);
    if (!r) {
      co_return unexpected(r.error());
    }
  }
  co_return text;
}

}  // namespace
}  // namespace detail

std::string exit_status::to_string() const {
  if (auto c = code()) {
    return "exit code " + std::to_string(*c);
  }
  int sig = m_value;
  const char* name = ::strsignal(sig);
  return "signal " + std::to_string(sig) + " (" + (name ? name : "?") + ")" + (core_dumped() ? ", core dumped" : "");
}

task<result<void>> child_stdin::write_all(std::span<const std::byte> data, std::stop_token token) {
  while (!data.empty()) {
    auto n = co_await write(data, token);
    if (!n) {
      co_return unexpected(n.error());
    }
    data = data.subspan(*n);
  }
  co_return result<void>{};
}

task<result<std::size_t>> child_output::read_to_end(std::string& out, std::stop_token token) {
  std::size_t total = 0;
  constexpr std::size_t chunk = 64 * 1024;  // one pipe's default capacity
  for (;;) {
    std::size_t old = out.size();
    out.resize(old + chunk);
    auto n = co_await read(std::as_writable_bytes(std::span(out.data() + old, chunk)), token);
    out.resize(old + (n ? *n : 0));
    if (!n) {
      co_return unexpected(n.error());
    }
    if (*n == 0) {
      co_return total;
    }
    total += *n;
  }
}

child::child(child&& o) noexcept
    : m_pid(std::exchange(o.m_pid, -1)),
      m_pidfd(std::move(o.m_pidfd)),
      m_kill_on_drop(o.m_kill_on_drop),
      m_status(o.m_status),
      m_in(std::move(o.m_in)),
      m_out(std::move(o.m_out)),
      m_err(std::move(o.m_err)) {}

child& child::operator=(child&& o) noexcept {
  if (this != &o) {
    release();
    m_pid = std::exchange(o.m_pid, -1);
    m_pidfd = std::move(o.m_pidfd);
    m_kill_on_drop = o.m_kill_on_drop;
    m_status = o.m_status;
    m_in = std::move(o.m_in);
    m_out = std::move(o.m_out);
    m_err = std::move(o.m_err);
  }
  return *this;
}

child::~child() { release(); }

void child::set_pipes(child_stdin in, child_output out, child_output err) noexcept {
  m_in = std::move(in);
  m_out = std::move(out);
  m_err = std::move(err);
}

void child::release() noexcept {
  if (!m_pidfd.is_open()) {
    return;
  }
  if (!m_status && m_kill_on_drop) {
    (void)kill(SIGKILL);
  }
  if (m_status) {
    m_pidfd.close();  // already reaped
  } else {
    detail::orphan_reaper_adopt(m_pidfd.release());
  }
}

void child::reset_reaped(const siginfo_t& info) noexcept {
  m_status = exit_status::from_siginfo(info);
}

result<void> child::kill(int sig) noexcept {
  if (!m_pidfd.is_open() || m_status) {
    return unexpected(os_error(-ESRCH));
  }
  if (::syscall(SYS_pidfd_send_signal, m_pidfd.get(), sig, nullptr, 0) != 0) {
    return unexpected(os_error(-errno));
  }
  return {};
}

result<std::optional<exit_status>> child::try_wait() {
  if (m_status) {
    return m_status;
  }
  if (!m_pidfd.is_open()) {
    return unexpected(os_error(-ECHILD));
  }
  siginfo_t info;
  int rc = detail::reap_now(m_pidfd.get(), info);
  if (rc < 0) {
    return unexpected(os_error(rc));
  }
  if (rc == 1) {
    reset_reaped(info);
    return m_status;
  }
  return std::optional<exit_status>{};
}

task<result<exit_status>> child::wait(std::stop_token token, on_cancel action) {
  if (m_status) {
    co_return *m_status;
  }
  if (!m_pidfd.is_open()) {
    co_return unexpected(os_error(-ECHILD));
  }
  siginfo_t info{};
  auto r = co_await detail::await_exit(m_pidfd.get(), &info, std::move(token));
  if (!r) {
    if (r.error() == std::errc::operation_canceled && action == on_cancel::kill) {
      co_await kill_and_reap();
    }
    co_return unexpected(r.error());
  }
  reset_reaped(info);
  co_return *m_status;
}

task<void> child::kill_and_reap() {
  if (!m_pidfd.is_open() || m_status) {
    co_return;
  }
  (void)kill(SIGKILL);
  // why shielded: we are cancelled, yet the pid must be gone when the cancelled call
  // returns. A SIGKILLed process exits in microseconds unless stuck in the kernel (D
  // state): bounded, and past the bound the orphan reaper takes over.
  siginfo_t info{};
  auto reaped = co_await corio::shield(
      corio::timeout(detail::await_exit(m_pidfd.get(), &info, {}), std::chrono::seconds(1)));
  if (reaped) {
    m_pidfd.close();
  } else {
    release();
  }
  m_pid = -1;  // the handle empties: later waits yield ECHILD
}

task<result<exit_status>> child::wait_for(saturating_duration limit, on_cancel action) {
  co_return co_await corio::timeout(wait({}, action), limit.get());
}

task<result<process_output>> child::output(std::string input) {
  auto [fed, out, err] = co_await when_all(detail::feed_stdin(stdin_pipe(), std::move(input)),
                                           detail::drain(stdout_pipe()), detail::drain(stderr_pipe()));
  m_out.close();
  m_err.close();
  // A stop (when_any, timeout) that ended the I/O also ends this wait: on_cancel::kill.
  auto status = co_await wait({}, on_cancel::kill);
  if (!status) {
    co_return unexpected(status.error());
  }
  if (!fed) {
    co_return unexpected(fed.error());
  }
  if (!out) {
    co_return unexpected(out.error());
  }
  if (!err) {
    co_return unexpected(err.error());
  }
  co_return process_output{*status, std::move(*out), std::move(*err)};
}

}  // namespace corio::ipc
