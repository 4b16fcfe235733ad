// corio::ipc::message_queue: a POSIX message queue (mq_overview(7)) as an awaitable.
//
// Concept: a named, kernel-held queue of discrete messages with priorities, shared by any
// processes that open the same name ("/jobs"). create() makes it with a capacity of
// max_messages messages of at most message_size bytes each, failing with file_exists if
// the name is taken (like shared_memory::create and Python's SharedMemory(create=True):
// an existing queue keeps another user's permissions and attributes, so reusing it must
// be asked for, with options.exclusive = false); open() attaches to an existing one;
// remove() unlinks the name (open handles keep working). A message is sent whole and
// received whole, highest priority first, FIFO within a priority. It is
// the tutorial's cross-process queue with message boundaries and priorities, and no
// pickling: the bytes are the message.
// How it waits: the descriptor is O_NONBLOCK; send/receive try the syscall, and when the
// queue is full (send) or empty (receive) wait for POLLOUT/POLLIN with IORING_OP_POLL_ADD
// on the awaiting worker's ring, then try again (another receiver may have won the
// message: it loops). A send that finds the queue full first yields once, so a receiver
// on the same worker can drain it without a trip through the ring. Nothing blocks a
// worker.
// Errors (result<T>): std::errc::invalid_argument for a bad name ('/' then 1..254
// characters, no other '/', not "/." or "/..") or a priority >= MQ_PRIO_MAX (32768);
// message_size (EMSGSIZE) for a message longer than the queue's message_size or a receive
// buffer shorter than it; the OS errors of mq_open (no_such_file_or_directory,
// file_exists for create() of a taken name unless exclusive is off, permission_denied,
// too_many_files_open; invalid_argument when max_messages exceeds
// /proc/sys/fs/mqueue/msg_max — 10 by default — for an unprivileged process).
// try_send / try_receive: corio::errc::full / corio::errc::empty instead of waiting.
// send_blocking / receive_blocking: corio::errc::timed_out past their limit.
// Cancellation: send/receive take a std::stop_token and honour the inherited one: a
// waiting call returns operation_canceled (errc::timed_out under timeout()) and has
// sent or taken nothing — receive takes a message only in the syscall that returns it.
// Like channel::recv, receive is not cancel-safe as a losing branch of when_any: a
// message it took just as another branch won is dropped with the branch. Use timeout()
// (which returns a message that arrived at the deadline) or try_receive instead.
// Lifetime: the handle and the spans must outlive a send/receive in flight; cancel a
// waiting call before closing the handle (a pending poll does not end on close).
// Blocking forms (send_blocking / receive_blocking) are for plain threads and for child
// processes without a runtime; they wait in ppoll(2), for at most an optional `limit`
// (saturating: a duration too large for the clock never gives up), and return
// corio::errc::timed_out once it has passed with the queue still full (empty), having
// sent (taken) nothing; a message that fits (a queued message) is sent (taken) whatever
// the limit, zero included. The limit is one deadline on corio's clock taken at the
// call: a signal (EINTR) neither ends the wait early nor extends it. (Not mq_timedsend /
// mq_timedreceive: the descriptor is O_NONBLOCK, shared with the awaitable forms, and on
// such a descriptor they fail at once with EAGAIN instead of waiting.)
// Thread-safety: any number of tasks, threads and processes may send and receive on one
// queue at once (the kernel serialises them); one owner closes a handle.
// Cost: a send or receive that does not wait is one syscall; one that waits adds one SQE
// and one wake per attempt. Messages are copied into and out of the kernel. Measured
// (bench/ipc/mq_bench --repeat 5, 2 workers, 64-byte messages, a quiet 2-vCPU VM,
// 2026-12-04): ping-pong 11.0 us per round trip against 14.5 for two blocking threads; a
// one-way stream 1.02x their rate (0.78x on a busier day: README, "What exists").
// Why a stream between two tasks can fall below two blocking threads: the producer and the
// consumer it spawned run on one worker. The scheduler keeps a spawned or woken task on
// its waker's worker, and in a stream the two are never runnable at once (one waits for
// room while the other drains the queue, then the other way round), so the other worker
// never finds anything to steal. One CPU then makes both syscalls of every message, while
// two blocking threads make one each on two CPUs at once. Counted with perf's syscall
// tracepoints (300,000 messages, capacity 10): 1.2 mq_send and 1.1 mq_receive calls and
// 0.23 io_uring_enter per message for corio (per 10 messages: a failed send when the
// queue fills, one after the yield, a failed receive when it is empty, two polls), 1 and
// 1 for the threads; the CPU time per message is the same within noise (1.4-1.7 us for
// both; mq_bench --repeat 5 prints it). So the rate is bound by one CPU against two, not
// by the cost per message. Retrying before the poll does not help where CPUs are scarce:
// yielding retries for up to 50 us, or busy retries for 5-20 us, made the stream 2-7x
// slower and cost 1.6-4x the CPU per message on a loaded 2-vCPU machine (a spinning
// worker takes the CPU its peer needs). Ends that run apart (threads or processes, as in
// the examples, or tasks on different workers) are not bound by this.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <mqueue.h>
#include <sys/types.h>

#include <cstddef>
#include <span>
#include <stop_token>
#include <string_view>

#include <corio/ipc/owned_fd.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc {

/// How create() makes a queue.
struct message_queue_options {
  long max_messages = 10;    ///< capacity in messages (mq_maxmsg)
  long message_size = 8192;  ///< largest message in bytes (mq_msgsize)
  mode_t mode = 0600;        ///< permissions of a new queue (bits 0777 only: others invalid_argument)
  /// true: fail with file_exists if the name exists (O_EXCL). false: open-or-create, an
  /// existing queue is opened as it is (its own attributes and permissions stay).
  bool exclusive = true;
};

/// A queue's attributes, as the kernel reports them.
struct message_queue_attributes {
  /// Most messages the queue holds (mq_maxmsg).
  long max_messages = 0;
  /// Largest message in bytes (mq_msgsize).
  long message_size = 0;
  long current_messages = 0;  ///< queued now (a snapshot)
};

/// What receive() put in the caller's buffer.
struct received_message {
  /// Bytes of the message, at the start of the buffer.
  std::size_t size = 0;
  /// The priority it was sent with.
  unsigned priority = 0;
};

/// A POSIX message queue between processes, with awaitable send and receive; see the header.
class message_queue : public owned_fd {
 public:
  message_queue() noexcept = default;
  /// Takes ownership of a queue descriptor (mqd_t) opened with O_NONBLOCK.
  explicit message_queue(int mqd) noexcept : owned_fd(mqd) {}

  /// Creates the queue `name` with `options`; file_exists if it exists. With
  /// options.exclusive = false an existing queue is opened instead and keeps its own
  /// attributes and permissions (check attributes() if they matter).
  [[nodiscard]] static result<message_queue> create(std::string_view name, const message_queue_options& options = {});
  /// What a handle may do with the queue (the queue's permissions must allow it).
  enum class access { send_and_receive, send_only, receive_only };
  /// Opens the existing queue `name`.
  [[nodiscard]] static result<message_queue> open(std::string_view name, access mode = access::send_and_receive);
  /// Unlinks `name`; the queue goes once every handle to it is closed.
  static result<void> remove(std::string_view name);

  /// Sends `message` with `priority` (higher is received first), waiting while the queue
  /// is full. The span must stay valid until the await completes.
  [[nodiscard]] task<result<void>> send(std::span<const std::byte> message, unsigned priority = 0,
                                        std::stop_token token = {}) const;
  /// Receives the oldest message of the highest priority into `buffer` (at least the
  /// queue's message_size bytes), waiting while the queue is empty.
  [[nodiscard]] task<result<received_message>> receive(std::span<std::byte> buffer, std::stop_token token = {}) const;

  /// Without waiting: corio::errc::full when the queue is full.
  result<void> try_send(std::span<const std::byte> message, unsigned priority = 0) const;
  /// Without waiting: corio::errc::empty when the queue is empty.
  result<received_message> try_receive(std::span<std::byte> buffer) const;

  /// send() for a plain thread or a child process: blocks the calling thread (never call
  /// it on a worker) while the queue is full, for at most `limit` (saturating; the default
  /// never gives up). The errors of send() but operation_canceled, and
  /// corio::errc::timed_out once `limit` has passed with the queue still full, having
  /// sent nothing; a message that fits is sent whatever `limit` (zero included).
  /// Thread-safety: any thread. Cost: one syscall when there is room; else a clock read
  /// and a ppoll(2) per wait.
  result<void> send_blocking(std::span<const std::byte> message, unsigned priority = 0,
                             saturating_duration limit = clock::duration::max()) const;
  /// receive() for a plain thread or a child process: blocks it while the queue is empty,
  /// for at most `limit`, as send_blocking(): corio::errc::timed_out having taken
  /// nothing; a queued message is taken whatever `limit` (zero included).
  result<received_message> receive_blocking(std::span<std::byte> buffer,
                                            saturating_duration limit = clock::duration::max()) const;

  /// The queue's attributes now (mq_getattr).
  [[nodiscard]] result<message_queue_attributes> attributes() const;
};

}  // namespace corio::ipc
