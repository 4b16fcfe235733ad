// The process_pool's dispatch state (detail/pool_state.hpp): completing, cancelling and
// failing jobs, handing pending jobs to the least loaded workers, and queueing a batch.
// Everything here runs under pool_state::mu and never makes a syscall under it.
#include <algorithm>
#include <string>

#include <corio/ipc/process/detail/pool_state.hpp>

namespace corio::ipc::detail {

void pool_state::complete_locked(pool_batch* b, std::size_t index, std::uint32_t status,
                                 std::span<const std::byte> payload) {
  if (status == status_withdrawn) {
    status = status_cancelled;  // (only an orphan is ever withdrawn; be safe)
  }
  if (b->sink != nullptr) {
    b->sink(b->sink_ctx, index, status, payload);
  } else if (b->place(index, status, payload)) {
    b->status[index] = 0;  // copied into the caller's output (a bulk call)
    b->order.push_back(index);
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

void pool_state::finish_locked(const pool_job& job, std::uint32_t status, std::span<const std::byte> payload) {
  if (job.batch != nullptr) {
    complete_locked(job.batch, job.index, status, payload);
  }
  if (--outstanding == 0 && idle != nullptr) {
    std::exchange(idle, nullptr)->signal();
  }
}

namespace {

// Takes every job of `b` still without a result out of the pool: queued ones are dropped
// (counting down `outstanding`), in-flight ones unlinked and withdrawn (their answers,
// when they come, only count down `outstanding`). `complete`: each is completed as
// cancelled, the last one signalling `done` (cancel_batch_locked); else `b` is left
// untouched (abandon_batch: its waiter is being destroyed).
void withdraw_jobs_locked(pool_state& s, pool_batch* b, bool complete) {
  for (auto it = s.pending.begin(); it != s.pending.end();) {
    if (it->batch == b) {
      pool_job job = *it;
      if (!complete) {
        job.batch = nullptr;
      }
      it = s.pending.erase(it);
      s.finish_locked(job, status_cancelled, {});
    } else {
      ++it;
    }
  }
  for (auto& w : s.workers) {
    for (pool_job& job : w->inflight) {
      if (job.batch == b) {
        if (complete) {
          pool_state::complete_locked(b, job.index, status_cancelled, {});
        }
        job.batch = nullptr;
        w->withdraw(job.seq);
      }
    }
  }
}

}  // namespace

void pool_state::cancel_batch_locked(pool_batch* b) {
  if (b->remaining != 0) {
    withdraw_jobs_locked(*this, b, true);
  }
}

namespace {

/// The live worker with the fewest jobs in flight and room for more; nullptr if none.
pool_worker* least_loaded(const worker_list& workers, std::size_t window) {
  pool_worker* best = nullptr;
  for (const auto& w : workers) {
    if (w->alive && w->inflight.size() < window && (best == nullptr || w->inflight.size() < best->inflight.size())) {
      best = w.get();
    }
  }
  return best;
}

/// Appends job `job`'s frame to `w`'s outbox and records it in flight there. A large
/// job of a batch that borrows its input is not copied: the outbox points at it and
/// shares its owner (see outbox_piece).
void send_locked(pool_worker& w, pool_job job) {
  job.seq = w.next_seq++;
  const pool_batch& b = *job.batch;
  auto data = b.job(job.index);
  // (data.size() <= max_message < 4 GiB: checked by queue_batch.)
  job_header h{static_cast<std::uint32_t>(data.size()), job.seq, job.id, b.fn_index, 0};
  w.append_copy(std::as_bytes(std::span(&h, 1)));
  if (b.in_keep && data.size() >= outbox_piece::borrow_from) {
    w.append_borrowed(data, b.in_keep);
  } else {
    w.append_copy(data);
  }
  w.inflight.push_back(job);
}

}  // namespace

worker_list pool_state::pump_locked() {
  std::size_t alive = static_cast<std::size_t>(std::count_if(workers.begin(), workers.end(), [](auto& w) { return w->alive; }));
  while (!pending.empty() && alive > 0) {
    pool_worker* best = least_loaded(workers, window);
    if (best == nullptr) {
      break;
    }
    std::size_t room = window - best->inflight.size();
    std::size_t share = std::max<std::size_t>(1, std::min(room, (pending.size() + alive - 1) / alive));
    for (std::size_t k = 0; k < share && !pending.empty(); ++k) {
      send_locked(*best, pending.front());
      pending.pop_front();
    }
  }
  worker_list kick;
  for (auto& w : workers) {
    if (w->alive && !w->writing && !w->outbox.empty()) {
      w->writing = true;
      kick.push_back(w);
    }
  }
  return kick;
}

void pool_state::fail_pending_locked(pool_errc why) {
  while (!pending.empty()) {
    pool_job job = pending.front();
    pending.pop_front();
    finish_locked(job, static_cast<std::uint32_t>(why), {});
  }
}

bool pool_state::any_alive_locked() const noexcept {
  return std::any_of(workers.begin(), workers.end(), [](auto& w) { return w->alive; });
}

std::uint32_t pool_state::register_locked(pool_job_fn fn) {
  auto it = std::find(fns.begin(), fns.end(), fn);
  if (it != fns.end()) {
    return static_cast<std::uint32_t>(it - fns.begin());
  }
  if (fns.size() == max_job_functions) {
    return max_job_functions;
  }
  fns.push_back(fn);
  for (auto& w : workers) {
    w->page->publish(fns);  // before any frame naming it is written (the socket orders it)
  }
  return static_cast<std::uint32_t>(fns.size() - 1);
}

void pool_state::install_locked(const std::shared_ptr<pool_worker>& w, const std::shared_ptr<pool_worker>& old) {
  w->page->publish(fns);  // a worker started meanwhile may have missed registrations
  if (old == nullptr) {
    workers.push_back(w);
  } else {
    std::replace(workers.begin(), workers.end(), old, w);
  }
}

namespace {

/// Text for a job over the pool's limit.
std::string too_large(const char* what, std::size_t bytes, std::size_t limit) {
  return std::string(what) + " of " + std::to_string(bytes) + " bytes is over the pool's limit of " +
         std::to_string(limit) + " bytes (pool_options::max_message)";
}

/// Fails every job of `b` at once with `status` and `text` (under mu; they were counted
/// in `outstanding`).
void fail_batch_locked(pool_state& s, pool_batch& b, pool_errc why, const std::string& text) {
  for (std::size_t i = 0; i < b.size(); ++i) {
    s.finish_locked({0, &b, i}, static_cast<std::uint32_t>(why), std::as_bytes(std::span(text)));
  }
}

/// Queues the jobs of `b` that fit the limit; fails the others at once (under mu).
void queue_jobs_locked(pool_state& s, pool_batch& b) {
  for (std::size_t i = 0; i < b.size(); ++i) {
    std::size_t bytes = b.job(i).size();
    if (bytes > s.max_message) {
      std::string text = too_large("a job", bytes, s.max_message);
      s.finish_locked({0, &b, i}, static_cast<std::uint32_t>(pool_errc::job_too_large), std::as_bytes(std::span(text)));
    } else {
      s.pending.push_back({s.next_id++, &b, i});
    }
  }
}

}  // namespace

bool queue_batch(const std::shared_ptr<pool_state>& s, pool_batch& b) {
  std::size_t n = b.size();
  if (b.sink == nullptr) {
    b.placed.assign(b.direct_out != nullptr ? n : 0, 0);
    b.out_off.assign(n, 0);
    b.out_len.assign(n, 0);
    b.status.assign(n, 0);
    b.order.reserve(n);
  }
  worker_list kick;
  {
    std::lock_guard lock(s->mu);
    b.remaining = n;
    s->outstanding += n;
    if (s->closing || s->shutdown_started) {
      // Refused once shutdown() has begun (as Python's executor refuses a submit after
      // shutdown): shutdown() waits for every job it accepted, so accepting more would let
      // a steady stream of calls keep it from ever finishing.
      fail_batch_locked(*s, b, pool_errc::shut_down, {});
      return false;
    }
    b.fn_index = s->register_locked(b.fn);
    if (b.fn_index == max_job_functions) {
      fail_batch_locked(*s, b, pool_errc::too_many_functions,
                        "a pool runs at most " + std::to_string(max_job_functions) + " distinct job functions");
      return true;
    }
    if (!s->any_alive_locked() && s->replacing == 0) {
      // Queued, they would wait for good: nothing would ever run or fail them.
      fail_batch_locked(*s, b, pool_errc::no_workers, "no worker is alive and no replacement could be started");
      return true;
    }
    queue_jobs_locked(*s, b);
    kick = s->pump_locked();
  }
  kick_writers(s, std::move(kick));
  return true;
}

void cancel_batch(pool_state& s, pool_batch& b) noexcept {
  std::lock_guard lock(s.mu);
  s.cancel_batch_locked(&b);
}

void abandon_batch(pool_state& s, pool_batch& b) noexcept {
  std::lock_guard lock(s.mu);
  if (b.remaining != 0) {
    // As cancel_batch_locked, but `b` is never completed: no sink call and no signal of
    // `done`, whose waiter is the coroutine being destroyed.
    withdraw_jobs_locked(s, &b, false);
    b.remaining = 0;
  }
}

}  // namespace corio::ipc::detail
