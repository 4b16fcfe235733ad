// corio::ipc::process_pool (see process_pool.hpp for the design).
//
// Parent-side invariants, all under pool_state::mu:
// - every job of a live batch is in exactly one place: `pending`, one worker's
//   `inflight` (in the order that worker runs them), or completed;
// - a cancelled batch's jobs are completed (status_cancelled) at once: its pending jobs
//   are dropped, its in-flight jobs stay in `inflight` with `batch == nullptr` (their
//   answers are discarded, their withdrawal bits set) — so nothing points at the batch
//   after the cancel, and the caller may free it;
// - a worker answers its jobs in order, so a result frame always completes
//   `inflight.front()`;
// - `outstanding` counts jobs not yet completed; shutdown() waits for it to reach 0;
// - a result frame that does not match `inflight.front()` is a protocol error: the worker
//   is killed and recovered as crashed (never trusted further);
// - every time jobs go back to `pending` (a worker died), pump_locked() runs at once, so
//   surviving idle workers take them without waiting for a replacement.
// A worker's socket is shut down (never closed) while tasks may still use it; the fd is
// closed when the last reference (reader, writer, slot) to the pool_worker goes.
#include <corio/ipc/process/process_pool.hpp>

#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <deque>
#include <mutex>

#include <corio/ipc/process/child.hpp>
#include <corio/ipc/process/fork.hpp>
#include <corio/runtime/detail/stop_link.hpp>
#include <corio/runtime/io.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/sync/event.hpp>

namespace corio::ipc {

namespace {

class pool_category_impl : public std::error_category {
 public:
  const char* name() const noexcept override { return "corio.process_pool"; }
  std::string message(int c) const override {
    switch (static_cast<pool_errc>(c)) {
      case pool_errc::worker_crashed:
        return "the worker process died (crashed or was killed) while running this job";
      case pool_errc::job_threw:
        return "the job function threw an exception in the worker process";
      case pool_errc::shut_down:
        return "the process pool was shut down before the job finished";
      case pool_errc::no_workers:
        return "no worker process could be started";
    }
    return "unknown process_pool error";
  }
};

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

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // vDSO: no syscall
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U + static_cast<std::uint64_t>(ts.tv_nsec);
}

/// Replaces a thrown job's partial output (after the header at `at`) with `what`.
void thrown_text(std::vector<std::byte>& out, std::size_t at, const char* what) {
  std::size_t n = std::min(std::strlen(what), detail::max_exception_text);
  out.resize(at + sizeof(detail::result_header));
  auto* p = reinterpret_cast<const std::byte*>(what);
  out.insert(out.end(), p, p + n);
}

/// The worker process: a blocking loop over the socket (see the header comment).
int pool_worker_main(std::span<const std::byte> arg, std::span<const int> fds) {
  int sock = fds[0];
  std::size_t page_bytes = 0;
  if (arg.size() != sizeof page_bytes) {
    return 1;
  }
  std::memcpy(&page_bytes, arg.data(), sizeof page_bytes);
  void* map = ::mmap(nullptr, page_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
  if (map == MAP_FAILED) {
    return 1;
  }
  auto* page = static_cast<detail::worker_page*>(map);
  std::vector<std::byte> in(256 * 1024);
  std::vector<std::byte> out;
  out.reserve(256 * 1024);
  std::size_t have = 0;
  for (;;) {
    if (have == in.size()) {
      in.resize(in.size() * 2);
    }
    ssize_t n = ::read(sock, in.data() + have, in.size() - have);
    if (n == 0) {
      return 0;
    }
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return 1;
    }
    have += static_cast<std::size_t>(n);
    std::size_t pos = 0;
    std::uint64_t last_flush = monotonic_ns();
    while (have - pos >= sizeof(detail::job_header)) {
      detail::job_header h;
      std::memcpy(&h, in.data() + pos, sizeof h);
      std::size_t frame = sizeof h + h.len;
      if (have - pos < frame) {
        if (frame > in.size()) {
          in.resize(frame);
        }
        break;
      }
      std::size_t at = out.size();
      out.resize(at + sizeof(detail::result_header));
      std::uint32_t status = 0;
      // relaxed: a late-seen bit only lets a withdrawn job run (its answer is dropped);
      // a bit is never stale: the parent clears it before this slot's next frame is
      // written to the socket we read it from (see pool_codec.hpp).
      if ((page->word(h.seq).load(std::memory_order_relaxed) & detail::worker_page::mask(h.seq)) != 0) {
        status = detail::status_withdrawn;
      } else {
        // relaxed: read by the parent only after this process died (ordered by its exit).
        page->running.store(h.id, std::memory_order_relaxed);
        try {
          auto fn = reinterpret_cast<pool_job_fn>(static_cast<std::uintptr_t>(h.fn));
          fn(std::span<const std::byte>(in.data() + pos + sizeof h, h.len), out);
        } catch (const std::exception& e) {
          status = static_cast<std::uint32_t>(pool_errc::job_threw);
          thrown_text(out, at, e.what());
        } catch (...) {
          status = static_cast<std::uint32_t>(pool_errc::job_threw);
          thrown_text(out, at, "unknown exception (not derived from std::exception)");
        }
        page->running.store(0, std::memory_order_relaxed);
      }
      detail::result_header r{static_cast<std::uint32_t>(out.size() - at - sizeof(detail::result_header)), status, h.id};
      std::memcpy(out.data() + at, &r, sizeof r);
      pos += frame;
      // Slow jobs: answer what is done every millisecond instead of after the whole read
      // (a result must not wait for the jobs queued behind it, nor a cancel for them).
      std::uint64_t now = monotonic_ns();
      if (now - last_flush >= 1'000'000) {
        if (!write_fully(sock, out.data(), out.size())) {
          return 1;
        }
        out.clear();
        last_flush = now;
      }
    }
    std::memmove(in.data(), in.data() + pos, have - pos);
    have -= pos;
    if (!write_fully(sock, out.data(), out.size())) {
      return 1;
    }
    out.clear();
  }
}

}  // namespace

const std::error_category& pool_category() noexcept {
  static const pool_category_impl cat;
  return cat;
}

namespace detail {

struct pool_job {
  std::uint64_t id;
  pool_batch* batch;   // nullptr once the job's call was cancelled (its answer is dropped)
  std::size_t index;
  std::uint32_t seq = 0;  // the frame's number on its worker's socket (set when sent)
};

struct pool_worker {
  child proc;
  process_fd sock;
  worker_page* page = nullptr;
  std::size_t page_bytes = 0;
  std::uint32_t next_seq = 0;      // guarded by pool_state::mu
  std::deque<pool_job> inflight;   // guarded by pool_state::mu
  std::vector<std::byte> outbox;   // guarded by pool_state::mu
  bool writing = false;            // guarded by pool_state::mu: a writer task owns the socket's write side
  bool alive = true;               // guarded by pool_state::mu
  join_handle<void> reader;        // set once by the task that starts the worker

  [[nodiscard]] std::uint64_t running_job() const noexcept {
    // relaxed: the worker is dead; its last store is ordered before its exit, which we saw.
    return page->running.load(std::memory_order_relaxed);
  }
  /// Asks the worker to skip the job sent as frame `seq` (under pool_state::mu).
  void withdraw(std::uint32_t seq) noexcept {
    // relaxed: no data hangs on the bit; seen late, the job merely runs (see the worker).
    page->word(seq).fetch_or(worker_page::mask(seq), std::memory_order_relaxed);
  }
  /// Clears frame `seq`'s bit once its answer is in, before the slot is reused (under mu).
  void clear_withdrawn(std::uint32_t seq) noexcept {
    // relaxed: the worker reads this slot again only after reading frame seq + bits,
    // which is written to the socket after this (the write syscall orders it).
    page->word(seq).fetch_and(~worker_page::mask(seq), std::memory_order_relaxed);
  }
  ~pool_worker() {
    if (page != nullptr) {
      ::munmap(page, page_bytes);
    }
  }
};

struct pool_state {
  std::mutex mu;
  std::vector<std::shared_ptr<pool_worker>> workers;  // one slot per worker, replaced in place
  std::deque<pool_job> pending;
  std::uint64_t next_id = 1;
  std::size_t window = 4096;
  std::size_t outstanding = 0;
  std::size_t replaced = 0;
  bool closing = false;
  bool shutdown_started = false;      // the first shutdown() spawned the shutdown body
  completion_signal* idle = nullptr;  // the shutdown body waits on it for outstanding == 0
  corio::event shutdown_done{event_reset::manual};  // set once the workers are reaped

  /// Records the result of job `index` of `b` (under mu); signals the batch when it was
  /// the last one.
  static void complete_locked(pool_batch* b, std::size_t index, std::uint32_t status,
                              std::span<const std::byte> payload) {
    if (status == status_withdrawn) {
      status = status_cancelled;  // (only an orphan is ever withdrawn; be safe)
    }
    if (b->sink != nullptr) {
      b->sink(b->sink_ctx, index, status, payload);
    } else {
      b->out_off[index] = b->out.size();
      b->out_len[index] = static_cast<std::uint32_t>(payload.size());
      b->out.insert(b->out.end(), payload.begin(), payload.end());
      b->status[index] = status;
      b->order.push_back(index);
    }
    if (--b->remaining == 0) {
      if (b->sink != nullptr) {
        b->sink(b->sink_ctx, b->size(), 0, {});  // the end of the stream
      }
      b->done.signal();  // the owner may now destroy *b: not touched again
    }
  }

  /// Records a job's end (under mu): its batch's result (unless the call was cancelled)
  /// and the pool's count.
  void finish_locked(const pool_job& job, std::uint32_t status, std::span<const std::byte> payload) {
    if (job.batch != nullptr) {
      complete_locked(job.batch, job.index, status, payload);
    }
    if (--outstanding == 0 && idle != nullptr) {
      std::exchange(idle, nullptr)->signal();
    }
  }

  /// Cancels every job of `b` that has no result yet (under mu): pending ones are
  /// dropped, in-flight ones withdrawn and unlinked from `b`; each completes with
  /// status_cancelled. Afterwards nothing in the pool points at `b`.
  void cancel_batch_locked(pool_batch* b) {
    if (b->remaining == 0) {
      return;
    }
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->batch == b) {
        pool_job job = *it;
        it = pending.erase(it);
        finish_locked(job, status_cancelled, {});
      } else {
        ++it;
      }
    }
    for (auto& w : workers) {
      for (pool_job& job : w->inflight) {
        if (job.batch == b) {
          complete_locked(b, job.index, status_cancelled, {});
          job.batch = nullptr;  // the answer, when it comes, only counts down `outstanding`
          w->withdraw(job.seq);
        }
      }
    }
  }

  /// Moves pending jobs to live workers with room (least loaded first); returns the
  /// workers whose writer must be started (under mu).
  std::vector<std::shared_ptr<pool_worker>> pump_locked() {
    std::vector<std::shared_ptr<pool_worker>> kick;
    std::size_t alive = static_cast<std::size_t>(std::count_if(workers.begin(), workers.end(), [](auto& w) { return w->alive; }));
    while (!pending.empty() && alive > 0) {
      pool_worker* best = nullptr;
      for (auto& w : workers) {
        if (w->alive && w->inflight.size() < window && (best == nullptr || w->inflight.size() < best->inflight.size())) {
          best = w.get();
        }
      }
      if (best == nullptr) {
        break;
      }
      std::size_t room = window - best->inflight.size();
      std::size_t share = std::max<std::size_t>(1, std::min(room, (pending.size() + alive - 1) / alive));
      for (std::size_t k = 0; k < share && !pending.empty(); ++k) {
        pool_job job = pending.front();
        pending.pop_front();
        job.seq = best->next_seq++;
        auto data = job.batch->job(job.index);
        job_header h{static_cast<std::uint32_t>(data.size()), job.seq, job.id,
                     reinterpret_cast<std::uint64_t>(job.batch->fn)};
        auto* hp = reinterpret_cast<const std::byte*>(&h);
        best->outbox.insert(best->outbox.end(), hp, hp + sizeof h);
        best->outbox.insert(best->outbox.end(), data.begin(), data.end());
        best->inflight.push_back(job);
      }
    }
    for (auto& w : workers) {
      if (w->alive && !w->writing && !w->outbox.empty()) {
        w->writing = true;
        kick.push_back(w);
      }
    }
    return kick;
  }

  /// Fails every pending job with `why` (under mu).
  void fail_pending_locked(pool_errc why) {
    while (!pending.empty()) {
      pool_job job = pending.front();
      pending.pop_front();
      finish_locked(job, static_cast<std::uint32_t>(why), {});
    }
  }
};

namespace {

task<void> writer_loop(std::shared_ptr<pool_state> s, std::shared_ptr<pool_worker> w) {
  std::vector<std::byte> buf;
  for (;;) {
    {
      std::lock_guard lock(s->mu);
      if (w->outbox.empty() || !w->alive) {
        w->writing = false;
        co_return;
      }
      buf.swap(w->outbox);
      w->outbox.clear();
    }
    std::span<const std::byte> rest(buf);
    while (!rest.empty()) {
      auto n = co_await io::write(w->sock.get(), rest);
      if (!n) {
        std::lock_guard lock(s->mu);
        w->writing = false;  // the reader sees the dead worker and recovers
        co_return;
      }
      rest = rest.subspan(*n);
    }
    buf.clear();
  }
}

void kick_writers(const std::shared_ptr<pool_state>& s, std::vector<std::shared_ptr<pool_worker>> kick) {
  for (auto& w : kick) {
    corio::spawn(writer_loop(s, std::move(w))).detach();
  }
}

task<result<std::shared_ptr<pool_worker>>> start_worker(std::size_t window) {
  std::size_t page_bytes = worker_page::bytes_for(window);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    co_return unexpected(os_error(-errno));
  }
  process_fd ours(sv[0]);
  process_fd theirs(sv[1]);
  process_fd memfd(::memfd_create("corio-pool-progress", MFD_CLOEXEC));
  if (!memfd.is_open() || ::ftruncate(memfd.get(), static_cast<off_t>(page_bytes)) != 0) {
    co_return unexpected(os_error(-errno));
  }
  void* map = ::mmap(nullptr, page_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
  if (map == MAP_FAILED) {
    co_return unexpected(os_error(-errno));
  }
  auto w = std::make_shared<pool_worker>();
  w->page = static_cast<worker_page*>(map);  // zero-filled by ftruncate: no job withdrawn
  w->page->bits = worker_page::bits_for(window);
  w->page_bytes = page_bytes;
  std::vector<int> fds{theirs.get(), memfd.get()};
  std::vector<std::byte> arg(sizeof page_bytes);
  std::memcpy(arg.data(), &page_bytes, sizeof page_bytes);
  auto c = co_await fork_raw(&pool_worker_main, std::move(arg), std::move(fds));
  if (!c) {
    co_return unexpected(c.error());
  }
  w->proc = std::move(*c);
  w->sock = std::move(ours);
  co_return w;
}

task<void> reader_loop(std::shared_ptr<pool_state> s, std::shared_ptr<pool_worker> w);

/// Starts a replacement for the dead worker `old` in its slot; false if it failed.
task<bool> replace_worker(std::shared_ptr<pool_state> s, std::shared_ptr<pool_worker> old) {
  std::size_t window = 0;
  {
    std::lock_guard lock(s->mu);
    window = s->window;
  }
  auto fresh = co_await start_worker(window);
  std::vector<std::shared_ptr<pool_worker>> kick;
  bool ok = false;
  {
    std::lock_guard lock(s->mu);
    if (!fresh || s->closing) {
      bool any = std::any_of(s->workers.begin(), s->workers.end(), [](auto& w) { return w->alive; });
      if (!any) {
        s->fail_pending_locked(s->closing ? pool_errc::shut_down : pool_errc::no_workers);
      } else {
        kick = s->pump_locked();  // the survivors take what the dead worker left
      }
    } else {
      std::replace(s->workers.begin(), s->workers.end(), old, *fresh);
      ++s->replaced;
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

void kill_worker(pool_worker& w) noexcept {
  // Through the pidfd: no pid-reuse race; ESRCH once it is dead (harmless). The fd stays
  // open for the pool_worker's lifetime (nothing closes it while `w` is referenced).
  if (w.proc.pidfd() >= 0) {
    ::syscall(SYS_pidfd_send_signal, w.proc.pidfd(), SIGKILL, nullptr, 0);
  }
}

/// After a worker's socket ended: fail its running job, requeue the rest (and hand them
/// to the survivors at once), reap it and start a replacement (or, when closing or
/// stopped, fail everything it held).
task<void> recover(std::shared_ptr<pool_state> s, std::shared_ptr<pool_worker> w, reader_end why) {
  if (why == reader_end::protocol_error) {
    kill_worker(*w);
    (void)co_await w->proc.wait();  // dead before its progress word is read
  }
  bool closing = false;
  std::vector<std::shared_ptr<pool_worker>> kick;
  {
    std::lock_guard lock(s->mu);
    w->alive = false;
    closing = s->closing || why == reader_end::stopped;
    std::uint64_t crashed = w->running_job();
    std::vector<pool_job> again;
    for (const pool_job& job : w->inflight) {
      if (job.batch == nullptr) {
        s->finish_locked(job, status_cancelled, {});  // a cancelled call's: never rerun
      } else if (closing) {
        s->finish_locked(job, static_cast<std::uint32_t>(pool_errc::shut_down), {});
      } else if (job.id == crashed) {
        s->finish_locked(job, static_cast<std::uint32_t>(pool_errc::worker_crashed), {});
      } else {
        again.push_back(job);
      }
    }
    w->inflight.clear();
    w->outbox.clear();
    s->pending.insert(s->pending.begin(), again.begin(), again.end());
    if (s->closing) {
      s->fail_pending_locked(pool_errc::shut_down);
    } else {
      kick = s->pump_locked();  // idle survivors must not wait for the replacement
    }
  }
  kick_writers(s, std::move(kick));
  ::shutdown(w->sock.get(), SHUT_RDWR);
  if (!closing) {
    (void)co_await w->proc.wait();  // reap now; the replacement reuses nothing of it
    (void)co_await replace_worker(s, w);
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
    std::size_t pos = 0;
    bool bad = false;
    std::vector<std::shared_ptr<pool_worker>> kick;
    {
      std::lock_guard lock(s->mu);
      while (have - pos >= sizeof(result_header)) {
        result_header h;
        std::memcpy(&h, buf.data() + pos, sizeof h);
        if (w->inflight.empty() || w->inflight.front().id != h.id) {
          bad = true;  // not the frame a worker answering in order would send
          break;
        }
        std::size_t frame = sizeof h + h.len;
        if (have - pos < frame) {
          if (frame > buf.size()) {
            buf.resize(frame);
          }
          break;
        }
        pool_job job = w->inflight.front();
        w->inflight.pop_front();
        if (job.batch == nullptr) {
          w->clear_withdrawn(job.seq);  // (set or not: a cancelled call's job)
        }
        s->finish_locked(job, h.status, std::span<const std::byte>(buf.data() + pos + sizeof h, h.len));
        pos += frame;
      }
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

/// The body of shutdown(), run once as its own task (so that no caller's cancellation
/// can leave it half-done): waits for every job, closes the sockets, joins the readers,
/// reaps the workers, then sets shutdown_done.
task<void> shutdown_body(std::shared_ptr<pool_state> s) {
  completion_signal idle;
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
  std::vector<std::shared_ptr<pool_worker>> workers;
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
  }
  s->shutdown_done.set();
}

}  // namespace
}  // namespace detail

task<result<std::unique_ptr<process_pool>>> process_pool::start(std::size_t workers, std::size_t window) {
  auto s = std::make_shared<detail::pool_state>();
  // At most 2^20 in flight per worker: the withdrawal bitmap (one bit per slot) is then
  // at most 128 KiB; beyond that a deeper window buys nothing.
  s->window = std::clamp<std::size_t>(window, 1, std::size_t{1} << 20);
  for (std::size_t i = 0; i < (workers == 0 ? 1 : workers); ++i) {
    auto w = co_await detail::start_worker(s->window);
    if (!w) {
      std::unique_ptr<process_pool> partial(new process_pool(s));  // closes the started ones
      co_return unexpected(w.error());
    }
    std::lock_guard lock(s->mu);
    s->workers.push_back(*w);
    (*w)->reader = corio::spawn(detail::reader_loop(s, *w));
  }
  co_return std::unique_ptr<process_pool>(new process_pool(std::move(s)));
}

process_pool::~process_pool() {
  std::vector<std::shared_ptr<detail::pool_worker>> workers;
  {
    std::lock_guard lock(m_state->mu);
    m_state->closing = true;
    m_state->fail_pending_locked(pool_errc::shut_down);
    workers = m_state->workers;
  }
  for (auto& w : workers) {
    detail::kill_worker(*w);              // as documented: a job still running is not waited for
    ::shutdown(w->sock.get(), SHUT_RDWR);  // the readers fail what is in flight and exit
  }
}

namespace detail {
namespace {

/// Queues every job of `b` (filled, not yet queued); false (and every job failed with
/// shut_down) if the pool is closing. Starts the writers it needs.
bool queue_batch(const std::shared_ptr<pool_state>& s, pool_batch& b) {
  std::size_t n = b.size();
  if (b.sink == nullptr) {
    b.out_off.assign(n, 0);
    b.out_len.assign(n, 0);
    b.status.assign(n, 0);
    b.order.reserve(n);
  }
  std::vector<std::shared_ptr<pool_worker>> kick;
  {
    std::lock_guard lock(s->mu);
    b.remaining = n;
    if (s->closing) {
      s->outstanding += n;
      for (std::size_t i = 0; i < n; ++i) {
        s->finish_locked({0, &b, i}, static_cast<std::uint32_t>(pool_errc::shut_down), {});
      }
      return false;
    }
    s->outstanding += n;
    for (std::size_t i = 0; i < n; ++i) {
      s->pending.push_back({s->next_id++, &b, i});
    }
    kick = s->pump_locked();
  }
  kick_writers(s, std::move(kick));
  return true;
}

/// Cancels every job of `b` still without a result (any thread).
void cancel_batch(pool_state& s, pool_batch& b) noexcept {
  std::lock_guard lock(s.mu);
  s.cancel_batch_locked(&b);
}

/// Awaits a queued batch's completion; a stop of `token` or of the inherited token
/// cancels the batch's remaining jobs (see cancel_batch_locked), which completes it.
class batch_wait {
 public:
  batch_wait(pool_state& s, pool_batch& b, std::stop_token token) noexcept : m_state(&s), m_batch(&b), m_token(std::move(token)) {}
  batch_wait(const batch_wait&) = delete;
  batch_wait& operator=(const batch_wait&) = delete;

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    // Armed before the wait is published: a stop that already happened runs the cancel
    // here, which signals `done`, and done.await_suspend then declines to suspend.
    m_stop.arm(m_token, corio::detail::inherited_token_of(h), stop_fn{this});
    return m_batch->done.await_suspend(h);
  }
  void await_resume() noexcept {
    m_stop.disarm();  // waits for a cancel running on another thread: the batch is ours again
  }

 private:
  struct stop_fn {
    batch_wait* self;
    void operator()() const noexcept { cancel_batch(*self->m_state, *self->m_batch); }
  };
  pool_state* m_state;
  pool_batch* m_batch;
  std::stop_token m_token;
  corio::detail::stop_link<stop_fn> m_stop;
};

void add_byte_jobs(pool_batch& b, pool_job_fn fn, const std::vector<std::vector<std::byte>>& jobs) {
  b.fn = fn;
  for (const auto& j : jobs) {
    b.add(j);
  }
}

}  // namespace

stream_core::stream_core(std::shared_ptr<pool_state> pool, pool_job_fn fn, std::stop_token token)
    : m_pool(std::move(pool)), m_token(std::move(token)) {
  batch.fn = fn;
  batch.sink = &stream_core::sink;
  batch.sink_ctx = this;
}

stream_core::~stream_core() {
  m_stop.reset();  // waits for a cancel running on another thread
  cancel();        // nothing in the pool points at us afterwards
}

void stream_core::submit() {
  if (batch.size() == 0) {
    items.close();
    return;
  }
  if (queue_batch(m_pool, batch)) {
    // After queueing: a stop that already happened cancels at once, in here.
    m_stop.emplace(m_token, cancel_fn{this});
  }
}

void stream_core::cancel() noexcept { cancel_batch(*m_pool, batch); }

void stream_core::sink(void* ctx, std::size_t index, std::uint32_t status, std::span<const std::byte> payload) {
  auto* self = static_cast<stream_core*>(ctx);
  if (index == self->batch.size()) {
    self->items.close();  // buffered items stay receivable
    return;
  }
  // Unbounded: never waits, never fails while open (it closes only after the last item).
  (void)self->items.try_send(raw_item{index, status, std::vector<std::byte>(payload.begin(), payload.end())});
}

}  // namespace detail

task<void> process_pool::run(detail::pool_batch& b, std::stop_token token) {
  if (b.size() == 0) {
    co_return;
  }
  std::stop_token inherited = co_await corio::get_stop_token();
  if (token.stop_requested() || inherited.stop_requested()) {
    b.status.assign(b.size(), detail::status_cancelled);  // nothing queued, nothing run
    b.out_off.assign(b.size(), 0);
    b.out_len.assign(b.size(), 0);
    b.order.clear();  // map_unordered reports every job, each cancelled
    for (std::size_t i = 0; i < b.size(); ++i) {
      b.order.push_back(i);
    }
    co_return;
  }
  if (!detail::queue_batch(m_state, b)) {
    co_return;  // closing: every job failed with shut_down
  }
  co_await detail::batch_wait(*m_state, b, std::move(token));
}

task<pool_result<std::vector<std::byte>>> process_pool::submit(pool_job_fn fn, std::vector<std::byte> job,
                                                               std::stop_token token) {
  std::vector<std::vector<std::byte>> one;
  one.push_back(std::move(job));
  auto r = co_await map(fn, std::move(one), std::move(token));
  co_return std::move(r.front());
}

task<pool_results<pool_result<std::vector<std::byte>>>> process_pool::map(pool_job_fn fn,
                                                                           std::vector<std::vector<std::byte>> jobs,
                                                                           std::stop_token token) {
  detail::pool_batch b;
  detail::add_byte_jobs(b, fn, jobs);
  co_await run(b, std::move(token));
  pool_results<pool_result<std::vector<std::byte>>> out;
  out.reserve(b.size());
  for (std::size_t i = 0; i < b.size(); ++i) {
    out.push_back(detail::job_outcome<std::vector<std::byte>>(b.status[i], b.result(i)));
  }
  co_return out;
}

task<pool_results<std::pair<std::size_t, pool_result<std::vector<std::byte>>>>> process_pool::map_unordered(
    pool_job_fn fn, std::vector<std::vector<std::byte>> jobs, std::stop_token token) {
  detail::pool_batch b;
  detail::add_byte_jobs(b, fn, jobs);
  co_await run(b, std::move(token));
  pool_results<std::pair<std::size_t, pool_result<std::vector<std::byte>>>> out;
  out.reserve(b.size());
  for (std::size_t i : b.order) {
    out.emplace_back(i, detail::job_outcome<std::vector<std::byte>>(b.status[i], b.result(i)));
  }
  co_return out;
}

pool_stream<std::vector<std::byte>> process_pool::map_stream(pool_job_fn fn, std::vector<std::vector<std::byte>> jobs,
                                                            std::stop_token token) {
  auto core = std::make_unique<detail::stream_core>(m_state, fn, std::move(token));
  detail::add_byte_jobs(core->batch, fn, jobs);
  core->submit();
  return pool_stream<std::vector<std::byte>>(std::move(core));
}

task<void> process_pool::shutdown() {
  bool first = false;
  {
    std::lock_guard lock(m_state->mu);
    first = !std::exchange(m_state->shutdown_started, true);
  }
  if (first) {
    corio::spawn(detail::shutdown_body(m_state)).detach();
  }
  (void)co_await m_state->shutdown_done.wait();  // every caller, however many
}

std::size_t process_pool::size() const noexcept {
  std::lock_guard lock(m_state->mu);
  return m_state->workers.size();
}

std::vector<pid_t> process_pool::worker_pids() const {
  std::lock_guard lock(m_state->mu);
  std::vector<pid_t> pids;
  for (auto& w : m_state->workers) {
    pids.push_back(w->proc.id());
  }
  return pids;
}

std::size_t process_pool::replaced() const noexcept {
  std::lock_guard lock(m_state->mu);
  return m_state->replaced;
}

}  // namespace corio::ipc
