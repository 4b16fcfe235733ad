// corio::ipc::fork: run a C++ callable in a child process (the tutorial's
// multiprocessing.Process(target=f)), safely, from a busy multithreaded parent.
//
// Design: a fork server. fork_server::start(), called while the program is still
// single-threaded (first thing in main(), or from a static initializer; before any
// corio::runtime exists), forks one helper process. The helper has no threads and holds
// no locks; it sleeps in recvmsg() on a SOCK_SEQPACKET socketpair. ipc::fork() sends it
// a request: an entry function pointer, up to 64 KiB of argument bytes, up to 8 fds
// (SCM_RIGHTS) and the write end of a reply pipe. The helper clones itself with
// CLONE_PARENT (so the new process is *our* child: we hold a pidfd, await it with
// IORING_OP_WAITID and reap it like any spawned child) and replies with the pid, and so
// does the new process, first thing (so the reply comes if either of them dies or stops
// first); the new process then runs entry(bytes, fds), flushes stdio and _exit()s with
// the entry's result.
// Because the new process is a copy of the quiet helper, not of the busy parent, no lock
// that a parent thread held (malloc's, iostream's, a std::mutex, the runtime's) can be
// held forever in the child — the deadlock a plain fork() of a multithreaded process
// risks — and the child can build a fresh corio::runtime of its own.
//
// Limits (documented, by construction):
// - The child sees the program's memory as it was when the fork server started, not
//   the parent's current state: pass data as bytes (a trivially copyable callable is
//   copied over as bytes) or fds.
// - The entry must live in the executable or a library loaded before start() (a
//   function pointer is sent, valid in the helper's copy of the address space).
// - In the child, glibc's cached thread id of the main thread is the helper's (the raw
//   clone bypasses glibc's fork bookkeeping); it is used only for the owner field of
//   recursive/error-checking mutexes, where it stays consistent.
// - The helper exits when the parent closes the socket or dies (PR_SET_PDEATHSIG). The
//   death signal follows the *thread* that called fork_server::start(), not the
//   process: if that thread exits while the process goes on (start() called from a
//   short-lived thread), the helper is SIGKILLed and later fork() calls fail with
//   ENOTCONN. Call start() from the main thread.
//
// Parent death: by default every forked child (and so every process_pool worker) gets
// SIGKILL when the parent dies, even by kill -9, instead of running on as an orphan
// (fork_options::parent_death_signal; 0 turns it off). The child arms it before the
// entry runs and then checks that its parent is still the pid recorded before the
// clone: if the parent died in between, the child ends at once. As for the helper, the
// signal follows the thread that called fork_server::start() (the children's parent
// is that thread, through CLONE_PARENT).
//
// Signals: the child starts as an exec'd command does (command.hpp): every signal at its
// default disposition and none blocked, whatever the thread that called start() had
// (ipc::signals() blocks the signals it takes, so a server that opened it first would
// otherwise fork children that Ctrl-C and SIGTERM cannot stop). The helper itself keeps
// that thread's mask and ignores SIGPIPE. fork() may return before the child has reset
// its signals: it starts with every signal blocked, so a signal sent to it at once is
// delivered, with its default action, once the reset is done.
//
// Thread-safety: fork() from any worker, concurrently (one sendmsg per request; the
// helper answers in order). Cost: one sendmsg, one clone of the small helper (~100 µs),
// one pipe read and a pidfd_open.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <signal.h>

#include <cstddef>
#include <cstring>
#include <new>
#include <span>
#include <type_traits>
#include <vector>

#include <corio/ipc/process/child.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/runtime.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// What the fork server calls in the new process; returns its exit code.
using fork_entry = int (*)(std::span<const std::byte> args, std::span<const int> fds);

/// How fork_raw() / fork() make the child.
struct fork_options {
  /// The signal the child gets when its parent dies (PR_SET_PDEATHSIG; see the header
  /// comment); 0: none, the child may outlive its parent.
  int parent_death_signal = SIGKILL;
};

/// The process-wide fork server (see the header comment).
class fork_server {
 public:
  /// Starts the helper process. Call while the program is single-threaded. Idempotent.
  /// Errors: socketpair() / fork() failures.
  static result<void> start() noexcept;
  /// Closes the socket (the helper exits) and reaps the helper. Children already forked
  /// are unaffected.
  static void stop() noexcept;
  /// True between a successful start() and stop().
  [[nodiscard]] static bool running() noexcept;
  /// Largest argument payload of one request.
  static constexpr std::size_t max_args = 64 * 1024;
  /// Most fds passed with one request.
  static constexpr std::size_t max_fds = 8;
};

/// Runs `entry(args, fds)` in a new child process made by the fork server; yields the
/// child (await its wait()). The fds are duplicated into the child (the caller keeps its
/// own) and appear there as the `fds` span, in order.
/// `options`: see fork_options (by default the child is SIGKILLed when we die).
/// Errors: errc::no_runtime off a worker; ENOTCONN if the fork server was not started or
/// has died; EMSGSIZE above max_args / max_fds; invalid_argument for a bad signal; the
/// helper's clone errno (EAGAIN at the process limit).
/// Cancellation: the inherited token (when_any, timeout) is honoured only until the
/// request is sent (then operation_canceled, and no child exists). Once the request may
/// have been sent, the send and the reply are awaited uncancellably (one sendmsg and one
/// clone of the small helper: ~100 µs), so a child that was created is never lost: it is
/// returned even if a stop arrived meanwhile (timeout() then yields it, as it yields any
/// result that arrived). A caller that drops it (when_any's loser, a discarded result)
/// hands it to the orphan reaper through ~child: it is not killed, and it is reaped when
/// it exits. If the awaiting frame is destroyed before the reply came (its runtime
/// destroyed), the reply is read later, on a detached thread if it has not come yet, and
/// the child handed to the orphan reaper likewise.
task<result<child>> fork_raw(fork_entry entry, std::vector<std::byte> args, std::vector<int> fds = {},
                             fork_options options = {});

namespace detail {
template <class T>
struct is_task : std::false_type {};
template <class T>
struct is_task<task<T>> : std::true_type {};

template <class F>
int fork_trampoline(std::span<const std::byte> args, std::span<const int>) {
  alignas(F) unsigned char storage[sizeof(F)];
  std::memcpy(storage, args.data(), sizeof(F));  // implicitly creates the F (trivially copyable)
  F& fn = *std::launder(reinterpret_cast<F*>(storage));
  using R = std::invoke_result_t<F&>;
  if constexpr (is_task<R>::value) {
    runtime rt;  // the child's own, fresh runtime
    if constexpr (std::is_void_v<typename R::value_type>) {
      rt.block_on(fn());
      return 0;
    } else {
      return static_cast<int>(rt.block_on(fn()));
    }
  } else if constexpr (std::is_void_v<R>) {
    fn();
    return 0;
  } else {
    return static_cast<int>(fn());
  }
}
}  // namespace detail

/// Runs `fn()` in a new child process (see the header comment); its return value (int,
/// void → 0, or a task<int> / task<void> run on a fresh runtime in the child) becomes the
/// exit code. `fn` must be trivially copyable (a captureless lambda, or one capturing
/// plain values by copy): it travels as bytes. Errors: fork_raw()'s.
///
/// WARNING: capture by value only, and no pointers. `ipc::fork([&name] { ... })` and
/// `[p = name.data()]` compile (a reference or pointer capture is trivially copyable, and
/// C++ cannot tell it from a value), but the child gets an address from the parent's
/// memory that means nothing in its own copy of the fork server's memory: it crashes or
/// reads garbage. Copy what the child needs into the lambda (a number, a fixed array), or
/// pass it through a pipe, shared memory or fork_raw()'s argument bytes.
template <class F>
task<result<child>> fork(fork_options options, F fn) {
  static_assert(std::is_trivially_copyable_v<F>, "ipc::fork: the callable travels as bytes; capture plain values only");
  static_assert(sizeof(F) <= fork_server::max_args);
  std::vector<std::byte> bytes(sizeof(F));
  std::memcpy(bytes.data(), static_cast<const void*>(&fn), sizeof(F));
  return fork_raw(&detail::fork_trampoline<F>, std::move(bytes), {}, options);
}
/// fork() with the default options (the child is SIGKILLed when we die).
template <class F>
task<result<child>> fork(F fn) {
  return fork(fork_options{}, std::move(fn));
}

}  // namespace corio::ipc
