// corio::ipc::signals(), signal_stream and ctrl_c(): POSIX signals as an awaitable stream.
//
// Concept: signals({SIGINT, SIGTERM}) opens a signalfd(2) for that set; next() awaits the
// next of those signals sent to the process (kill(2), Ctrl-C in a terminal, a service
// manager's SIGTERM) and yields its number and sender. ctrl_c() awaits one SIGINT. A
// server's main task awaits it next to its accept loop and then shuts down cleanly
// (examples/ipc/echo_server.cpp).
//
// The signal mask: a signalfd sees a process-directed signal only while every thread of
// the process blocks it (a thread that does not receives it with its disposition, by
// default death). corio makes sure no thread takes that default:
//   - opening a stream blocks the set in the calling thread; threads created afterwards
//     (a runtime's workers and blocking-pool threads, threads of yours) inherit the mask;
//   - threads that already ran (workers started earlier, the thread waiting in
//     runtime::block_on, a thread of yours) get corio's handler for each signal of the
//     set instead of the default: the first time the signal lands on such a thread, the
//     handler records it (its number and sender) for the streams, wakes them, and blocks
//     the signal on that thread from then on (through the mask the kernel restores when
//     the handler returns; best effort: a sanitizer that defers handlers may not honour
//     it, and the handler then simply runs again next time).
//   So a stream gets every signal of its set sent to the process, whichever thread the
//   kernel picked; as always with standard signals, two deliveries before a read may
//   arrive as one. (A signal sent to one thread with pthread_kill/tgkill reaches a
//   stream only if that thread does not block it yet: else it stays pending there.)
// Best practice: open the stream in main() before creating the runtime, so every thread
// blocks the set and the handler never runs. Where it runs, it interrupts at most one
// system call on that thread (it is SA_RESTART; a worker's io_uring wait just wakes up).
// Children: command::spawn() starts every child with an empty mask and default
// dispositions (ipc/process/command.hpp), so a child is not affected.
// Process-wide and permanent: once a signal was handed to a stream it stays corio's for
// the life of the process (as in Tokio): with no stream open, a delivery waits (pending,
// or recorded by the handler) for the next stream instead of taking its default action. One stream per signal at a
// time: opening a second stream for a signal that an open stream holds fails with
// std::errc::device_or_resource_busy (each delivery would reach only one of them).
// Errors: std::errc::invalid_argument for an empty set, a number outside 1..64, SIGKILL,
// SIGSTOP, or a signal the kernel raises synchronously for a fault (SIGSEGV, SIGBUS,
// SIGFPE, SIGILL, SIGTRAP, SIGSYS: a signalfd cannot take those).
// Thread-safety: signals() and ctrl_c() from any thread; one task awaits a stream's
// next() at a time. Closing or destroying a stream while next() waits cancels it
// (operation_canceled, ipc/owned_fd.hpp).
// Cost: opening: a few system calls (sigaction, sigprocmask, signalfd, an epoll set of the
// signalfd and corio's process-wide wake-up eventfd) under a process-wide mutex; two
// descriptors per stream. next(): a read(2) of the signalfd, and when nothing is pending
// an epoll_wait(2) that does not wait and one IORING_OP_POLL_ADD on the awaiting worker's
// ring, then one more read(2).
// Cancellation: next() and ctrl_c() take a std::stop_token and honour the inherited one
// (corio::timeout, when_any): std::errc::operation_canceled; a signal that arrives later
// waits for the next next().
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <initializer_list>
#include <span>
#include <stop_token>
#include <utility>

#include <corio/ipc/owned_fd.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// One signal received by a signal_stream.
struct signal_info {
  int number = 0;          ///< the signal (SIGINT, SIGTERM, ...)
  pid_t sender_pid = 0;    ///< the process that sent it (0 for the kernel, e.g. a terminal's Ctrl-C)
  uid_t sender_uid = 0;    ///< the real user id of the sender
};

/// An open stream of the signals in one set (see the header comment). Move-only; closing
/// or destroying it gives its signals back for another stream. (Its owned_fd is the epoll
/// set that next() waits on; the signalfd is a second descriptor.)
class signal_stream : public owned_fd {
 public:
  /// Opens a stream for `signals`. Errors: see the header comment; or signalfd(2)'s.
  static result<signal_stream> open(std::span<const int> set);
  /// open() for a braced list: signal_stream::open({SIGINT, SIGTERM}).
  static result<signal_stream> open(std::initializer_list<int> set) {
    return open(std::span<const int>(set.begin(), set.size()));
  }

  /// Takes over `other`'s descriptor and signals; `other` is closed afterwards.
  signal_stream(signal_stream&& other) noexcept
      : owned_fd(std::move(other)),
        m_signalfd(std::exchange(other.m_signalfd, -1)),
        m_held(std::exchange(other.m_held, 0)) {}
  /// Closes this stream (giving its signals back), then takes over `other`'s.
  signal_stream& operator=(signal_stream&& other) noexcept;
  signal_stream(const signal_stream&) = delete;
  signal_stream& operator=(const signal_stream&) = delete;
  /// close().
  ~signal_stream();

  /// The next signal of the set; waits while none is pending. Errors:
  /// operation_canceled (stop token, or the stream was closed meanwhile),
  /// bad_file_descriptor on a closed stream.
  [[nodiscard]] task<result<signal_info>> next(std::stop_token token = {}) const;

  /// Closes the stream and gives its signals back (idempotent).
  void close() noexcept;

  /// The signals of this stream, one bit each (bit n-1 for signal n); 0 once closed.
  [[nodiscard]] std::uint64_t signal_bits() const noexcept { return m_held; }

 private:
  signal_stream(int epoll_fd, int signal_fd, std::uint64_t held) noexcept
      : owned_fd(epoll_fd), m_signalfd(signal_fd), m_held(held) {}
  int m_signalfd = -1;
  std::uint64_t m_held = 0;
};

/// signal_stream::open(set): corio::signals({SIGINT, SIGTERM}).
inline result<signal_stream> signals(std::initializer_list<int> set) {
  return signal_stream::open(set);
}

/// Waits for one SIGINT (Ctrl-C): opens a stream for it, awaits it, closes the stream.
/// Errors: open()'s (device_or_resource_busy while another stream holds SIGINT) or
/// next()'s.
[[nodiscard]] task<result<void>> ctrl_c(std::stop_token token = {});

}  // namespace corio::ipc

namespace corio {
using ipc::ctrl_c;
using ipc::signal_info;
using ipc::signal_stream;
using ipc::signals;
}  // namespace corio
