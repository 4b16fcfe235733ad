// corio::ipc::sysv_message_queue: a System V message queue (msgget/msgsnd/msgrcv,
// sysvipc(7)) as an awaitable, with message types.
//
// Concept: a kernel-held queue of discrete messages, each with a type (a long > 0), found
// by a key (sysv_key: from ftok(path, project), IPC_PRIVATE, or an explicit value) and
// named by an id that any process with permission may use. A receive picks by type:
// type 0 takes the oldest message; type > 0 the oldest message of exactly that type;
// type < 0 the oldest message of the lowest type <= |type| (so small types act as high
// priorities). It is the tutorial's sysv_ipc.MessageQueue. The queue outlives every
// process until remove() (IPC_RMID) or a reboot: nothing is removed on destruction.
// create() is exclusive by default (file_exists if the key is taken; like
// shared_memory::create) and makes the queue 0600 unless asked otherwise.
//
// How it waits. A SysV queue has no descriptor, so io_uring cannot poll it. send and
// receive first try the call with IPC_NOWAIT on the worker (one syscall: the fast path,
// taken whenever a message or room is there). If it would block they yield to the
// worker's other tasks and try again, up to 4 times (a peer that answers at once, as in a
// ping-pong, costs a few failed calls). Only then do they hand a blocking msgsnd/msgrcv
// to the runtime's blocking pool (runtime/blocking.hpp) and await it, so no worker ever
// blocks. Cancellation interrupts that pool thread with a signal: each thread that waits
// owns a POSIX timer aimed at itself (SIGEV_THREAD_ID) that a stop request arms to fire
// at once and then every millisecond until the thread has seen the request, which
// closes the window where a signal lands just before the thread enters msgrcv.
// msgsnd/msgrcv are never restarted after a handler (signal(7)), so the call returns
// EINTR and the wait ends with operation_canceled. The same timer ends each wait on the
// pool after 100 ms: the task goes back to a worker, tries again and waits again. A
// runtime's shutdown waits for running pool jobs, so this bounds how long a forgotten
// wait holds a shutdown up. Chosen over bounded polling (IPC_NOWAIT, then sleeps with a
// backoff), which wakes up all the time while idle and adds up to its backoff cap to
// every hand-over, and over a helper thread per queue, which costs the same hand-offs
// and a thread per queue even when nobody waits; bench/ipc/sysv_bench measures polling
// side by side.
// The signal: interrupt_signal() (SIGRTMAX - 1), whose do-nothing handler corio installs
// on first use; a program must not use that signal for anything else. A waiting thread
// unblocks it only while it waits.
// Cost, honestly: a call that does not wait is one syscall plus a copy of the message
// through a per-thread buffer (msgsnd/msgrcv need the type in front of the bytes). A call
// that waits first costs up to 4 yields and failed calls, then holds one blocking-pool
// thread for as long as it waits (the pool has runtime_config::max_blocking_threads, 64
// by default: more waits, and other spawn_blocking jobs, queue behind them) and pays the
// pool's hand-off (a lock and a condition-variable signal), the kernel's wake of that
// thread, a cross-thread wake of a worker, two timer_settime calls and two signal-mask
// changes; a wait that lasts also wakes every 100 ms (a signal, a trip to a worker and
// back to the pool). Cancelling a running wait costs a timer_settime and a signal.
// Measured (preliminary: a 2-vCPU VM loaded ~10x by compilers, where wall-clock figures
// swung 5x between repeats, so compare CPU time per operation; bench/ipc/sysv_bench
// --rounds 10000 --messages 200000 --repeat 5, 2 workers, 64-byte messages): a ping-pong
// costs 4.6-6.3 us of CPU per round trip against 5.7-6.5 for two blocking threads; a
// one-way stream 1.6-1.8 us of CPU per message against 1.4 (a wait on the pool costs
// more than a thread's sleep in msgrcv, and a stream waits whenever it runs dry);
// polling with backoff costs 26-38 us per round trip and 19-25 ms of CPU per second of
// idle waiting, against 1.4-2.1 ms for this design; a cancelled wait returns 50-80 us
// after request_stop().
// Errors (result<T>): std::errc::invalid_argument for a bad key (explicit IPC_PRIVATE,
// ftok project outside 1..255, open() of the private key), a type <= 0 for send, bad
// options; no_such_file_or_directory for open() of a missing key or ftok of a missing
// path; file_exists for an exclusive create of a taken key; permission_denied;
// message_size for a message longer than the system limit (msgmax, 8192 by default) or
// than the queue's byte capacity, and for a receive buffer shorter than the message
// chosen (the message stays queued); identifier_removed when the queue is removed, also
// under a waiting task (EIDRM; a call that starts after the removal sees EINVAL from the
// kernel and reports identifier_removed too); no_space_on_device when the system's
// queue count (msgmni) is exhausted. try_send / try_receive: corio::errc::full /
// corio::errc::empty instead of waiting.
// Cancellation: send/receive take a std::stop_token and honour the inherited one (when_any,
// timeout): a waiting call returns operation_canceled (errc::timed_out under timeout())
// and has sent or taken nothing; a message the kernel handed over just as the stop came
// is returned, not dropped. Like message_queue::receive it is not cancel-safe as the
// losing branch of when_any; use timeout() or try_receive. The blocking forms take a
// token too, and a stop interrupts them the same way.
// Thread-safety: a handle is a plain value (the id and the system's message size
// limit); any number of tasks, threads and processes may send and receive on one queue
// at once (the kernel serialises them).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <stop_token>
#include <string>

#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// Which SysV queue msgget() finds.
class sysv_key {
 public:
  /// IPC_PRIVATE: every create() makes a new queue that no key finds; share its id().
  static constexpr sysv_key private_key() noexcept { return sysv_key(0); }
  /// ftok(path, project): a key derived from an existing file and a project number in
  /// 1..255 (invalid_argument otherwise; no_such_file_or_directory for a missing path).
  [[nodiscard]] static result<sysv_key> from_path(const std::string& path, int project);
  /// An explicit key; invalid_argument for 0 (IPC_PRIVATE: ask for private_key()).
  [[nodiscard]] static result<sysv_key> from_value(key_t value);

  /// The key_t for msgget().
  [[nodiscard]] constexpr key_t value() const noexcept { return m_value; }
  /// True for private_key().
  [[nodiscard]] constexpr bool is_private() const noexcept { return m_value == 0; }

 private:
  constexpr explicit sysv_key(key_t value) noexcept : m_value(value) {}
  key_t m_value;
};

/// How create() makes a queue.
struct sysv_message_queue_options {
  mode_t mode = 0600;  ///< permissions of a new queue (bits 0777 only: others invalid_argument)
  /// true: file_exists if the key is taken (IPC_EXCL). false: open-or-create; an
  /// existing queue is opened as it is (its permissions and capacity stay).
  bool exclusive = true;
  /// Byte capacity of a new queue (msg_qbytes, set with IPC_SET); 0 keeps the system
  /// default (/proc/sys/kernel/msgmnb, 16384 by default). Above that default it needs
  /// CAP_SYS_RESOURCE (permission error otherwise, and no queue is left behind). At most
  /// INT_MAX (the kernel's msg_qbytes limit): above it invalid_argument, no queue made.
  std::size_t max_bytes = 0;
};

/// A queue's state, as IPC_STAT reports it (a snapshot).
struct sysv_message_queue_attributes {
  std::size_t messages = 0;   ///< queued now
  std::size_t bytes = 0;      ///< bytes queued now
  std::size_t max_bytes = 0;  ///< byte capacity (msg_qbytes)
  mode_t mode = 0;            ///< permissions
  pid_t last_sender = 0;      ///< pid of the last msgsnd (0: none)
  pid_t last_receiver = 0;    ///< pid of the last msgrcv (0: none)
};

/// What receive() put in the caller's buffer.
struct sysv_received {
  /// Bytes of the message, at the start of the buffer.
  std::size_t size = 0;
  /// The type it was sent with.
  long type = 0;
};

/// A System V message queue between processes, with awaitable send and receive; see the
/// header.
class sysv_message_queue {
 public:
  sysv_message_queue() noexcept = default;

  /// Creates the queue for `key` (always a new one for the private key).
  [[nodiscard]] static result<sysv_message_queue> create(sysv_key key, const sysv_message_queue_options& options = {});
  /// Opens the existing queue for `key`.
  [[nodiscard]] static result<sysv_message_queue> open(sysv_key key);
  /// Attaches to the queue with this id (from id() in another process): invalid_argument
  /// for a negative id, identifier_removed for one that names no queue (IPC_STAT fails).
  [[nodiscard]] static result<sysv_message_queue> from_id(int id);
  /// The signal that interrupts a waiting thread (see the header comment).
  [[nodiscard]] static int interrupt_signal() noexcept;

  /// The queue's id (-1 for a default-constructed handle).
  [[nodiscard]] int id() const noexcept { return m_id; }
  /// False for a default-constructed handle.
  [[nodiscard]] bool valid() const noexcept { return m_id >= 0; }
  /// The largest message the system accepts (msgmax), read when the handle was made.
  [[nodiscard]] std::size_t max_message_size() const noexcept { return m_max_message; }
  /// Removes the queue now (IPC_RMID): queued messages are discarded and every waiting
  /// send or receive, in any process, ends with identifier_removed.
  result<void> remove() const;

  /// Sends `message` with `type` (> 0), waiting while the queue has no room. The span
  /// must stay valid until the await completes.
  [[nodiscard]] task<result<void>> send(std::span<const std::byte> message, long type = 1,
                                        std::stop_token token = {}) const;
  /// Receives the message `type` selects (see the header comment) into `buffer`, waiting
  /// while there is none.
  [[nodiscard]] task<result<sysv_received>> receive(std::span<std::byte> buffer, long type = 0,
                                                    std::stop_token token = {}) const;

  /// Without waiting: corio::errc::full when there is no room.
  result<void> try_send(std::span<const std::byte> message, long type = 1) const;
  /// Without waiting: corio::errc::empty when no message matches `type`.
  result<sysv_received> try_receive(std::span<std::byte> buffer, long type = 0) const;

  /// Thread forms: block the calling thread (never call them on a worker); a stop
  /// request on `token` interrupts the wait (operation_canceled).
  result<void> send_blocking(std::span<const std::byte> message, long type = 1, std::stop_token token = {}) const;
  /// receive() for a plain thread or a child process: blocks it until a message matches;
  /// a stop request on `token` interrupts the wait.
  result<sysv_received> receive_blocking(std::span<std::byte> buffer, long type = 0,
                                         std::stop_token token = {}) const;

  /// The queue's state now (IPC_STAT).
  [[nodiscard]] result<sysv_message_queue_attributes> attributes() const;

 private:
  sysv_message_queue(int id, std::size_t max_message) noexcept : m_id(id), m_max_message(max_message) {}

  int m_id = -1;
  std::size_t m_max_message = 0;
};

}  // namespace corio::ipc
