// corio::ipc::detail::pool_state and its parts: the parent side of a process_pool,
// shared by the files that implement it. Private to the library (not installed).
//
// The pool is split along four seams, one file each:
//   pool_worker_main.cpp  the worker process: a blocking loop over its socket;
//   pool_dispatch.cpp     the dispatch state (this header's pool_state): which job is
//                         where, cancelling, handing jobs to workers;
//   pool_workers.cpp      each worker's lifecycle: start, the reader and writer tasks,
//                         crash recovery and replacement, the shutdown body;
//   process_pool.cpp      the public API of process_pool.hpp.
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
// Thread-safety: every member marked "under mu" needs pool_state::mu held.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include <corio/ipc/process/child.hpp>
#include <corio/ipc/process/detail/pool_codec.hpp>
#include <corio/ipc/process/process_pool.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>
#include <corio/sync/event.hpp>

namespace corio::ipc::detail {

/// One job on its way: where its bytes and result live, and its frame number.
struct pool_job {
  std::uint64_t id;
  pool_batch* batch;  // nullptr once the job's call was cancelled (its answer is dropped)
  std::size_t index;
  std::uint32_t seq = 0;  // the frame's number on its worker's socket (set when sent)
};

/// A run of bytes waiting in a worker's outbox: frames copied in (`owned`), or a large
/// job's bytes borrowed from its batch's input (`borrowed`, alive while `keep` is: the
/// writer may still be sending them after the call was cancelled and its batch freed).
struct outbox_piece {
  /// Jobs at least this long are borrowed, not copied (below it a copy is cheaper than a
  /// write of its own).
  static constexpr std::size_t borrow_from = 64 * 1024;
  std::vector<std::byte> owned;
  std::span<const std::byte> borrowed;
  std::shared_ptr<const void> keep;

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return keep ? borrowed : std::span<const std::byte>(owned);
  }
};

/// The parent's view of one worker process.
struct pool_worker {
  child proc;
  process_fd sock;
  worker_page* page = nullptr;
  std::size_t page_bytes = 0;
  std::uint32_t next_seq = 0;     // under mu
  std::deque<pool_job> inflight;  // under mu
  std::vector<outbox_piece> outbox;  // under mu: the frames to write, in order
  std::vector<std::byte> spare;      // under mu: an emptied buffer the writer hands back
  bool writing = false;           // under mu: a writer task owns the socket's write side
  bool alive = true;              // under mu
  join_handle<void> reader;       // set once by the task that starts the worker

  pool_worker() = default;
  pool_worker(const pool_worker&) = delete;
  pool_worker& operator=(const pool_worker&) = delete;
  ~pool_worker() {
    if (page != nullptr) {
      ::munmap(page, page_bytes);
    }
  }

  /// Appends a copy of `data` to the outbox (under mu).
  void append_copy(std::span<const std::byte> data) {
    if (outbox.empty() || outbox.back().keep) {
      outbox.emplace_back().owned = std::move(spare);  // (empty; keeps its capacity)
      spare = {};
    }
    auto& o = outbox.back().owned;
    o.insert(o.end(), data.begin(), data.end());
  }
  /// Appends `data` to the outbox without copying it; `keep` owns it (under mu).
  void append_borrowed(std::span<const std::byte> data, std::shared_ptr<const void> keep) {
    outbox.push_back(outbox_piece{{}, data, std::move(keep)});
  }

  [[nodiscard]] std::uint64_t running_job() const noexcept {
    // relaxed: the worker is dead; its last store is ordered before its exit, which we saw.
    return page->running.load(std::memory_order_relaxed);
  }
  /// Asks the worker to skip the job sent as frame `seq` (under mu).
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
};

using worker_list = std::vector<std::shared_ptr<pool_worker>>;

/// The whole parent-side state of one pool (see the header comment for its invariants).
struct pool_state {
  std::mutex mu;
  worker_list workers;  // one slot per worker, replaced in place
  std::deque<pool_job> pending;
  std::vector<pool_job_fn> fns;  // the registered job functions, published to every worker
  std::uint64_t next_id = 1;
  std::size_t window = 4096;
  std::size_t max_message = max_frame_payload;  // the longest job or result payload
  std::size_t outstanding = 0;
  std::size_t replaced = 0;
  std::size_t replacing = 0;  // replacements being forked (a dead worker's slot waits on one)
  bool closing = false;
  bool shutdown_started = false;      // the first shutdown() spawned the shutdown body
  completion_signal* idle = nullptr;  // the shutdown body waits on it for outstanding == 0
  corio::event shutdown_done{event_reset::manual};  // set once the workers are reaped

  /// Records the result of job `index` of `b` (under mu); signals the batch when it was
  /// the last one.
  static void complete_locked(pool_batch* b, std::size_t index, std::uint32_t status,
                              std::span<const std::byte> payload);
  /// Records a job's end (under mu): its batch's result (unless the call was cancelled)
  /// and the pool's count.
  void finish_locked(const pool_job& job, std::uint32_t status, std::span<const std::byte> payload);
  /// Cancels every job of `b` that has no result yet (under mu): pending ones are
  /// dropped, in-flight ones withdrawn and unlinked from `b`; each completes with
  /// status_cancelled. Afterwards nothing in the pool points at `b`.
  void cancel_batch_locked(pool_batch* b);
  /// Moves pending jobs to live workers with room (least loaded first); returns the
  /// workers whose writer must be started (under mu).
  worker_list pump_locked();
  /// Fails every pending job with `why` (under mu).
  void fail_pending_locked(pool_errc why);
  /// Whether any worker is alive (under mu).
  [[nodiscard]] bool any_alive_locked() const noexcept;
  /// `fn`'s index in the registered table, registering it (and publishing it to every
  /// worker) the first time; max_job_functions when the table is full (under mu).
  std::uint32_t register_locked(pool_job_fn fn);
  /// Puts fresh worker `w` in the slot of `old` (or appends it if `old` is null), with
  /// the registered table published to its page (under mu).
  void install_locked(const std::shared_ptr<pool_worker>& w, const std::shared_ptr<pool_worker>& old);
};

// pool_dispatch.cpp
/// Queues every job of `b` (filled, not yet queued); false (and every job failed with
/// shut_down) if the pool is closing. Every job fails with no_workers at once when no
/// worker is alive and no replacement is being forked. Starts the writers it needs.
bool queue_batch(const std::shared_ptr<pool_state>& s, pool_batch& b);
/// Cancels every job of `b` still without a result (any thread).
void cancel_batch(pool_state& s, pool_batch& b) noexcept;
/// Withdraws `b` whose awaiting coroutine is being destroyed (a runtime destroying its
/// unfinished tasks): as cancel_batch, but `b` is never completed (no sink call, and
/// `b.done` is not signalled). Afterwards nothing in the pool points at `b`.
void abandon_batch(pool_state& s, pool_batch& b) noexcept;

// pool_workers.cpp
/// Forks one worker (through the fork server) with its socket and shared page.
task<result<std::shared_ptr<pool_worker>>> start_worker(std::size_t window, std::size_t max_message);
/// A fresh shared page for a worker (zero-filled: no job withdrawn, no function
/// registered) in `w`; its memfd in `memfd`.
result<void> make_page(pool_worker& w, std::size_t window, std::size_t max_message, process_fd& memfd);
/// The task that reads a worker's results until its socket ends, then recovers it.
task<void> reader_loop(std::shared_ptr<pool_state> s, std::shared_ptr<pool_worker> w);
/// Starts a writer task for each worker returned by pump_locked().
void kick_writers(const std::shared_ptr<pool_state>& s, worker_list kick);
/// SIGKILLs a worker through its pidfd (harmless once it is dead).
void kill_worker(pool_worker& w) noexcept;
/// The body of process_pool::shutdown(), run once as its own task.
task<void> shutdown_body(std::shared_ptr<pool_state> s);

// pool_worker_main.cpp
/// The worker process's entry (a fork_entry): args = the page size, fds = {socket, page}.
int pool_worker_main(std::span<const std::byte> arg, std::span<const int> fds);

}  // namespace corio::ipc::detail
