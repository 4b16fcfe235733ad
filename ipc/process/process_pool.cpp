// corio::ipc::process_pool's public API (process_pool.hpp): starting and destroying a
// pool, the calls that queue batches and await them (batch_wait), map_stream's
// stream_core, shutdown() and the error category. The rest of the pool lives in
// pool_dispatch.cpp, pool_workers.cpp and pool_worker_main.cpp (see
// detail/pool_state.hpp for the map and the invariants).
#include <corio/ipc/process/process_pool.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <memory>

#include <corio/ipc/process/detail/pool_state.hpp>
#include <corio/runtime/port.hpp>
#include <corio/runtime/spawn.hpp>

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
      case pool_errc::job_too_large:
        return "the job is larger than the process pool's message limit";
      case pool_errc::result_too_large:
        return "the job's result is larger than the process pool's message limit";
      case pool_errc::too_many_functions:
        return "the process pool cannot register another job function";
    }
    return "unknown process_pool error";
  }
};

}  // namespace

const std::error_category& pool_category() noexcept {
  static const pool_category_impl cat;
  return cat;
}

task<result<std::unique_ptr<process_pool>>> process_pool::start(std::size_t workers, std::size_t window) {
  return start(pool_options{.workers = workers, .window = window});
}

task<result<std::unique_ptr<process_pool>>> process_pool::start(pool_options options) {
  if (options.workers == 0) {
    co_return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  auto s = std::make_shared<detail::pool_state>();
  // At most 2^20 in flight per worker: the withdrawal bitmap (one bit per slot) is then
  // at most 128 KiB; beyond that a deeper window buys nothing.
  s->window = std::clamp<std::size_t>(options.window, 1, std::size_t{1} << 20);
  s->max_message = std::clamp<std::size_t>(options.max_message, 1, detail::max_frame_payload);
  for (std::size_t i = 0; i < options.workers; ++i) {
    auto w = co_await detail::start_worker(s->window, s->max_message);
    if (!w) {
      std::unique_ptr<process_pool> partial(new process_pool(s));  // closes the started ones
      co_return unexpected(w.error());
    }
    std::lock_guard lock(s->mu);
    s->install_locked(*w, nullptr);
    (*w)->reader = corio::spawn(detail::reader_loop(s, *w));
  }
  co_return std::unique_ptr<process_pool>(new process_pool(std::move(s)));
}

process_pool::~process_pool() {
  detail::worker_list workers;
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

/// Awaits a queued batch's completion; a stop of `token` or of the inherited token
/// cancels the batch's remaining jobs (see cancel_batch_locked), which completes it.
/// Destroyed while suspended (a runtime destroying its unfinished tasks frees the frame
/// that holds the batch), it withdraws the batch from the pool. It shares the pool's
/// state: the runtime may destroy the pool's owner (and the readers holding the state)
/// before this frame.
class batch_wait {
 public:
  batch_wait(std::shared_ptr<pool_state> s, pool_batch& b, std::stop_token token) noexcept
      : m_state(std::move(s)), m_batch(&b), m_token(std::move(token)) {}
  batch_wait(const batch_wait&) = delete;
  batch_wait& operator=(const batch_wait&) = delete;
  ~batch_wait() {
    if (m_waiting) {
      m_stop.disarm();                    // no cancel runs from here on
      abandon_batch(*m_state, *m_batch);  // nothing points at the batch afterwards
    }
  }

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    // Armed before the wait is published: a stop that already happened runs the cancel
    // here, which signals `done`, and done.await_suspend then declines to suspend.
    m_stop.arm(m_token, corio::detail::inherited_token_of(h), stop_fn{this});
    // Set before the wait is published: once it is, the coroutine may resume (and clear
    // it) on another thread at any moment.
    m_waiting = true;
    return m_batch->done.await_suspend(h);
  }
  void await_resume() noexcept {
    m_waiting = false;
    m_stop.disarm();  // waits for a cancel running on another thread: the batch is ours again
  }

 private:
  struct stop_fn {
    batch_wait* self;
    void operator()() const noexcept { cancel_batch(*self->m_state, *self->m_batch); }
  };
  std::shared_ptr<pool_state> m_state;
  pool_batch* m_batch;
  std::stop_token m_token;
  port::stop_link<stop_fn> m_stop;
  bool m_waiting = false;  // suspended on the batch and not resumed yet
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
  detail::batch_wait wait(m_state, b, std::move(token));  // named: destroyed with the frame
  co_await wait;
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
  return static_cast<std::size_t>(
      std::count_if(m_state->workers.begin(), m_state->workers.end(), [](auto& w) { return w->alive; }));
}

std::size_t process_pool::max_message() const noexcept {
  std::lock_guard lock(m_state->mu);
  return m_state->max_message;
}

std::vector<pid_t> process_pool::worker_pids() const {
  std::lock_guard lock(m_state->mu);
  std::vector<pid_t> pids;
  for (auto& w : m_state->workers) {
    if (w->alive) {  // a dead worker's pid may be reaped and reused by now
      pids.push_back(w->proc.id());
    }
  }
  return pids;
}

std::size_t process_pool::replaced() const noexcept {
  std::lock_guard lock(m_state->mu);
  return m_state->replaced;
}

}  // namespace corio::ipc
