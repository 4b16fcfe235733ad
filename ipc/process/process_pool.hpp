// corio::ipc::process_pool: N worker processes running jobs (the tutorial's
// multiprocessing.Pool / ProcessPoolExecutor), as awaitables.
//
// Design: the workers are forked by the fork server (ipc/process/fork.hpp: call
// fork_server::start() first), so a job is a function pointer (pool_job_fn, valid in the
// worker: same executable image) plus bytes. Each worker talks to the parent over its own
// socketpair; it is single-threaded, has no runtime, and runs a blocking loop: read as
// many job frames as are there, run them in order, write all their results in one write.
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
// sockets; the workers exit on end-of-file and are reaped. It is idempotent and may be
// awaited by any number of tasks at once: the first call starts the shutdown as its own
// task; every call resumes once it is done. Destroying the pool without it SIGKILLs the
// workers (a running job is not waited for) and closes the sockets at once (the workers
// are reaped in the background by the orphan reaper); jobs still awaited then fail with
// pool_errc::shut_down.
//
// Cancellation: a job, once submitted, cannot be withdrawn: map(), map_unordered(),
// map_batched(), call() and submit() ignore the inherited token and resume only when
// every job of the call has a result (use a timeout around them only if you are ready
// to wait for the jobs anyway). shutdown(): a stop (when_any, timeout) ends that caller's
// wait with no error reported, but the shutdown itself goes on in the background
// (idempotent: a later shutdown() waits for the same one). start() is cancellable only
// before each worker's fork request is sent (see fork_raw).
//
// Thread-safety: every member may be called from any worker concurrently; one mutex
// guards the queues (no syscall under it). Resumes on: the worker that completed the
// batch's last result (rescheduled onto the thread set, never inline).
// Cost per item (per-item map): ~50 bytes of framing, amortized syscalls; see bench/process.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <corio/ipc/process/detail/pool_codec.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// Why a pool job failed.
enum class pool_errc {
  worker_crashed = 1,  ///< the worker process died while running this job
  job_threw,           ///< the job function threw (the worker goes on)
  shut_down,           ///< the pool was destroyed before the job finished
  no_workers,          ///< no worker process could be (re)started
};
const std::error_category& pool_category() noexcept;
inline std::error_code make_error_code(pool_errc e) noexcept { return {static_cast<int>(e), pool_category()}; }

namespace detail {
struct pool_state;
}

class process_pool {
 public:
  /// Starts `workers` worker processes. Errors: fork_raw()'s (ENOTCONN: no fork server).
  /// `window`: most jobs in flight per worker.
  static task<result<std::unique_ptr<process_pool>>> start(std::size_t workers, std::size_t window = 4096);
  /// Without a completed shutdown(): SIGKILLs the workers, fails awaited jobs with
  /// pool_errc::shut_down; the workers are reaped in the background. Never blocks.
  ~process_pool();
  process_pool(const process_pool&) = delete;
  process_pool& operator=(const process_pool&) = delete;

  /// Runs one job; yields its result bytes. Errors: pool_errc.
  /// Cancellation: none (a submitted job runs; see the header comment), as for every map.
  task<result<std::vector<std::byte>>> submit(pool_job_fn fn, std::vector<std::byte> job);
  /// Runs every job; results in job order.
  task<std::vector<result<std::vector<std::byte>>>> map(pool_job_fn fn, std::vector<std::vector<std::byte>> jobs);
  /// Runs every job; yields (job index, result) in completion order.
  task<std::vector<std::pair<std::size_t, result<std::vector<std::byte>>>>> map_unordered(
      pool_job_fn fn, std::vector<std::vector<std::byte>> jobs);

  /// Typed: Fn is `Out f(In)` (trivially copyable or std::string each way); one job per item.
  template <auto Fn>
  task<std::vector<result<typename detail::fn_traits<decltype(Fn)>::ret>>> map(
      std::vector<typename detail::fn_traits<decltype(Fn)>::arg> items) {
    using Out = typename detail::fn_traits<decltype(Fn)>::ret;
    detail::pool_batch b;
    b.fn = &detail::item_job<Fn>;
    b.in_off.reserve(items.size() + 1);
    for (const auto& x : items) {
      b.add_value(x);
    }
    co_await run(b);
    std::vector<result<Out>> out;
    out.reserve(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) {
      if (b.status[i] != 0) {
        out.emplace_back(unexpected(make_error_code(static_cast<pool_errc>(b.status[i]))));
      } else {
        out.emplace_back(detail::decode_value<Out>(b.result(i)));
      }
    }
    co_return out;
  }

  /// Typed, one job: yields Fn(value).
  template <auto Fn>
  task<result<typename detail::fn_traits<decltype(Fn)>::ret>> call(typename detail::fn_traits<decltype(Fn)>::arg value) {
    std::vector<typename detail::fn_traits<decltype(Fn)>::arg> one{std::move(value)};
    auto r = co_await map<Fn>(std::move(one));
    co_return std::move(r.front());
  }

  /// Typed and batched (trivially copyable In and Out): items travel in `chunk`-item jobs
  /// (0: split evenly, 4 chunks per worker), results in order. The first failed chunk's
  /// error fails the whole map.
  template <auto Fn>
  task<result<std::vector<typename detail::fn_traits<decltype(Fn)>::ret>>> map_batched(
      std::vector<typename detail::fn_traits<decltype(Fn)>::arg> items, std::size_t chunk = 0) {
    using In = typename detail::fn_traits<decltype(Fn)>::arg;
    using Out = typename detail::fn_traits<decltype(Fn)>::ret;
    if (chunk == 0) {
      std::size_t parts = size() * 4;
      chunk = (items.size() + parts - 1) / (parts == 0 ? 1 : parts);
      chunk = chunk == 0 ? 1 : chunk;
    }
    detail::pool_batch b;
    b.fn = &detail::chunk_job<Fn>;
    auto bytes = std::as_bytes(std::span(items));
    for (std::size_t i = 0; i < items.size(); i += chunk) {
      std::size_t n = std::min(chunk, items.size() - i);
      b.add(bytes.subspan(i * sizeof(In), n * sizeof(In)));
    }
    co_await run(b);
    std::vector<Out> out(items.size());
    auto* dst = reinterpret_cast<std::byte*>(out.data());
    std::size_t at = 0;
    for (std::size_t i = 0; i < b.size(); ++i) {
      if (b.status[i] != 0) {
        co_return unexpected(make_error_code(static_cast<pool_errc>(b.status[i])));
      }
      auto r = b.result(i);
      std::memcpy(dst + at, r.data(), r.size());
      at += r.size();
    }
    co_return out;
  }

  /// Lets every submitted job finish, then stops and reaps the workers. Idempotent and
  /// safe to await concurrently (every caller resumes when it is done). Cancellation: a
  /// stop ends this caller's wait early; the shutdown goes on (see the header comment).
  task<void> shutdown();

  [[nodiscard]] std::size_t size() const noexcept;
  /// The worker processes' pids (for tests and monitoring).
  [[nodiscard]] std::vector<pid_t> worker_pids() const;
  /// How many workers were replaced after crashing.
  [[nodiscard]] std::size_t replaced() const noexcept;

 private:
  explicit process_pool(std::shared_ptr<detail::pool_state> s) noexcept : m_state(std::move(s)) {}
  /// Queues every job of `b` and resumes when all have a result (or failed).
  task<void> run(detail::pool_batch& b);

  std::shared_ptr<detail::pool_state> m_state;
};

}  // namespace corio::ipc

template <>
struct std::is_error_code_enum<corio::ipc::pool_errc> : std::true_type {};
