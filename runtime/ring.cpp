// One io_uring instance per worker (runtime/internal/ring.hpp): setup with a readable reason on
// failure, submission, and waiting with a timeout.
#include <corio/runtime/internal/ring.hpp>

#include <cerrno>
#include <cstring>

namespace corio::detail {

namespace {

std::string describe_setup_failure(int err, unsigned entries) {
  std::string cause = std::strerror(err);
  switch (err) {
    case ENOSYS:
      // Not only a kernel built without CONFIG_IO_URING: a seccomp filter may answer ENOSYS.
      return "io_uring_setup: " + cause + " (a kernel built without io_uring, or a seccomp filter that hides it)";
    case EPERM:
    case EACCES:
      return "io_uring_setup: " + cause +
             " (a seccomp filter, a container policy or the kernel.io_uring_disabled sysctl)";
    case ENOMEM:
      return "io_uring_setup: " + cause + " for " + std::to_string(entries) +
             " entries (locked-memory limit RLIMIT_MEMLOCK, or memory exhausted)";
    case EMFILE:
    case ENFILE:
      return "io_uring_setup: " + cause + ": out of file descriptors";
    default:
      return "io_uring_setup: " + cause;
  }
}

}  // namespace

std::error_code ring::open(const ring_options& options, std::string& why) noexcept {
  io_uring_params params{};
  int rc = -EINVAL;
  if (options.defer_taskrun) {
    // SINGLE_ISSUER (6.0) + DEFER_TASKRUN (6.1): task work runs only when this thread
    // enters the kernel to reap, so completions never interrupt running coroutines.
    // TASKRUN_FLAG (5.19): the kernel raises IORING_SQ_TASKRUN while such work waits
    // (task_work_pending()).
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    rc = io_uring_queue_init_params(options.entries, &m_ring, &params);
    m_taskrun_flag = rc == 0;
    if (rc == -EINVAL) {
      // Every kernel with DEFER_TASKRUN takes the flag too; a patched one might not.
      params = io_uring_params{};
      params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
      rc = io_uring_queue_init_params(options.entries, &m_ring, &params);
    }
    m_defer_taskrun = rc == 0;
  }
  if (rc == -EINVAL) {
    // Older kernels: COOP_TASKRUN (5.19) avoids IPIs; else a plain ring.
    params = io_uring_params{};
    params.flags = IORING_SETUP_COOP_TASKRUN;
    rc = io_uring_queue_init_params(options.entries, &m_ring, &params);
    if (rc == -EINVAL) {
      params = io_uring_params{};
      rc = io_uring_queue_init_params(options.entries, &m_ring, &params);
    }
  }
  if (rc < 0) {
    why = describe_setup_failure(-rc, options.entries);
    if (rc == -EPERM || rc == -EACCES || rc == -ENOSYS) {
      return make_error_code(errc::io_uring_refused);
    }
    return os_error(rc);
  }
  m_open = true;
  if (io_uring_probe* probe = io_uring_get_probe_ring(&m_ring)) {
    for (unsigned op = 0; op <= probe->last_op && op < 256; ++op) {
      m_supported[op] = io_uring_opcode_supported(probe, static_cast<int>(op)) != 0;
    }
    io_uring_free_probe(probe);
  }
  return {};
}

void ring::close() noexcept {
  if (m_open) {
    io_uring_queue_exit(&m_ring);
    m_open = false;
  }
}

void ring::submit() noexcept {
  // With DEFER_TASKRUN, completions are posted only when we enter the kernel with
  // GETEVENTS; submit_and_get_events does both in one io_uring_enter.
  ++m_enters;
  int rc = m_defer_taskrun ? io_uring_submit_and_get_events(&m_ring) : io_uring_submit(&m_ring);
  if (rc >= 0) {
    m_sqes_submitted += static_cast<unsigned>(rc);
    m_unsubmitted = m_unsubmitted > static_cast<unsigned>(rc) ? m_unsubmitted - static_cast<unsigned>(rc) : 0;
  }
  // -EBUSY/-EAGAIN (CQ overflow, no memory) and -EINTR: the SQEs stay queued and
  // belong to the kernel; the next submit retries them.
}

void ring::submit_and_wait(long long timeout_ns) noexcept {
  io_uring_cqe* cqe = nullptr;
  int rc = 0;
  unsigned before = io_uring_sq_ready(&m_ring);
  ++m_enters;
  if (timeout_ns < 0) {
    rc = io_uring_submit_and_wait(&m_ring, 1);
  } else {
    __kernel_timespec ts{};
    ts.tv_sec = timeout_ns / 1000000000LL;
    ts.tv_nsec = timeout_ns % 1000000000LL;
    rc = io_uring_submit_and_wait_timeout(&m_ring, &cqe, 1, &ts, nullptr);
  }
  unsigned after = io_uring_sq_ready(&m_ring);
  if (before > after) {
    m_sqes_submitted += before - after;
  }
  m_unsubmitted = after;
  (void)rc;  // -ETIME and -EINTR are normal wake-ups
}

}  // namespace corio::detail
