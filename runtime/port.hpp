// corio::port: the one contract between the runtime and everything that waits.
//
// Every awaitable in corio — I/O (io_op), timers, spawn_blocking, the sync primitives, the
// IPC layers — reaches the scheduler only through the entry points below, as Tokio's
// drivers do through their driver handle. The worker, its queues, its io_uring, the
// timer heap, the blocking pool and the runtime's shared state are private to runtime/
// (runtime/internal/, not installed). Code outside runtime/ includes this header and the
// public headers of the layers below it, never a runtime/detail/ or runtime/internal/
// header (tools/check_layers.sh fails the build's `unit` suite and CI otherwise). A user
// writing an awaitable of their own uses the same entry points.
//
// Vocabulary (the types are opaque outside runtime/):
//   detail::worker*        one worker thread of a runtime. Its io_uring, its timer heap and
//                          its queues belong to that thread: entries marked "owner" must
//                          be called on it (the `owner` a cancellable or timer names).
//   detail::runtime_core*  a runtime: where a coroutine is rescheduled (its "home").
//   io_completion          what an SQE's user_data points to; on_cqe runs on the owner.
//   cancellable            a request handed to a worker from any thread: a stop request
//                          (request_cancel()), a doorbell or a job (post()). Its
//                          on_cancel_drained runs on the owner in its next maintenance pass.
//   timer_node             a sleep's node in its worker's timer heap.
//   blocking_job           a job for the runtime's elastic blocking thread pool.
// See runtime/detail/completion.hpp for the state machine these types share.
//
// Each entry states its thread-safety and cost. "Any thread" includes threads that are
// not workers of any runtime; "worker" means a worker thread of the runtime concerned.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <liburing.h>

#include <coroutine>
#include <cstdint>

#include <corio/runtime/detail/completion.hpp>
#include <corio/runtime/detail/stop_link.hpp>
#include <corio/runtime/detail/uring_compat.hpp>

namespace corio::detail {
class worker;
class runtime_core;
}  // namespace corio::detail

namespace corio::port {

using detail::blocking_job;
using detail::cancellable;
using detail::io_completion;
using detail::timer_node;
/// Two stop callbacks (explicit and inherited token) in one pointer: see stop_link.hpp.
template <class Fn>
using stop_link = detail::stop_link<Fn>;
/// io_uring opcodes and SQE fills newer than liburing 2.3 (futex wait/wake, waitid, bind,
/// listen, pipe) and the kernel-release check: see runtime/detail/uring_compat.hpp.
namespace uring = detail::uring;

// ---------------------------------------------------------------------------------------
// Where am I. Any thread; one thread-local load each.

/// The worker running on this thread, or nullptr outside every runtime.
detail::worker* current_worker() noexcept;
/// The runtime this thread works for, or nullptr outside every runtime.
detail::runtime_core* current_runtime() noexcept;
/// The runtime `w` belongs to. Any thread, while `w` is alive.
detail::runtime_core* runtime_of(detail::worker* w) noexcept;
/// A number unique to `w` in this process (never reused, unlike its address): the
/// liveness key of post(). Any thread, while `w` is alive.
std::uint64_t serial(detail::worker* w) noexcept;

/// True once `rt` has begun shutting down: workers stop taking tasks, rings are being
/// drained, suspended frames are about to be destroyed in arbitrary order. An operation
/// that re-arms itself (a multishot) must not add SQEs then; a primitive destroyed under
/// a waiter of a stopping runtime is not a bug. Any thread while `rt` is alive; one
/// acquire load.
bool stopping(detail::runtime_core* rt) noexcept;
/// stopping(runtime_of(w)).
bool stopping(detail::worker* w) noexcept;

// ---------------------------------------------------------------------------------------
// Scheduling: making a suspended coroutine runnable. Never resumes it inline.

/// Makes `h` (a coroutine of runtime `home`) runnable. From a worker of `home`: into that
/// worker's LIFO slot (runs next, cheap hand-off). From any other thread: through
/// `home`'s global queue, waking an idle worker if none is searching. Any thread.
/// Cost: a few stores on a worker; a lock, a store-load barrier and maybe a futex wake
/// from elsewhere. After shutdown began the handle is dropped (shutdown destroys it).
void wake(std::coroutine_handle<> h, detail::runtime_core* home) noexcept;
/// Puts `h` at the back of the current worker's queue (a yield): the other runnable
/// tasks go first. Worker only (aborts elsewhere). Cost: a queue push; a wake of an idle
/// worker only if more than `h` is queued.
void yield(std::coroutine_handle<> h) noexcept;
/// Puts `h` at the back of `w`'s queue (where an I/O completion resumes its waiter).
/// Owner only. Cost: a queue push, maybe a wake of an idle worker.
void resume_later(detail::worker* w, std::coroutine_handle<> h) noexcept;
/// Symmetric-transfer guard: returns `next`, or — past a depth limit per scheduler tick
/// (g++ at -O0 compiles symmetric transfer without a tail call) — queues `next` on the
/// current worker and returns noop_coroutine() so the stack unwinds. Use it for every
/// handle an await_suspend or final_suspend returns. Any thread; a TLS load and an add.
std::coroutine_handle<> transfer(std::coroutine_handle<> next) noexcept;
/// Charges one unit of the running task's cooperative budget (128 per scheduler tick).
/// Returns true when it is spent: an awaitable that could complete synchronously should
/// then suspend and yield() instead, so a task that never waits cannot starve the others.
/// Any thread (false off a worker); a TLS load and a decrement.
bool consume_budget() noexcept;

// ---------------------------------------------------------------------------------------
// The worker's io_uring. Owner only: rings are created IORING_SETUP_SINGLE_ISSUER.

/// An SQE to fill, on `w`'s ring; never null (a full SQ is flushed first). It goes to the
/// kernel with the worker's next batch. Its user_data must point to an io_completion
/// whose on_cqe will run on `w`; the operation counts as in flight (runtime shutdown
/// waits for it) until its CQE — for a multishot, until the CQE without
/// IORING_CQE_F_MORE. Cost: a few loads and stores (a submit when the SQ is full).
io_uring_sqe* get_sqe(detail::worker* w);
/// Submits IORING_OP_ASYNC_CANCEL for the operation whose user_data is `target`, with
/// the next batch; its own completion is ignored. `target` still gets its CQE (usually
/// -ECANCELED, or its real result if it won the race). Cost: one SQE.
void cancel(detail::worker* w, io_completion* target);
/// Cancels every operation on descriptor `fd` in `w`'s ring (IORING_ASYNC_CANCEL_FD |
/// IORING_ASYNC_CANCEL_ALL, Linux 5.19+: see features().cancel_fd), submitted at once so
/// that it runs before a close(fd) that follows (the kernel resolves `fd` when the
/// cancel runs). Operations on `fd` in other workers' rings are not touched: post() a
/// job to each owner for those. Their CQEs arrive later (usually -ECANCELED). Returns
/// false if the kernel lacks the flag (nothing was submitted). Cost: one SQE and one
/// io_uring_enter.
bool cancel_fd(detail::worker* w, int fd);
/// Provided-buffer rings (IORING_REGISTER_PBUF_RING) on `w`'s ring: registers `entries`
/// (a power of two) entries at `br` (page aligned, caller's memory) as group `bgid`.
/// Returns 0 or a negative errno. Cost: one io_uring_register syscall.
int register_buf_ring(detail::worker* w, io_uring_buf_ring* br, unsigned entries, unsigned short bgid) noexcept;
/// Unregisters buffer group `bgid` from `w`'s ring. Returns 0 or a negative errno. Cost:
/// one io_uring_register syscall.
int unregister_buf_ring(detail::worker* w, unsigned short bgid) noexcept;

/// What the running kernel's io_uring can do, probed once per process (an opcode probe
/// for opcodes, the kernel release for flags the probe cannot see). Every worker's ring
/// sees the same kernel, so one answer serves all.
struct ring_features {
  bool futex = false;             ///< IORING_OP_FUTEX_WAIT/WAKE (6.7): futex words in the ring
  bool waitid = false;            ///< IORING_OP_WAITID (6.7)
  bool multishot_accept = false;  ///< IORING_ACCEPT_MULTISHOT (5.19)
  bool multishot_recv = false;    ///< IORING_RECV_MULTISHOT with provided-buffer rings (6.0)
  bool cancel_fd = false;         ///< IORING_ASYNC_CANCEL_FD (5.19)
  bool bind_listen = false;       ///< IORING_OP_BIND/LISTEN (6.11)
  bool pipe = false;              ///< IORING_OP_PIPE (6.16)
};
/// Any thread. The first call probes (creates and closes a small ring, ~50 µs); later
/// calls are one load. All false where io_uring is refused.
const ring_features& features() noexcept;
/// Whether the kernel's io_uring knows `opcode` (the same probe). Any thread; one load.
bool supports(unsigned opcode) noexcept;

// ---------------------------------------------------------------------------------------
// Handing work to a worker from any thread.

/// Pushes `job` on `w`'s cancel list: its on_cancel_drained then runs on `w` in its next
/// maintenance pass (waking `w` if it is parked) — the way to reach a worker's ring from
/// another thread (a doorbell, an unregistration, cancel_fd on that ring). `w` may be
/// destroyed already: it is found by `worker_serial` (serial(w), taken while it was
/// alive). Returns false, pushing nothing, once `w` has finished its shutdown drain (or
/// is gone); a push that succeeds is always drained while w's ring is still open.
/// `job->cancel_state` is not used. Any thread. Cost: one CAS on w's own thread; from
/// elsewhere also a global mutex (the liveness check), a store-load barrier and maybe a
/// futex wake.
bool post(detail::worker* w, std::uint64_t worker_serial, cancellable* job) noexcept;

// ---------------------------------------------------------------------------------------
// Timers: the worker's heap (no kernel timer per sleep). Owner only.

/// Arms `t` (deadline_ns on the steady clock, ns since its epoch; owner, waiter,
/// on_resume and on_cancel_drained set first); when due, the worker calls t->finished()
/// with t->res = 0. If `w` is late (stuck in a long task) another worker may fire it
/// instead: it then sets t->owner to itself and resumes t->waiter itself, without
/// calling on_resume. Either way the awaiter must not touch `t` after this call, which
/// must be the last thing its await_suspend does. Cost: O(log n) under the worker's
/// timer lock.
void arm_timer(detail::worker* w, timer_node* t);
/// Takes an armed `t` out of the heap (after a stop request drained); nothing if another
/// worker took it over meanwhile. Cost: O(log n).
void disarm_timer(detail::worker* w, timer_node* t);
/// Makes the waiter of a fired timer runnable; due timers run before the rest of the
/// worker's queue, in deadline order. Cost: a deque push.
void resume_timer(detail::worker* w, std::coroutine_handle<> h);

// ---------------------------------------------------------------------------------------
// The blocking pool (spawn_blocking). Any thread.

/// Queues `job` on `rt`'s blocking pool; job->run() then runs on a pool thread (which
/// must wake its awaiter itself, e.g. with wake()). Returns false after shutdown began,
/// or when blocking_withdraw(job) came first (the job is then never run);
/// throws std::system_error (nothing queued) when the pool has no thread and the system
/// refuses to start one, std::bad_alloc when the queue cannot grow. A job is submitted at
/// most once: a job that was withdrawn or has run is never submitted again (a withdraw
/// that found it started or finished flags it too, and the pool then refuses it for good).
/// Cost: a lock and a condition-variable signal (a thread start when none is idle).
bool blocking_submit(detail::runtime_core* rt, blocking_job* job);
/// Removes `job` if it has not started; returns true if it was removed (run() will not
/// be called). Returns false for a job not queued: started or finished (it cannot be
/// interrupted), or not submitted yet (a later blocking_submit then refuses it).
/// Cost: a lock and a queue search.
bool blocking_withdraw(detail::runtime_core* rt, blocking_job* job);

// ---------------------------------------------------------------------------------------
// Futex words (the ring waits with uring::prep_futex_wait; see features().futex).

/// FUTEX_WAKE of up to `count` waiters on `word` — threads in futex(2) and ring waits
/// (IORING_OP_FUTEX_WAIT) alike. `process_private`: the word is not in memory shared
/// with another process (cheaper key); it must match the waiters' flag. Returns how many
/// were woken, or a negative errno. Any thread. Cost: one syscall.
int futex_wake(const std::uint32_t* word, int count, bool process_private) noexcept;

/// Spin-wait hint for a loop polling a word another thread will change (x86 `pause`,
/// ARM `yield`; nothing elsewhere). Any thread; a few cycles.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace corio::port
