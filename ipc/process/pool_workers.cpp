// The lifecycle of a process_pool's workers, parent side: forking one (with its socket
// and shared page), the writer task that drains its outbox, the reader task that takes
// its results, recovery when it dies (fail the job it was running, requeue the rest,
// fork a replacement) and the shutdown body that reaps them all.
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include <corio/ipc/process/detail/pool_state.hpp>
#include <corio/ipc/process/fork.hpp>
#include <corio/runtime/io.hpp>
#include <corio/runtime/spawn.hpp>

namespace corio::ipc::detail {

namespace {

task<void> writer_loop(std::shared_ptr<pool_state> s, std::shared_ptr<pool_worker> w) {
  std::vector<outbox_piece> pieces;
  for (;;) {
    {
      std::lock_guard lock(s->mu);
      if (!pieces.empty() && !pieces.front().keep && w->spare.capacity() < pieces.front().owned.capacity()) {
        w->spare = std::move(pieces.front().owned);  // its capacity serves the next frames
        w->spare.clear();
      }
      pieces.clear();  // drops the borrowed inputs' owners
      if (w->outbox.empty() || !w->alive) {
        w->writing = false;
        co_return;
      }
      pieces.swap(w->outbox);
    }
    for (const outbox_piece& piece : pieces) {
      std::span<const std::byte> rest = piece.bytes();
      while (!rest.empty()) {
        auto n = co_await io::write(w->sock.get(), rest);
        if (!n) {
          std::lock_guard lock(s->mu);
          w->writing = false;  // the reader sees the dead worker and recovers
          co_return;
        }
        rest = rest.subspan(*n);
      }
    }
  }
}

/// Starts a replacement for the dead worker `old` in its slot; false if it failed.
task<bool> replace_worker(std::shared_ptr<pool_state> s, std::shared_ptr<pool_worker> old) {
  // recover() counted this replacement in `replacing`; a replacement that ends before the
  // section below (an exception, or its frame destroyed with the runtime) uncounts it
  // here, or queue_batch would wait for it for ever instead of failing with no_workers.
  struct uncount_on_exit {
    pool_state& s;
    bool armed = true;
    ~uncount_on_exit() {
      if (armed) {
        std::lock_guard lock(s.mu);
        --s.replacing;
      }
    }
  } uncount{*s};
  std::size_t window = 0;
  std::size_t max_message = 0;
  {
    std::lock_guard lock(s->mu);
    window = s->window;
    max_message = s->max_message;
  }
  auto fresh = co_await start_worker(window, max_message);
  worker_list kick;
  bool ok = false;
  {
    std::lock_guard lock(s->mu);
    --s->replacing;
    uncount.armed = false;
    if (!fresh || s->closing) {
      // With another replacement still being forked, the pending jobs wait for it.
      if (!s->any_alive_locked() && (s->closing || s->replacing == 0)) {
        s->fail_pending_locked(s->closing ? pool_errc::shut_down : pool_errc::no_workers);
      } else {
        kick = s->pump_locked();  // the survivors take what the dead worker left
      }
    } else {
      s->install_locked(*fresh, old);
      (*fresh)->reader = corio::spawn(reader_loop(s, *fresh));
      kick = s->pump_locked();
      ok = true;
    }
  }
  kick_writers(s, std::move(kick));
  co_return ok;
}

/// Why a reader stopped reading its worker's socket.
enum class reader_end {
  crashed,         ///< end-of-file or a socket error (ECONNRESET, ...): the worker died
  protocol_error,  ///< a result frame that matches no in-flight job: kill, then as crashed
  stopped,         ///< the read was cancelled (runtime shutdown): no replacement
};

/// Settles every job the dead worker `w` held (under mu): its running job fails with
/// worker_crashed and `death` as its detail, a cancelled call's are finished, the rest go
/// back to the front of `pending` — or, when `closing`, every one fails with shut_down.
void settle_dead_worker_locked(pool_state& s, pool_worker& w, bool closing, const std::string& death) {
  std::uint64_t crashed = w.running_job();
  std::vector<pool_job> again;
  for (const pool_job& job : w.inflight) {
    if (job.batch == nullptr) {
      s.finish_locked(job, status_cancelled, {});  // a cancelled call's: never rerun
    } else if (closing) {
      s.finish_locked(job, static_cast<std::uint32_t>(pool_errc::shut_down), {});
    } else if (job.id == crashed) {
      s.finish_locked(job, static_cast<std::uint32_t>(pool_errc::worker_crashed), std::as_bytes(std::span(death)));
    } else {
      again.push_back(job);
    }
  }
  w.inflight.clear();
  w.outbox.clear();
  s.pending.insert(s.pending.begin(), again.begin(), again.end());
}

/// Reaps the dead (or killed) worker `w`; says how it ended, for its crashed job.
task<std::string> reap_dead_worker(pool_worker& w, reader_end why) {
  std::string who = "worker " + std::to_string(w.proc.id());
  auto status = co_await w.proc.wait();  // dead: its socket ended (or we killed it)
  if (why == reader_end::protocol_error) {
    co_return who + " broke the frame protocol and was killed";
  }
  // relaxed: the worker is dead; its stores are ordered before its exit, which we saw.
  if (w.page->broken_frame.load(std::memory_order_relaxed) != 0) {
    co_return who + " read a broken job frame and exited (code " + std::to_string(worker_exit_protocol) + ")";
  }
  co_return status ? who + " ended with " + status->to_string() : who + " died";
}

/// After a worker's socket ended: reap it, fail its running job, requeue the rest (and
/// hand them to the survivors at once) and start a replacement (or, when closing or
/// stopped, fail everything it held).
task<void> recover(std::shared_ptr<pool_state> s, std::shared_ptr<pool_worker> w, reader_end why) {
  if (why == reader_end::protocol_error) {
    kill_worker(*w);
  }
  bool closing = why == reader_end::stopped;
  if (!closing) {
    std::lock_guard lock(s->mu);
    closing = s->closing;
  }
  std::string death;
  if (!closing || why == reader_end::protocol_error) {
    death = co_await reap_dead_worker(*w, why);  // dead before its progress word is read
  }
  worker_list kick;
  {
    std::lock_guard lock(s->mu);
    w->alive = false;
    closing = s->closing || why == reader_end::stopped;
    // why here: counted in the same critical section that fails the crashed job, so its
    // caller sees replaced() include this death (the replacement is forked later).
    s->replaced += closing ? 0 : 1;
    s->replacing += closing ? 0 : 1;  // (same section as alive = false: see queue_batch)
    settle_dead_worker_locked(*s, *w, closing, death);
    if (s->closing) {
      s->fail_pending_locked(pool_errc::shut_down);
    } else {
      kick = s->pump_locked();  // idle survivors must not wait for the replacement
    }
  }
  kick_writers(s, std::move(kick));
  ::shutdown(w->sock.get(), SHUT_RDWR);
  if (!closing) {
    (void)co_await replace_worker(s, w);
  }
}

/// Whether `h` is the frame a worker answering in order would send next: the answer to
/// its next job, a known status, a length within the limit.
bool expected_result(const pool_state& s, const pool_worker& w, const result_header& h) noexcept {
  bool known = h.status == 0 || h.status == static_cast<std::uint32_t>(pool_errc::job_threw) ||
               h.status == static_cast<std::uint32_t>(pool_errc::result_too_large) || h.status == status_withdrawn;
  return known && h.len <= s.max_message && !w.inflight.empty() && w.inflight.front().id == h.id;
}

/// Completes every whole result frame in buf[0, have) (under mu); returns how many bytes
/// it consumed, and sets `bad` on a frame that expected_result() refuses. Grows `buf` to
/// hold an incomplete frame whole.
std::size_t take_results_locked(pool_state& s, pool_worker& w, std::vector<std::byte>& buf, std::size_t have,
                                bool& bad) {
  std::size_t pos = 0;
  while (have - pos >= sizeof(result_header)) {
    result_header h;
    std::memcpy(&h, buf.data() + pos, sizeof h);
    if (!expected_result(s, w, h)) {
      bad = true;
      break;
    }
    std::size_t frame = sizeof h + h.len;
    if (have - pos < frame) {
      if (frame > buf.size()) {
        buf.resize(frame);
      }
      break;
    }
    pool_job job = w.inflight.front();
    w.inflight.pop_front();
    if (job.batch == nullptr) {
      w.clear_withdrawn(job.seq);  // (set or not: a cancelled call's job)
    }
    s.finish_locked(job, h.status, std::span<const std::byte>(buf.data() + pos + sizeof h, h.len));
    pos += frame;
  }
  return pos;
}

}  // namespace

void kick_writers(const std::shared_ptr<pool_state>& s, worker_list kick) {
  for (auto& w : kick) {
    corio::spawn(writer_loop(s, std::move(w))).detach();
  }
}

result<void> make_page(pool_worker& w, std::size_t window, std::size_t max_message, process_fd& memfd) {
  std::size_t page_bytes = worker_page::bytes_for(window);
  memfd = process_fd(::memfd_create("corio-pool-progress", MFD_CLOEXEC));
  if (!memfd.is_open() || ::ftruncate(memfd.get(), static_cast<off_t>(page_bytes)) != 0) {
    return unexpected(os_error(-errno));
  }
  void* map = ::mmap(nullptr, page_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
  if (map == MAP_FAILED) {
    return unexpected(os_error(-errno));
  }
  w.page = static_cast<worker_page*>(map);  // zero-filled by ftruncate: no job withdrawn
  w.page->bits = worker_page::bits_for(window);
  w.page->max_message = max_message;
  w.page_bytes = page_bytes;
  return {};
}

task<result<std::shared_ptr<pool_worker>>> start_worker(std::size_t window, std::size_t max_message) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    co_return unexpected(os_error(-errno));
  }
  process_fd ours(sv[0]);
  process_fd theirs(sv[1]);
  auto w = std::make_shared<pool_worker>();
  process_fd memfd;
  if (auto made = make_page(*w, window, max_message, memfd); !made) {
    co_return unexpected(made.error());
  }
  std::vector<int> fds{theirs.get(), memfd.get()};
  std::vector<std::byte> arg(sizeof w->page_bytes);
  std::memcpy(arg.data(), &w->page_bytes, sizeof w->page_bytes);
  auto c = co_await fork_raw(&pool_worker_main, std::move(arg), std::move(fds));
  if (!c) {
    co_return unexpected(c.error());
  }
  w->proc = std::move(*c);
  w->sock = std::move(ours);
  co_return w;
}

void kill_worker(pool_worker& w) noexcept {
  // Through the pidfd: no pid-reuse race; ESRCH once it is dead (harmless). The fd stays
  // open for the pool_worker's lifetime (nothing closes it while `w` is referenced).
  if (w.proc.pidfd() >= 0) {
    ::syscall(SYS_pidfd_send_signal, w.proc.pidfd(), SIGKILL, nullptr, 0);
  }
}

task<void> reader_loop(std::shared_ptr<pool_state> s, std::shared_ptr<pool_worker> w) {
  std::vector<std::byte> buf(256 * 1024);
  std::size_t have = 0;
  reader_end why = reader_end::crashed;
  for (;;) {
    if (have == buf.size()) {
      buf.resize(buf.size() * 2);
    }
    auto n = co_await io::read(w->sock.get(), std::span(buf).subspan(have));
    if (!n) {
      // Cancelled (runtime shutdown) is not a crash: forking replacements then would be
      // wrong. Any other error (ECONNRESET, ...) is the worker's death.
      if (n.error() == std::errc::operation_canceled || n.error() == corio::errc::shut_down) {
        why = reader_end::stopped;
      }
      break;
    }
    if (*n == 0) {
      break;
    }
    have += *n;
    bool bad = false;
    std::size_t pos = 0;
    worker_list kick;
    {
      std::lock_guard lock(s->mu);
      pos = take_results_locked(*s, *w, buf, have, bad);
      if (!bad) {
        kick = s->pump_locked();  // (a bad worker gets nothing more: recover() pumps)
      }
    }
    kick_writers(s, std::move(kick));
    if (bad) {
      why = reader_end::protocol_error;
      break;
    }
    std::memmove(buf.data(), buf.data() + pos, have - pos);
    have -= pos;
  }
  co_await recover(s, w, why);
}

namespace {

/// Unpublishes the shutdown body's `idle` when its frame goes, also when a runtime
/// destroys the body while it waits: the pool (which would signal it) outlives the frame.
struct idle_guard {
  pool_state& s;
  completion_signal& idle;
  idle_guard(pool_state& state, completion_signal& signal) noexcept : s(state), idle(signal) {}
  idle_guard(const idle_guard&) = delete;
  idle_guard& operator=(const idle_guard&) = delete;
  ~idle_guard() {
    std::lock_guard lock(s.mu);
    if (s.idle == &idle) {
      s.idle = nullptr;
    }
  }
};

}  // namespace

task<void> shutdown_body(std::shared_ptr<pool_state> s) {
  // Waits for every job, closes the sockets, joins the readers, reaps the workers,
  // then sets shutdown_done.
  completion_signal idle;
  idle_guard unpublish{*s, idle};
  bool wait_idle = false;
  {
    std::lock_guard lock(s->mu);
    if (s->outstanding > 0) {
      s->idle = &idle;
      wait_idle = true;
    }
  }
  if (wait_idle) {
    co_await idle;
  }
  worker_list workers;
  {
    std::lock_guard lock(s->mu);
    s->closing = true;
    workers = s->workers;
  }
  for (auto& w : workers) {
    ::shutdown(w->sock.get(), SHUT_WR);  // the worker reads end-of-file and exits
  }
  for (auto& w : workers) {
    if (w->reader.valid()) {
      try {
        co_await std::move(w->reader);  // the only awaiter of this handle
      } catch (...) {
        // errc::shut_down: the runtime is going away; the reap below still runs.
      }
    }
    (void)co_await w->proc.wait();
    std::lock_guard lock(s->mu);
    w->alive = false;  // reaped: its pid may be reused (worker_pids() leaves it out)
  }
  s->shutdown_done.set();
}

}  // namespace corio::ipc::detail
