// Pipes and FIFOs (ipc/pipe.hpp): creating a pipe pair, the capacity setting, read_exact and
// write_all, and opening a FIFO without blocking a worker (the open runs on the blocking pool and
// is cancellable).
#include <corio/ipc/pipe.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>

#include <corio/ipc/detail/exact_io.hpp>
#include <corio/runtime/blocking.hpp>
#include <corio/runtime/shield.hpp>
#include <corio/runtime/spawn.hpp>

namespace corio::ipc {

namespace {

std::error_code last_error() { return {errno, std::system_category()}; }

// The shared state of one cancellable blocking FIFO open (blocking pool job + stop
// callbacks). Stages: 0 queued, 1 running open(2), 2 done.
struct fifo_open {
  std::string path;
  int flags = 0;
  std::atomic<int> stage{0};
  std::atomic<bool> cancelled{false};

  int run() {
    // seq_cst store then load, mirrored in cancel(): a Dekker pair, so either the job
    // sees the cancel before it opens or cancel() sees the job running and unblocks it.
    stage.store(1, std::memory_order_seq_cst);
    int fd = -ECANCELED;
    if (!cancelled.load(std::memory_order_seq_cst)) {
      fd = ::open(path.c_str(), flags | O_CLOEXEC);
      if (fd < 0) {
        fd = -errno;
      }
    }
    if (cancelled.load(std::memory_order_seq_cst) && fd >= 0) {
      ::close(fd);
      fd = -ECANCELED;
    }
    // release: the stop callback's acquire load stops retrying once it sees 2.
    stage.store(2, std::memory_order_release);
    return fd;
  }

  // Set by whichever of the awaiter (cancelled, leaving) and the open task (finished)
  // comes second's counterpart: the first to exchange it to true hands the fd (if any)
  // to the other. acq_rel: the exchange orders the fd hand-off.
  std::atomic<bool> abandoned{false};

  void cancel(const std::shared_ptr<fifo_open>& self) {
    cancelled.store(true, std::memory_order_seq_cst);
    // why a thread: releasing the blocked open may take retries (up to ~100 ms); this
    // runs inside request_stop(), often on a worker, which must not sleep. The helper
    // holds the state alive and ends by itself (bounded loop).
    try {
      std::thread([self] { self->unblock(200); }).detach();
    } catch (...) {
      unblock(1);  // no thread: one non-blocking attempt here, no sleep
    }
  }

  void unblock(int tries) {
    // The counterpart end, non-blocking: a reader open always succeeds; a writer open
    // succeeds once our reader is registered (ENXIO before: retry).
    int other = (flags & O_ACCMODE) == O_RDONLY ? O_WRONLY : O_RDONLY;
    for (int i = 0; i < tries && stage.load(std::memory_order_seq_cst) != 2; ++i) {
      int fd = ::open(path.c_str(), other | O_NONBLOCK | O_CLOEXEC);
      if (fd >= 0) {
        ::close(fd);
      }
      if (stage.load(std::memory_order_acquire) == 2) {
        break;
      }
      if (i + 1 < tries) {
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
    }
  }
};

/// -errno for a failed spawn_blocking: a stop is ECANCELED, the system's refusal of a pool
/// thread its own errno (EAGAIN), the runtime's own errors (shut_down, no_runtime) ESHUTDOWN.
int errno_of_blocking_error(std::error_code e) noexcept {
  if (e == std::errc::operation_canceled) {
    return -ECANCELED;
  }
  if ((e.category() == std::generic_category() || e.category() == std::system_category()) && e.value() > 0) {
    return -e.value();
  }
  return -ESHUTDOWN;
}

/// Runs the blocking open as its own task, so that a cancelled awaiter can leave without
/// waiting for it (see open_async). Yields the fd, or -errno.
task<int> run_open(std::shared_ptr<fifo_open> state, std::stop_token token) {
  auto job = [state] { return state->run(); };  // named: see open_async
  auto r = co_await spawn_blocking(job, token);
  int fd = r ? *r : errno_of_blocking_error(r.error());
  if (state->abandoned.exchange(true, std::memory_order_acq_rel) && fd >= 0) {
    ::close(fd);  // the awaiter has left: nobody will take it
    fd = -ECANCELED;
  }
  co_return fd;
}

task<int> take(join_handle<int> opener) { co_return co_await opener; }

// Yields the token inherited by the awaiting task (nullptr if none) without suspending.
struct inherited_token_probe {
  const std::stop_token* token = nullptr;
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    token = corio::detail::inherited_token_of(h);
    return false;
  }
  const std::stop_token* await_resume() const noexcept { return token; }
};

task<result<int>> open_async(std::string path, int flags, std::stop_token token) {
  const std::stop_token* inherited = co_await inherited_token_probe{};
  auto state = std::make_shared<fifo_open>();
  state->path = std::move(path);
  state->flags = flags;
  auto unblock = [state] { state->cancel(state); };
  std::optional<std::stop_callback<decltype(unblock)>> explicit_cb;
  std::optional<std::stop_callback<decltype(unblock)>> inherited_cb;
  if (token.stop_possible()) {
    explicit_cb.emplace(token, unblock);
  }
  if (inherited != nullptr && inherited->stop_possible()) {
    inherited_cb.emplace(*inherited, unblock);
  }
  auto opener = corio::spawn(run_open(state, token));
  // The wait (not the open) is stopped by the explicit and the inherited token: a
  // cancelled open returns at once even if the blocked open(2) is never released.
  result<int> r = co_await opener.join(token);
  explicit_cb.reset();
  inherited_cb.reset();
  if (!r && r.error() != std::errc::operation_canceled) {
    co_return unexpected(r.error());  // the opening task was destroyed (shutdown): consumed
  }
  if (!r) {
    if (state->abandoned.exchange(true, std::memory_order_acq_rel)) {
      // The open task finished first: its result is there; close an fd it got.
      // shielded: our token is stopped, and the task may be a moment from publishing.
      int fd = co_await corio::shield(take(std::move(opener)));
      if (fd >= 0) {
        ::close(fd);
      }
    }
    co_return unexpected(cancelled_error());
  }
  if (*r == -ECANCELED) {
    co_return unexpected(cancelled_error());
  }
  if (*r < 0) {
    co_return unexpected(os_error(*r));
  }
  co_return *r;
}

}  // namespace

task<result<void>> pipe_reader::read_exact(std::span<std::byte> buf, std::stop_token token) const {
  return detail::read_exact_loop(*this, buf, std::move(token));
}

task<result<void>> pipe_writer::write_all(std::span<const std::byte> buf, std::stop_token token) const {
  return detail::write_all_loop(*this, buf, std::move(token));
}

result<int> pipe_writer::set_capacity(int bytes) const {
  int r = ::fcntl(fd(), F_SETPIPE_SZ, bytes);
  if (r < 0) {
    return unexpected(last_error());
  }
  return r;
}

result<pipe_pair> pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return unexpected(last_error());
  }
  return pipe_pair{pipe_reader(fds[0]), pipe_writer(fds[1])};
}

result<void> make_fifo(const std::string& path, mode_t mode) {
  if (::mkfifo(path.c_str(), mode) != 0) {
    return unexpected(last_error());
  }
  return {};
}

task<result<pipe_reader>> open_fifo_reader(std::string path, std::stop_token token) {
  auto fd = co_await open_async(std::move(path), O_RDONLY, std::move(token));
  if (!fd) {
    co_return unexpected(fd.error());
  }
  co_return pipe_reader(*fd);
}

task<result<pipe_writer>> open_fifo_writer(std::string path, std::stop_token token) {
  auto fd = co_await open_async(std::move(path), O_WRONLY, std::move(token));
  if (!fd) {
    co_return unexpected(fd.error());
  }
  co_return pipe_writer(*fd);
}

}  // namespace corio::ipc
