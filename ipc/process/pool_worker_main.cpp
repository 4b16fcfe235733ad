// The process_pool worker process: pool_worker_main() and its job loop.
//
// A worker runs its jobs on one thread and has no runtime. It maps the page it shares with the
// parent, then loops: read as many job frames as the socket has, run each complete one
// in order (skipping those the parent withdrew), and write all their results in one
// write. While a later job of the same read runs, the results already done wait in an
// outbox that a second thread writes once the oldest is 1 ms old: no result waits behind
// a slow job for more than about a millisecond, and a read of many quick jobs still costs
// one write (plus, when it holds more than one job, one wake of that thread). That thread
// blocks every signal; where it cannot be started, results are written before each later
// job instead. It exits on end-of-file (the parent shut the socket
// down), with status 1 on any socket error, and with worker_exit_protocol on a broken
// frame: a length over max_message or a function index outside the table the parent
// registered — it never calls a function pointer read from the socket. A result over
// max_message is replaced by a result_too_large failure. Frames: detail/pool_codec.hpp.
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <corio/ipc/process/detail/pool_state.hpp>

namespace corio::ipc::detail {

namespace {

bool write_fully(int fd, const std::byte* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

/// The results done but not yet written while a later job of the same read runs, and the
/// thread that writes them once the oldest is `max_wait` old. Every member but the
/// thread's loop runs on the worker's main thread; both threads write the socket only
/// under `m_mu`, so result frames go out whole and in order. The thread starts at the
/// first hold() (a worker whose reads hold one job each never starts it).
class result_outbox {
 public:
  static constexpr std::chrono::milliseconds max_wait{1};

  explicit result_outbox(int sock) : m_sock(sock) {}
  result_outbox(const result_outbox&) = delete;
  result_outbox& operator=(const result_outbox&) = delete;
  ~result_outbox() {
    {
      std::lock_guard lock(m_mu);
      m_stop = true;
    }
    m_cv.notify_one();
    if (m_thread.joinable()) {
      m_thread.join();
    }
  }

  /// Before another job of the same read: moves the results in `done` (cleared) to the
  /// outbox and makes sure the thread will write them within max_wait. False after a
  /// write error.
  bool hold(std::vector<std::byte>& done) {
    bool wake = false;
    {
      std::lock_guard lock(m_mu);
      if (m_failed) {
        return false;
      }
      if (!done.empty()) {
        if (m_pending.empty()) {
          m_pending.swap(done);  // no copy: `done` takes the empty buffer
          m_since = std::chrono::steady_clock::now();
        } else {
          m_pending.insert(m_pending.end(), done.begin(), done.end());
        }
        done.clear();
      }
      if (!m_pending.empty() && !m_armed) {
        if (!m_thread.joinable() && !start_thread()) {
          // No thread (a limit on threads or memory): write now, before the next job.
          m_failed = !write_fully(m_sock, m_pending.data(), m_pending.size());
          m_pending.clear();
          return !m_failed;
        }
        m_armed = true;
        wake = true;
      }
    }
    if (wake) {
      m_cv.notify_one();
    }
    return true;
  }

  /// At the end of a read: writes what the outbox holds, then `done` (cleared). False on
  /// a write error (this one or the thread's).
  bool flush(std::vector<std::byte>& done) {
    std::lock_guard lock(m_mu);
    if (m_failed) {
      return false;
    }
    std::vector<std::byte>& out = m_pending.empty() ? done : m_pending;
    if (!m_pending.empty()) {
      m_pending.insert(m_pending.end(), done.begin(), done.end());
    }
    m_failed = !write_fully(m_sock, out.data(), out.size());
    m_pending.clear();
    done.clear();
    return !m_failed;
  }

 private:
  /// Under m_mu: starts the writing thread with every signal blocked (signals sent to the
  /// process go to the job's thread, as before the thread existed). False if it cannot be
  /// started (the caller then writes itself).
  bool start_thread() noexcept {
    sigset_t all;
    sigset_t old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);  // the new thread inherits this mask
    bool started = true;
    try {
      m_thread = std::thread([this] { write_late(); });
    } catch (...) {  // std::system_error (EAGAIN: a thread limit), std::bad_alloc
      started = false;
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return started;
  }

  /// The thread: sleeps until hold() arms it, then writes the outbox once its oldest
  /// result is max_wait old (unless flush() wrote it first), and sleeps again.
  void write_late() {
    std::unique_lock lock(m_mu);
    for (;;) {
      m_cv.wait(lock, [this] { return m_stop || m_armed; });
      while (!m_stop && !m_pending.empty()) {
        auto due = m_since + max_wait;
        if (std::chrono::steady_clock::now() >= due) {
          m_failed = m_failed || !write_fully(m_sock, m_pending.data(), m_pending.size());
          m_pending.clear();
          break;
        }
        m_cv.wait_until(lock, due);
      }
      if (m_stop) {
        return;
      }
      m_armed = false;
    }
  }

  int m_sock;
  std::mutex m_mu;
  std::condition_variable m_cv;
  std::vector<std::byte> m_pending;  // result frames, whole, in completion order
  std::chrono::steady_clock::time_point m_since;  // when m_pending's oldest was added
  bool m_armed = false;   // the thread has results to write (or is about to look)
  bool m_stop = false;    // the loop ends: the thread returns
  bool m_failed = false;  // a write failed: the worker exits with status 1
  std::thread m_thread;
};

/// Replaces a failed job's partial output (after the header at `at`) with `text`, cut
/// to `limit` bytes.
void failure_text(std::vector<std::byte>& out, std::size_t at, std::string_view text, std::size_t limit) {
  std::size_t n = std::min(text.size(), limit);
  out.resize(at + sizeof(result_header));
  auto* p = reinterpret_cast<const std::byte*>(text.data());
  out.insert(out.end(), p, p + n);
}

/// Maps the page shared with the parent (arg: its size; fd: its memfd); nullptr if not.
worker_page* map_page(std::span<const std::byte> arg, int fd) {
  std::size_t page_bytes = 0;
  if (arg.size() != sizeof page_bytes) {
    return nullptr;
  }
  std::memcpy(&page_bytes, arg.data(), sizeof page_bytes);
  void* map = ::mmap(nullptr, page_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return map == MAP_FAILED ? nullptr : static_cast<worker_page*>(map);
}

/// The worker's loop: its socket, its shared page, and the two buffers.
class job_loop {
 public:
  job_loop(int sock, worker_page* page) : m_sock(sock), m_page(page), m_in(256 * 1024), m_outbox(sock) {
    m_out.reserve(256 * 1024);
  }

  /// Runs until end-of-file (0), a socket error (1) or a broken frame
  /// (worker_exit_protocol).
  int run() {
    for (;;) {
      int got = read_more();
      if (got <= 0) {
        return -got;
      }
      if (int rc = run_complete_frames(); rc != 0) {
        return rc;
      }
      if (!flush()) {
        return 1;
      }
    }
  }

 private:
  /// Appends what the socket has to `m_in`: 1 read something, 0 end-of-file, -1 error.
  int read_more() {
    if (m_have == m_in.size()) {
      m_in.resize(m_in.size() * 2);
    }
    for (;;) {
      ssize_t n = ::read(m_sock, m_in.data() + m_have, m_in.size() - m_have);
      if (n > 0) {
        m_have += static_cast<std::size_t>(n);
        return 1;
      }
      if (n == 0) {
        return 0;
      }
      if (errno != EINTR) {
        return -1;
      }
    }
  }

  /// Runs every complete frame in `m_in`, then keeps the incomplete tail (grown to hold
  /// its whole frame). 0, or the exit code: 1 on a write error, worker_exit_protocol on a
  /// broken frame (the results before it are written first).
  int run_complete_frames() {
    std::size_t pos = 0;
    while (m_have - pos >= sizeof(job_header)) {
      job_header h;
      std::memcpy(&h, m_in.data() + pos, sizeof h);
      if (h.len > m_page->max_message || m_page->function(h.fn) == nullptr) {
        // relaxed: read by the parent only after this process exited. Names the job.
        m_page->running.store(h.id, std::memory_order_relaxed);
        m_page->broken_frame.store(1, std::memory_order_relaxed);
        return flush() ? worker_exit_protocol : 1;
      }
      std::size_t frame = sizeof h + h.len;
      if (m_have - pos < frame) {
        if (frame > m_in.size()) {
          m_in.resize(frame);
        }
        break;
      }
      // A job after the first of this read: the results done so far go to the outbox,
      // whose thread writes them if this job runs past their first millisecond.
      if (pos > 0 && !m_outbox.hold(m_out)) {
        return 1;
      }
      run_job(h, std::span<const std::byte>(m_in.data() + pos + sizeof h, h.len));
      pos += frame;
    }
    std::memmove(m_in.data(), m_in.data() + pos, m_have - pos);
    m_have -= pos;
    return 0;
  }

  /// Runs one job (unless withdrawn) and appends its result frame to `m_out`.
  void run_job(const job_header& h, std::span<const std::byte> data) {
    std::size_t at = m_out.size();
    m_out.resize(at + sizeof(result_header));
    std::uint32_t status = 0;
    // relaxed: a late-seen bit only lets a withdrawn job run (its answer is dropped);
    // a bit is never stale: the parent clears it before this slot's next frame is
    // written to the socket we read it from (see pool_codec.hpp).
    if ((m_page->word(h.seq).load(std::memory_order_relaxed) & worker_page::mask(h.seq)) != 0) {
      status = status_withdrawn;
    } else {
      // relaxed: read by the parent only after this process died (ordered by its exit).
      m_page->running.store(h.id, std::memory_order_relaxed);
      status = call_job(h, data, at);
      m_page->running.store(0, std::memory_order_relaxed);
    }
    result_header r{static_cast<std::uint32_t>(m_out.size() - at - sizeof(result_header)), status, h.id};
    std::memcpy(m_out.data() + at, &r, sizeof r);
  }

  /// Calls the job's (registered) function; a throw becomes job_threw with the
  /// exception's text, a result over the limit result_too_large.
  std::uint32_t call_job(const job_header& h, std::span<const std::byte> data, std::size_t at) {
    std::size_t limit = std::min<std::size_t>(max_exception_text, m_page->max_message);
    try {
      m_page->function(h.fn)(data, m_out);
    } catch (const std::exception& e) {
      failure_text(m_out, at, e.what(), limit);
      return static_cast<std::uint32_t>(pool_errc::job_threw);
    } catch (...) {
      failure_text(m_out, at, "unknown exception (not derived from std::exception)", limit);
      return static_cast<std::uint32_t>(pool_errc::job_threw);
    }
    std::size_t bytes = m_out.size() - at - sizeof(result_header);
    if (bytes > m_page->max_message) {
      std::string text = "a result of " + std::to_string(bytes) + " bytes is over the pool's limit of " +
                         std::to_string(m_page->max_message) + " bytes (pool_options::max_message)";
      failure_text(m_out, at, text, m_page->max_message);
      return static_cast<std::uint32_t>(pool_errc::result_too_large);
    }
    return 0;
  }

  /// Writes every result frame gathered so far (the outbox's first). False on a write
  /// error.
  bool flush() { return m_outbox.flush(m_out); }

  int m_sock;
  worker_page* m_page;
  std::vector<std::byte> m_in;
  std::size_t m_have = 0;
  std::vector<std::byte> m_out;  // results of this read's jobs not yet handed to the outbox
  result_outbox m_outbox;
};

}  // namespace

int pool_worker_main(std::span<const std::byte> arg, std::span<const int> fds) {
  worker_page* page = map_page(arg, fds[1]);
  if (page == nullptr) {
    return 1;
  }
  job_loop loop(fds[0], page);
  return loop.run();
}

}  // namespace corio::ipc::detail
