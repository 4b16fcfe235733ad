// corio::ipc::process_pool: N worker processes running jobs (the tutorial's
// multiprocessing.Pool / ProcessPoolExecutor), as awaitables.
//
// Design: the workers are forked by the fork server (ipc/process/fork.hpp: call
// fork_server::start() first), so a job is a function pointer (pool_job_fn, valid in the
// worker: same executable image) plus bytes. The pointer never travels on the socket:
// the parent registers each job function in a table in the page it shares with each
// worker, and a frame names the function by its index; a worker runs only registered
// functions (a frame naming another, or longer than the limit below, makes it exit
// without running anything more; the parent recovers it as a crash). The typed calls
// (map<Fn>, call<Fn>, map_stream<Fn>, map_batched<Fn>) take a function or a lambda
// without captures as Fn; the untyped ones take any pool_job_fn, a captureless lambda
// included. A lambda that captures cannot be a job (its state would not exist in the
// worker): it does not compile.
//
// Limits: a job's bytes and a result's bytes are each at most pool_options::max_message
// (default and maximum 4 GiB - 1, what a 32-bit frame length holds). A longer job fails
// at once with pool_errc::job_too_large and is never sent; a longer result is dropped in
// the worker and its job fails with result_too_large; either way only that job fails and
// detail() gives both sizes. Each worker talks to the parent over its own
// socketpair; it runs jobs on one thread, has no runtime, and runs a blocking loop: read as
// many job frames as are there, run them in order, write all their results in one write.
// While a later job of the same read runs, the results already done wait in an outbox
// that a second thread of the worker writes once the oldest is 1 ms old: no result waits
// behind a slow job for more than about a millisecond, and a read of many quick jobs
// still costs one write (and, when it holds more than one job, one wake of that thread).
// That thread blocks every signal (a job's own handlers run on the job's thread); where it
// cannot be started (a thread limit), results are written before each later job instead.
// So a job runs in a process that may have two threads: a fork() in a job forks one of
// them, and what refuses a multi-threaded process (unshare(CLONE_NEWUSER)) fails there.
// The parent keeps at most `window` jobs in flight per worker, feeds them through one
// writer task and one reader task per worker (io_uring reads/writes on a worker), and
// hands the rest out as results come back. Per-item dispatch therefore costs a few
// memcpys, not a syscall round trip, per item.
//
// Crashes: before each job the worker writes the job's id to a shared-memory word (a
// memfd page shared with the parent), and clears it after. When a worker's socket hits
// end-of-file unexpectedly, the job whose id is in that word fails with
// pool_errc::worker_crashed; its other unanswered jobs (not started, or finished but not
// yet reported) go back to the queue at once (the surviving workers take them; so a job
// may run twice if its worker died after running it: at-least-once, except the crashing
// job, which never reruns); a replacement worker is forked; the other workers go on. If
// no replacement can be forked, the survivors run the rest; with no survivor, every
// pending job fails with pool_errc::no_workers. A result frame that matches no job in
// flight (a corrupted stream) is treated as a crash: the worker is SIGKILLed first. A
// worker socket read that is cancelled (runtime shutdown) is not a crash: its jobs fail
// with pool_errc::shut_down and no replacement is forked.
//
// Shutdown: `co_await shutdown()` lets every submitted job finish, then closes the
// sockets; the workers exit on end-of-file and are reaped. A call made once shutdown()
// has begun runs nothing: its jobs fail at once with pool_errc::shut_down. shutdown() is
// idempotent and may be awaited by any number of tasks at once: the first call starts the
// shutdown as its own task; every call resumes once it is done. Destroying the pool
// without it SIGKILLs the workers (a running job is not waited for) and closes the
// sockets at once (the workers are reaped in the background by the orphan reaper); jobs
// still awaited then fail with pool_errc::shut_down.
//
// Cancellation: every call — submit(), call(), map(), map_unordered(), map_batched(),
// and the stream of map_stream() — takes an explicit std::stop_token, and the calls that
// are awaited also honour the inherited token (when_any, timeout). On a stop, the call's
// jobs that no worker has been sent yet are withdrawn (they never run); jobs already
// written to a worker's socket but not yet started are withdrawn too (the parent sets
// their bit in the worker's shared page; the worker skips them); a job already running
// runs to its end (a worker runs jobs on one thread and is not killed for it). The call then
// resumes at once, every job without a result yielding std::errc::operation_canceled;
// results of its jobs that arrive later are dropped (the call's state may be gone by
// then: a cancelled job is unlinked from it under the pool's mutex). Other calls and
// shutdown() go on unaffected (shutdown() still waits for a running cancelled job).
// shutdown(): a stop (when_any, timeout) ends that caller's wait with no error reported,
// but the shutdown itself goes on in the background (idempotent: a later shutdown()
// waits for the same one). start() is cancellable only before each worker's fork request
// is sent (see fork_raw).
//
// Errors: a failed job's result is a pool_result<T>: a result<T> (error() is a
// pool_errc or operation_canceled) whose detail() says what failed — for
// pool_errc::job_threw the exception's what() text from the worker (also
// exception_message()), for worker_crashed the worker's pid and the signal or exit
// status it died with; error_message() combines the code's message and the detail. The vector-returning calls
// return pool_results<…>, a std::vector that still converts to the std::vector<result<T>>
// these calls returned before.
//
// Streaming: map_stream() queues the jobs and returns a pool_stream at once; `co_await
// s.next()` yields each (index, result) as its job completes (completion order), then
// errc::closed once all have been yielded. See pool_stream.
//
// Thread-safety: every member may be called from any worker concurrently; one mutex
// guards the queues (no syscall under it). Resumes on: the worker that completed the
// batch's last result, or for a cancelled call the thread that requested the stop
// (rescheduled onto the caller's runtime, never inline).
// Cost per item (per-item map): ~50 bytes of framing, amortized syscalls, and in the
// worker one clock read and one load of its withdrawal bit; see bench/process. A cancel
// walks the pending queue and every worker's in-flight jobs once, under the mutex.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <corio/ipc/process/detail/pool_codec.hpp>
#include <corio/ipc/process/process_result.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>
#include <corio/sync/channel.hpp>

namespace corio::ipc {

/// Why a pool job failed (a cancelled call's jobs yield std::errc::operation_canceled).
enum class pool_errc {
  worker_crashed = 1,  ///< the worker process died while running this job (detail(): how)
  job_threw,           ///< the job function threw (the worker goes on); see pool_result
  shut_down,           ///< the pool was destroyed before the job finished, or the call came after shutdown() began
  no_workers,          ///< no worker process could be (re)started
  job_too_large,       ///< the job's bytes are over pool_options::max_message (it never ran)
  result_too_large,    ///< the job's result is over pool_options::max_message (it was dropped)
  too_many_functions,  ///< the pool already runs max_job_functions distinct job functions
};
/// The category of pool_errc.
const std::error_category& pool_category() noexcept;
/// Lets a pool_errc compare with and convert to std::error_code.
inline std::error_code make_error_code(pool_errc e) noexcept { return {static_cast<int>(e), pool_category()}; }

/// One job's outcome: a process_result<T> (so `r.error() == pool_errc::job_threw` works
/// as for any result) whose detail() says what failed: the text of the exception the job
/// threw, the exit status or signal of the worker that died under it, the size of a job
/// or result over the pool's limit.
/// Thread-safety: a plain value. Cost: one empty std::string beside the result.
template <class T>
class pool_result : public process_result<T> {
 public:
  using process_result<T>::process_result;
  /// Wraps a plain result (no detail).
  pool_result(result<T> r) noexcept(std::is_nothrow_move_constructible_v<result<T>>) : process_result<T>(std::move(r)) {}
  /// A failure; `detail` says what failed (see the class comment).
  static pool_result failure(std::error_code ec, std::string detail = {}) {
    pool_result r{unexpected(ec)};
    r.set_detail(std::move(detail));
    return r;
  }
  /// The what() text of the exception the job threw (error() == pool_errc::job_threw;
  /// "unknown exception" for one not derived from std::exception; cut at 4 KiB); empty
  /// otherwise.
  [[nodiscard]] const std::string& exception_message() const noexcept {
    static const std::string none;
    return !this->has_value() && this->error() == pool_errc::job_threw ? this->detail() : none;
  }
};

namespace detail {
template <class E>
struct legacy_element {
  using type = E;
};
template <class T>
struct legacy_element<pool_result<T>> {
  using type = result<T>;
};
template <class T>
struct legacy_element<std::pair<std::size_t, pool_result<T>>> {
  using type = std::pair<std::size_t, result<T>>;
};

/// The error a job status stands for (status != 0).
inline std::error_code status_error(std::uint32_t status) noexcept {
  if (status == status_cancelled || status == status_withdrawn) {
    return cancelled_error();
  }
  return make_error_code(static_cast<pool_errc>(status));
}
/// A failed job's pool_result (a failure's payload is its text: see pool_result).
template <class T>
pool_result<T> job_failure(std::uint32_t status, std::span<const std::byte> payload) {
  std::string what(reinterpret_cast<const char*>(payload.data()), payload.size());
  return pool_result<T>::failure(status_error(status), std::move(what));
}
/// Decodes one job's outcome as a T.
template <class T>
pool_result<T> job_outcome(std::uint32_t status, std::span<const std::byte> payload) {
  if (status != 0) {
    return job_failure<T>(status, payload);
  }
  if constexpr (std::is_same_v<T, std::vector<std::byte>>) {
    return T(payload.begin(), payload.end());
  } else {
    return decode_value<T>(payload);
  }
}
}  // namespace detail

/// The results of a multi-job call: a std::vector of pool_result (or of (index,
/// pool_result) pairs), which still converts to the std::vector<result<T>> (pairs of
/// result<T>) the calls returned before pool_result existed (dropping the texts).
template <class E>
class pool_results : public std::vector<E> {
 public:
  /// The plain vector type the results convert to.
  using legacy = std::vector<typename detail::legacy_element<E>::type>;
  using std::vector<E>::vector;
  /// Converts to the plain vector, moving the results (the exception texts are dropped).
  operator legacy() && {
    legacy out;
    out.reserve(this->size());
    for (auto& e : *this) {
      out.emplace_back(std::move(e));
    }
    return out;
  }
  /// Converts to the plain vector, copying the results (the exception texts are dropped).
  operator legacy() const& {
    legacy out(this->begin(), this->end());
    return out;
  }
};

/// One completed job of a map_stream(): its index in the submitted jobs and its outcome.
template <class T>
struct pool_item {
  /// The job's position in the submitted jobs.
  std::size_t index;
  /// The job's outcome.
  pool_result<T> value;
};

namespace detail {
struct pool_state;

/// A streamed result as the pool hands it over (under its mutex), before decoding.
struct raw_item {
  std::size_t index;
  std::uint32_t status;
  std::vector<std::byte> bytes;
};

/// The untyped body of a pool_stream (process_pool.cpp). Heap-allocated: the pool
/// points at it while its jobs run.
class stream_core {
 public:
  stream_core(std::shared_ptr<pool_state> pool, pool_job_fn fn, std::stop_token token);
  /// Withdraws what has no result yet (see cancel()), then frees everything.
  ~stream_core();
  stream_core(const stream_core&) = delete;
  stream_core& operator=(const stream_core&) = delete;

  /// Queues every job of `batch` (call once, on a worker thread, after filling it).
  void submit();
  /// Withdraws every job without a result; each yields operation_canceled. Idempotent.
  void cancel() noexcept;

  pool_batch batch;
  channel<raw_item> items{unbounded_capacity};

 private:
  struct cancel_fn {
    stream_core* self;
    void operator()() const noexcept { self->cancel(); }
  };
  static void sink(void* ctx, std::size_t index, std::uint32_t status, std::span<const std::byte> payload);

  std::shared_ptr<pool_state> m_pool;
  std::stop_token m_token;
  std::optional<std::stop_callback<cancel_fn>> m_stop;
};
}  // namespace detail

/// corio::ipc::pool_stream<T>: the results of a map_stream() call, in completion order.
///
/// Concept: `while (auto it = co_await s.next()) { use(it->index, it->value); }` — next()
/// yields a pool_item<T> as each job completes, then errc::closed once every job's item
/// was taken (exactly one item per job: a failed, crashed or cancelled job yields its
/// error). Cancellation: the token given to map_stream(), cancel(), or destroying the
/// stream withdraws the jobs that have no result yet (as for the other calls: jobs not
/// yet started never run); their items then arrive at once with operation_canceled. A
/// stop of next()'s own wait (its token, or the inherited one: timeout, when_any) ends
/// only that wait with operation_canceled and takes nothing (the jobs go on; call next()
/// again) — the same cancel-safety as channel::recv.
/// Thread-safety: one consumer at a time; cancel() from any thread. The stream must
/// outlive a next() being awaited. Cost: one channel send (under the pool's mutex) and
/// one copy of the result bytes per job; next() is one task frame and one channel recv.
template <class T>
class pool_stream {
 public:
  /// Made by process_pool::map_stream().
  explicit pool_stream(std::unique_ptr<detail::stream_core> core) noexcept : m_core(std::move(core)) {}

  /// Awaits the next completed job (see the class comment).
  /// Errors: errc::closed (every item taken), operation_canceled (this wait stopped).
  task<result<pool_item<T>>> next(std::stop_token token = {}) {
    auto r = co_await m_core->items.recv(std::move(token));
    if (!r) {
      co_return unexpected(r.error());
    }
    co_return pool_item<T>{r->index, detail::job_outcome<T>(r->status, r->bytes)};
  }
  /// Withdraws the jobs that have no result yet (idempotent; any thread).
  void cancel() noexcept { m_core->cancel(); }
  /// How many jobs were submitted (= how many items next() yields).
  [[nodiscard]] std::size_t size() const noexcept { return m_core->batch.size(); }

 private:
  std::unique_ptr<detail::stream_core> m_core;
};

/// How to start a process_pool (designated initializers read well:
/// `process_pool::start({.workers = 4, .max_message = 1 << 20})`).
struct pool_options {
  /// Worker processes (at least 1).
  std::size_t workers = 1;
  /// Most jobs in flight per worker (clamped to 1 .. 2^20).
  std::size_t window = 4096;
  /// The longest job and the longest result, in bytes (clamped to 4 GiB - 1, what a
  /// frame can carry). A larger job fails at once with pool_errc::job_too_large, a
  /// larger result with result_too_large; only that job fails, the worker goes on.
  std::size_t max_message = detail::max_frame_payload;
};

/// A pool of forked worker processes running jobs (function pointers and bytes), like
/// Python's multiprocessing.Pool; see the header.
class process_pool {
 public:
  /// Starts `workers` worker processes. Errors: invalid_argument for 0 workers;
  /// fork_raw()'s (ENOTCONN: no fork server). `window`: most jobs in flight per worker.
  static task<result<std::unique_ptr<process_pool>>> start(std::size_t workers, std::size_t window = 4096);
  /// Starts a pool as `options` say (see pool_options). Errors: as start(workers).
  static task<result<std::unique_ptr<process_pool>>> start(pool_options options);
  /// Without a completed shutdown(): SIGKILLs the workers, fails awaited jobs with
  /// pool_errc::shut_down; the workers are reaped in the background. Never blocks.
  ~process_pool();
  process_pool(const process_pool&) = delete;
  process_pool& operator=(const process_pool&) = delete;

  /// Runs one job; yields its result bytes. Errors: pool_errc, operation_canceled.
  /// Cancellation: `token` and the inherited token (see the header comment).
  task<pool_result<std::vector<std::byte>>> submit(pool_job_fn fn, std::vector<std::byte> job, std::stop_token token = {});
  /// Runs every job; results in job order. Cancellation: as submit().
  task<pool_results<pool_result<std::vector<std::byte>>>> map(pool_job_fn fn, std::vector<std::vector<std::byte>> jobs,
                                                               std::stop_token token = {});
  /// Runs every job; yields (job index, result) in completion order, once all are done.
  /// Cancellation: as submit(). For results as they come, see map_stream().
  task<pool_results<std::pair<std::size_t, pool_result<std::vector<std::byte>>>>> map_unordered(
      pool_job_fn fn, std::vector<std::vector<std::byte>> jobs, std::stop_token token = {});
  /// Queues every job and returns at once; the stream yields (index, result) as each
  /// completes. Cancellation: `token` withdraws the jobs still without a result (see
  /// pool_stream). Must be called on a worker thread.
  pool_stream<std::vector<std::byte>> map_stream(pool_job_fn fn, std::vector<std::vector<std::byte>> jobs,
                                                 std::stop_token token = {});

  /// Typed: Fn is `Out f(In)` (trivially copyable or std::string each way), a function
  /// or a lambda without captures (`map<[](int x) { return x * x; }>(xs)`: it runs in
  /// another process, so it cannot capture; a capturing lambda does not compile); one job
  /// per item. Cancellation: as submit().
  template <auto Fn>
  task<pool_results<pool_result<typename detail::job_traits<Fn>::ret>>> map(
      std::vector<typename detail::job_traits<Fn>::arg> items, std::stop_token token = {}) {
    using Out = typename detail::job_traits<Fn>::ret;
    detail::pool_batch b;
    b.fn = &detail::item_job<Fn>;
    b.in_off.reserve(items.size() + 1);
    for (const auto& x : items) {
      b.add_value(x);
    }
    co_await run(b, std::move(token));
    pool_results<pool_result<Out>> out;
    out.reserve(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) {
      out.push_back(detail::job_outcome<Out>(b.status[i], b.result(i)));
    }
    co_return out;
  }

  /// Typed and streaming: as map_stream(), each item decoded as Fn's result type.
  template <auto Fn>
  pool_stream<typename detail::job_traits<Fn>::ret> map_stream(
      std::vector<typename detail::job_traits<Fn>::arg> items, std::stop_token token = {}) {
    auto core = std::make_unique<detail::stream_core>(m_state, &detail::item_job<Fn>, std::move(token));
    for (const auto& x : items) {
      core->batch.add_value(x);
    }
    core->submit();
    return pool_stream<typename detail::job_traits<Fn>::ret>(std::move(core));
  }

  /// Typed, one job: yields Fn(value). Cancellation: as submit().
  template <auto Fn>
  task<pool_result<typename detail::job_traits<Fn>::ret>> call(typename detail::job_traits<Fn>::arg value,
                                                                         std::stop_token token = {}) {
    std::vector<typename detail::job_traits<Fn>::arg> one{std::move(value)};
    auto r = co_await map<Fn>(std::move(one), std::move(token));
    co_return std::move(r.front());
  }

  /// Typed and batched (trivially copyable In and Out): items travel in `chunk`-item jobs
  /// (0: split evenly, 4 chunks per worker, each within max_message both ways), results
  /// in order. The first failed chunk's error (with its exception text) fails the whole
  /// map. Cancellation: as submit().
  /// Cost: bulk data moves in large contiguous blocks: `items` is moved (not copied) into
  /// shared ownership and each chunk is written to a worker's socket straight from it, one
  /// frame per chunk; the output is allocated once at its final size and each chunk's
  /// result is copied into its place as it arrives (one memcpy under the pool's mutex).
  /// The worker keeps its buffers between calls. No per-item allocation or regrowth on
  /// either side; see bench/process (`process_bench bulk`).
  template <auto Fn>
  task<pool_result<std::vector<typename detail::job_traits<Fn>::ret>>> map_batched(
      std::vector<typename detail::job_traits<Fn>::arg> items, std::size_t chunk = 0, std::stop_token token = {}) {
    using In = typename detail::job_traits<Fn>::arg;
    using Out = typename detail::job_traits<Fn>::ret;
    // Within the frame limit both ways (a chunk over it would fail as too large).
    std::size_t fit = std::max<std::size_t>(1, max_message() / std::max(sizeof(In), sizeof(Out)));
    if (chunk == 0) {
      std::size_t parts = std::max<std::size_t>(1, size() * 4);
      chunk = std::clamp<std::size_t>((items.size() + parts - 1) / parts, 1, fit);
    }
    std::size_t n = items.size();
    auto input = std::make_shared<const std::vector<In>>(std::move(items));  // a move: no copy
    std::vector<Out> out(n);
    detail::pool_batch b;
    b.fn = &detail::chunk_job<Fn>;
    b.borrow(std::as_bytes(std::span(*input)), input);
    std::vector<std::size_t> at{0};
    at.reserve(n / chunk + 2);
    for (std::size_t i = 0; i < n; i += chunk) {
      std::size_t k = std::min(chunk, n - i);
      b.add_slice(k * sizeof(In));
      at.push_back(at.back() + k * sizeof(Out));
    }
    b.deliver_to(reinterpret_cast<std::byte*>(out.data()), std::move(at));
    co_await run(b, std::move(token));
    for (std::size_t i = 0; i < b.size(); ++i) {
      if (b.status[i] != 0) {
        co_return detail::job_failure<std::vector<Out>>(b.status[i], b.result(i));
      }
      if (b.placed[i] == 0) {
        // A result of another size than its chunk's (chunk_job never makes one).
        co_return pool_result<std::vector<Out>>::failure(std::make_error_code(std::errc::bad_message),
                                                         "a chunk's result has the wrong size");
      }
    }
    co_return out;
  }

  /// Lets every submitted job finish, then stops and reaps the workers. Idempotent and
  /// safe to await concurrently (every caller resumes when it is done). Cancellation: a
  /// stop ends this caller's wait early; the shutdown goes on (see the header comment).
  task<void> shutdown();

  /// How many worker processes the pool runs now: a dead worker is not counted (its
  /// replacement is, once started), nor are workers after shutdown() reaped them.
  [[nodiscard]] std::size_t size() const noexcept;
  /// The longest job or result in bytes (pool_options::max_message after clamping).
  [[nodiscard]] std::size_t max_message() const noexcept;
  /// The live worker processes' pids (for tests and monitoring), as size() counts them: a
  /// pid is left out once the pool has seen that worker die, since it may be reaped and
  /// reused. (A worker that dies is reaped just before the pool marks it dead: a pid read
  /// in that instant may already be free.)
  [[nodiscard]] std::vector<pid_t> worker_pids() const;
  /// How many workers died outside a shutdown (crashed, killed, or broke the protocol);
  /// each is replaced by a new worker when one can be started. A death counts as soon as
  /// its crashed job has failed: the caller that sees worker_crashed sees it here too.
  [[nodiscard]] std::size_t replaced() const noexcept;

 private:
  explicit process_pool(std::shared_ptr<detail::pool_state> s) noexcept : m_state(std::move(s)) {}
  /// Queues every job of `b` and resumes when all have a result (or failed, or were
  /// cancelled through `token` or the inherited token).
  task<void> run(detail::pool_batch& b, std::stop_token token);

  std::shared_ptr<detail::pool_state> m_state;
};

}  // namespace corio::ipc

template <>
struct std::is_error_code_enum<corio::ipc::pool_errc> : std::true_type {};
