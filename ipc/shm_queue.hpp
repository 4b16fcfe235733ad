// corio::ipc::shm_queue: a bounded multi-producer, multi-consumer queue of
// variable-size messages in one named shared-memory object.
//
// Concept: the tutorial's multiprocessing.Queue between processes, without pickling and
// without a kernel copy: create(name, options) makes the object (0600 unless asked
// otherwise) with room for `capacity` messages of up to `max_message_size` bytes each;
// open(name) attaches from any process; remove(name) unlinks the name (handles keep
// working: a task waiting on a removed queue keeps waiting; close() is what ends
// waits). A message is sent whole and received whole, FIFO.
// Layout: a header (layout word, geometry, one side per cache line: the producers'
// process_mutex and write position, the published-count word, the consumers'
// process_mutex and read position, the consumed-count word) and `capacity` slots of
// max_message_size + 8 bytes rounded up to 64. No pointers.
// How it works: producers take turns under the producers' lock: copy into the next slot,
// then publish it by advancing the published count; consumers likewise under theirs. A
// side that finds the queue full (or empty) drops its lock, spins briefly (see Cost),
// sets the waiters bit of the other side's count word and awaits that word with
// IORING_OP_FUTEX_WAIT through the ring (the blocking pool before Linux 6.7; blocking
// forms use futex(2)). Publishing is one CAS when nobody waits, and one FUTEX_WAKE_OP
// (advance and wake, atomically) when someone does: the fast path makes no syscall.
// Death: a producer or consumer killed at any instant never corrupts the queue or
// wedges the others. Each side's lock is a robust process_mutex: the next process of
// that side gets owner_dead, re-derives the side's position from its count word and goes
// on (automatic; never seen by the caller). What is lost: a producer killed before its
// publish loses its own message (never visible; its send never returned); a consumer
// killed after its publish loses the message it was returning. At most the one message
// in flight, nothing else. A waiter killed while waiting leaves nothing behind.
// Close: close() marks both count words closed and wakes every waiter (two syscalls, from
// any process, synchronous): sends fail with corio::errc::closed, receives drain what is
// queued, then fail with closed. A send that raced the close is either published (and
// received) or fails with closed: one caught between its last look at the closed bit and
// its wake of sleeping consumers adds its message after close() set the bit, so
// is_closed() and size() can see one message appear after the close ("The end of a
// closed queue", detail/shm_queue_layout.hpp).
// Trust: every process that can open the object for writing (see mode) can change any
// byte of it, by a bug or on purpose. Such a peer can garble, drop, repeat or invent
// messages (slot bytes, stored sizes, positions, counts), mark the queue closed, and
// hold or damage a side's lock or count word so that other processes' sends and
// receives fail, spin or wait for ever. It cannot make a send or receive of another
// process touch memory outside that process's mapping of the object, or write past the
// caller's buffer: open() (and create()) validates the geometry once against the
// mapping, overflow-proof, and each handle keeps that copy (capacity, max_message_size,
// slot stride and offset); the header's geometry fields are never read again. Positions
// are taken modulo the handle's capacity, and a stored size is clamped to the handle's
// max_message_size(), which is at most the slot's payload and at most the buffer the
// call checked; a receive returns at most max_message_size() bytes (garbage, perhaps).
// Not covered: a peer can shrink the object (ftruncate), and then touching its pages
// past the new end raises SIGBUS in every process that maps it (no handler is
// installed); and each side's lock is a process_mutex whose robust-list node sits in
// the header: a peer that rewrites the node while another process holds that lock can
// make the holder's later unlocks (and the kernel's list walk at its exit) follow a
// pointer of the peer's choosing (ipc/detail/robust_owner.hpp). So a hostile peer can
// still crash or hang a process that shares a queue with it (a cycle in the nodes makes an
// unlock loop for ever).
// Claims: each send or receive takes its side's robust lock (the Cost below), which is
// about a third of a 64-byte message's cost in a stream. A producer or consumer that
// streams many messages may claim its side instead (claim_sending / claim_receiving): the
// claim holds that side's lock until it is released or destroyed, and its own sends
// (receives) then take no lock each; every other producer (consumer) of any process waits
// for the claim to end (try_* of theirs: resource_unavailable_try_again), so their
// messages never interleave with the claimant's. The two sides are claimed independently.
// A claimant that waits (full, empty) keeps its claim while it waits. A claimant killed
// with kill -9 is a dead holder like any other: the next process of that side recovers
// the side and goes on. A plain thread claims a side with claim_sending_blocking /
// claim_receiving_blocking (an optional time limit: corio::errc::timed_out), and a
// claim has thread forms too (send_blocking, receive_blocking, with an optional time
// limit: corio::errc::timed_out). A sender claim held after a close does not keep
// consumers from the end: a send publishes only while the queue is not closed, so a
// consumer that finds it closed and empty reports closed without the producers' lock
// (while a send is between its last look at the closed bit and its wake
// of sleeping consumers, a syscall long, it spins, then pauses and looks again: 50 µs
// first, doubling up to 1 ms per pause, so a producer stopped there (SIGSTOP, a
// debugger) costs each waiting consumer about a thousand wake-ups a second; a pause
// sleeps on the send's mark, and the send's finish wakes it, so the end is seen a
// wake-up after the send, not at the end of the pause (a task's pause before Linux
// 6.7, where the ring cannot wait on a futex, is a plain timed sleep: up to 1 ms late);
// detail/shm_queue_layout.hpp, "The end of a closed queue"). This is the queue's
// layout version 2: a send of version 1, which published whatever the closed bit, could
// race a close past such a consumer, so the two versions refuse each other's queues
// (open(): wrong_protocol_type; see Building). A claim inherited through fork() claims
// nothing in the child (operation_not_permitted). A claim refers to the shm_queue handle
// it came from, which must outlive it; one owner uses a claim at a time (its calls are
// not for concurrent use). Measured in bench/ipc/shm_bench (corio-shm-queue-claimed
// rows).
// Errors (result<T>): invalid_argument (bad name, zero or too large capacity or size),
// message_size (a message longer than max_message_size, or a receive buffer shorter than
// it), corio::errc::closed, corio::errc::full / corio::errc::empty (try_*),
// resource_unavailable_try_again (try_*: another process of that side is mid-copy),
// operation_canceled (timed_out under corio::timeout), corio::errc::timed_out (a
// send_blocking / receive_blocking, the queue's or a claim's, or a
// claim_sending_blocking / claim_receiving_blocking, past its limit), the OS
// errors of shm_open / ftruncate / mmap / fallocate (file_exists with exclusive,
// no_such_file_or_directory, too_many_files_open, not_enough_memory,
// no_space_on_device: /dev/shm cannot hold the queue, whose memory create() commits
// (shared_memory.hpp), permission_denied), and for open() (and a
// create() without exclusive that finds the name): wrong_protocol_type (the object is
// not a queue), resource_unavailable_try_again (its creator has not finished building
// it: retry), owner_dead (its creator died before it finished: remove the name and
// create the queue again; see Building).
// Building: create() makes the object, sizes it and builds the header while it holds the
// object's flock, and the layout word reads "being built" from the moment the object has
// any size until the queue is published, after which the lock is dropped. So open()
// tells: the word "being built" with the lock held is a build in progress (try again);
// the same word with the lock free is a creator that died (owner_dead, at once, exact);
// a zero word in an object of any size is not a queue (wrong_protocol_type: a zero-filled
// object such as Python's SharedMemory, which no creator of a queue leaves). A creator
// that dies between making the name and taking the lock (two syscalls), or with the lock
// before it sized the object, leaves it empty: try again until it has been empty for
// 5 s, then owner_dead (shared_memory.hpp, Lifetime). A program that holds a flock of
// its own on the object, or a process that inherited the creator's descriptor or mapping
// through fork() while it built, makes a dead creator's queue read "try again" for as
// long as it keeps them. A queue of another layout version (the low byte of the layout
// word; this is version 2, detail/shm_queue_layout.hpp) is wrong_protocol_type, built or
// being built: processes of versions 1 and 2 cannot share a name. owner_dead tells one
// process (the creator's role) to remove the name and create the queue again; others
// should go on opening: two that both remove and create could end up on different
// objects. Cost: a flock and an
// atomic load more for open() of a queue not yet published (none for a finished one);
// the creator holds the lock for its build (microseconds, plus committing the object's
// memory: ~0.25 ms per MiB; shared_memory.hpp), and openers meanwhile read "try again".
// Cancellation: a waiting send or receive returns operation_canceled and has sent or
// taken nothing; an operation that can complete at once completes even if the token is
// stopped.
// Thread-safety: any number of tasks, threads and processes send and receive at once;
// one owner per handle (the handle maps the object; it must outlive calls in flight).
// A claim's sends (receives) run one at a time: its owner must not overlap them.
// Cost: a send or receive that does not wait: the side's robust lock (two CASes and a
// process-local spin lock), a memcpy of the message, one CAS to publish; a send also
// prefetches for writing the first cache line of the slot 8 positions ahead (and its
// second when the message and its 8-byte header span two), when that slot is known
// free, so that taking those lines back from the consumers' caches overlaps with the
// messages in between instead of stalling the publish. A receive()
// or receive_blocking() that finds the queue empty just after a try_receive (or a
// receive() that did not wait, which is one) took a message — a consumer keeping up
// with a stream — first pauses once for about half the spin budget (1 µs) without
// looking, so the producers' cache line is not pulled away once per message and what
// they publish meanwhile is taken as one batch; a message published in that pause waits
// for it, and such a receive may keep its worker for about one and a half spin budgets
// before it sleeps. Receives that wait each time (request and reply) never pause, nor
// does try_receive. Measured in bench/ipc/shm_bench (see README).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stop_token>
#include <string_view>
#include <utility>

#include <corio/ipc/detail/shared_word.hpp>
#include <corio/ipc/process_mutex.hpp>
#include <corio/ipc/shared_memory.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

namespace corio::ipc {

/// How create() makes a queue.
struct shm_queue_options {
  std::size_t capacity = 64;            ///< messages (1 .. 2^29)
  std::size_t max_message_size = 4096;  ///< bytes per message (1 .. 2^30)
  mode_t mode = 0600;                   ///< permissions of the new object
  bool exclusive = true;                ///< fail with file_exists if the name exists
};

namespace detail {

struct queue_header;

/// A queue's geometry as open() (or create()) validated it against the mapping. Each
/// handle keeps this copy and the send and receive paths use only it: the header's
/// geometry fields are in memory every peer can write, so reading them again would let
/// a peer move the slots or resize messages under a call (see "Trust" in the header).
struct queue_geometry {
  std::byte* slots = nullptr;       ///< slot 0, in this process's mapping
  std::uint32_t capacity = 0;       ///< slots (1 .. 2^29)
  std::uint32_t max_message = 0;    ///< bytes per message (1 .. 2^30)
  std::uint32_t slot_stride = 0;    ///< bytes per slot (>= 8 + max_message)
};

/// Where a test hook runs: around the step that makes a send (receive) take effect,
/// before a receive's batching pause, in create() before it publishes a new queue, and
/// in a send's publish that wakes sleeping consumers, between its last look at the
/// closed bit and the wake (before_wake), and in a consumer that found the queue closed
/// and empty while a send may still publish, before it pauses or says empty (unsettled).
enum class queue_step { before_publish, after_publish, before_consume, after_consume, batching_pause,
                        before_create_publish, before_wake, unsettled };
/// Test hook (all builds; one relaxed load per step): called in the sending, receiving or
/// creating process at each queue_step, so tests can kill a process at exactly that point.
inline std::atomic<void (*)(queue_step)> g_shm_queue_test_hook{nullptr};

}  // namespace detail

class shm_queue_sender;
class shm_queue_receiver;

/// A bounded queue of messages in shared memory between processes, with awaitable send
/// and receive; see the header.
class shm_queue {
 public:
  shm_queue() noexcept = default;
  /// Takes over `o`'s mapping; `o` is then like a default-constructed handle (valid()
  /// false). A claim refers to the handle it came from: move no handle that has one (its
  /// calls then return operation_not_permitted; releasing it still works).
  shm_queue(shm_queue&& o) noexcept
      : m_memory(std::move(o.m_memory)),
        m_header(std::exchange(o.m_header, nullptr)),
        m_geometry(o.m_geometry),
        m_send_lock(std::exchange(o.m_send_lock, {})),
        m_receive_lock(std::exchange(o.m_receive_lock, {})) {}
  /// As the move constructor; the queue this handle mapped before is unmapped (not removed).
  shm_queue& operator=(shm_queue&& o) noexcept {
    if (this != &o) {
      m_memory = std::move(o.m_memory);
      m_header = std::exchange(o.m_header, nullptr);
      m_geometry = o.m_geometry;
      m_send_lock = std::exchange(o.m_send_lock, {});
      m_receive_lock = std::exchange(o.m_receive_lock, {});
    }
    return *this;
  }

  /// Creates the queue `name`. Without options.exclusive an existing queue is opened
  /// instead (its own geometry applies).
  [[nodiscard]] static result<shm_queue> create(std::string_view name, const shm_queue_options& options = {});
  /// Opens the existing queue `name`.
  [[nodiscard]] static result<shm_queue> open(std::string_view name);
  /// Unlinks `name`; handles keep working.
  static result<void> remove(std::string_view name);

  /// False for a default-constructed or moved-from handle.
  [[nodiscard]] bool valid() const noexcept { return m_header != nullptr; }
  /// The queue's name.
  [[nodiscard]] const std::string& name() const noexcept { return m_memory.name(); }
  /// Most messages the queue holds.
  [[nodiscard]] std::size_t capacity() const noexcept;
  /// Largest message in bytes.
  [[nodiscard]] std::size_t max_message_size() const noexcept;
  /// Messages queued now (a snapshot).
  [[nodiscard]] std::size_t size() const noexcept;
  /// True once any process has called close().
  [[nodiscard]] bool is_closed() const noexcept;

  /// Awaitable operations (implementation details of send() / receive()).
  struct send_op {
    ///@{
    /// Used by detail::fast_or_wait: the awaited result type, what the operation works on,
    /// one attempt without waiting, and the waiting path.
    using value_type = result<void>;
    const shm_queue* queue;
    std::span<const std::byte> message;
    std::optional<value_type> try_now() noexcept;
    task<value_type> wait_slow(std::stop_token token) const;
    ///@}
  };
  /// The awaitable operation of receive() (an implementation detail).
  struct receive_op {
    ///@{
    /// Used by detail::fast_or_wait: the awaited result type, what the operation works on,
    /// one attempt without waiting, and the waiting path.
    using value_type = result<std::size_t>;
    const shm_queue* queue;
    std::span<std::byte> buffer;
    std::optional<value_type> try_now() noexcept;
    task<value_type> wait_slow(std::stop_token token) const;
    ///@}
  };

  /// Sends `message`, waiting while the queue is full. Awaitable yielding result<void>.
  /// The span and the handle must stay valid until the await completes.
  [[nodiscard]] detail::fast_or_wait<send_op> send(std::span<const std::byte> message,
                                                   std::stop_token token = {}) const noexcept {
    return {send_op{this, message}, std::move(token)};
  }
  /// Receives the oldest message into `buffer` (at least max_message_size() bytes),
  /// waiting while the queue is empty. Awaitable yielding result<size_t>, the size.
  [[nodiscard]] detail::fast_or_wait<receive_op> receive(std::span<std::byte> buffer,
                                                         std::stop_token token = {}) const noexcept {
    return {receive_op{this, buffer}, std::move(token)};
  }

  /// Without waiting: corio::errc::full when full (or resource_unavailable_try_again).
  result<void> try_send(std::span<const std::byte> message) const noexcept;
  /// Without waiting: corio::errc::empty when empty (or resource_unavailable_try_again).
  result<std::size_t> try_receive(std::span<std::byte> buffer) const noexcept;

  /// Thread form of send() for a plain thread or a child process: blocks the calling
  /// thread (never call it on a worker) while the queue is full or another producer holds
  /// the producers' lock (a claim included), for at most `limit` (saturating; the default
  /// never gives up). The errors of send() but operation_canceled (no stop token: close()
  /// or `limit` ends the wait), and corio::errc::timed_out once `limit` has passed with the
  /// queue still full or the lock still held, having sent nothing, and the OS error of a
  /// futex wait the kernel refuses (ENOSYS or EPERM under a seccomp filter, EFAULT;
  /// nothing sent), as send() returns it; a message that fits
  /// when the lock is taken is sent whatever `limit` (zero included). Thread-safety: any
  /// thread. Cost: try_send()'s when there is room; else a clock read per look and a
  /// futex(2) wait. A held lock is waited for asleep in the kernel, whatever `limit`
  /// (process_mutex::lock_blocking): its release wakes the wait.
  result<void> send_blocking(std::span<const std::byte> message,
                             saturating_duration limit = clock::duration::max()) const noexcept;
  /// Thread form of receive(), as send_blocking(): blocks the calling thread while the
  /// queue is empty or another consumer holds the consumers' lock, for at most `limit`
  /// (saturating; the default never gives up). The errors of receive() but
  /// operation_canceled, and corio::errc::timed_out once `limit` has passed with the
  /// queue still empty or the lock still held, having taken nothing, and the OS error of
  /// a futex wait the kernel refuses (as send_blocking()); a queued message is
  /// taken whatever `limit` (zero included) when the lock is taken, and a closed, drained
  /// queue returns corio::errc::closed. Thread-safety: any thread. Cost: try_receive()'s
  /// when a message is queued; else the pause and spin of "Cost" in the header, a clock
  /// read per look and a futex(2) wait; the lock as send_blocking().
  result<std::size_t> receive_blocking(std::span<std::byte> buffer,
                                       saturating_duration limit = clock::duration::max()) const noexcept;

  /// Closes the queue for every process (see the header comment). Idempotent.
  void close() const noexcept;

  /// Claims the producers' side for the caller alone (see "Claims" in the header):
  /// waits for the producers' lock and holds it until the claim is released or
  /// destroyed. Awaitable yielding result<shm_queue_sender>. Errors: operation_canceled
  /// (`token`, the inherited token, timeout), and process_mutex's lock errors.
  [[nodiscard]] task<result<shm_queue_sender>> claim_sending(std::stop_token token = {}) const;
  /// claim_sending() without waiting: resource_unavailable_try_again while another
  /// producer holds the side.
  [[nodiscard]] result<shm_queue_sender> try_claim_sending() const noexcept;
  /// Thread form of claim_sending(), for plain threads and child processes that run no
  /// runtime: blocks the calling thread (never call it on a worker) until the producers'
  /// side is ours, for at most `limit` (saturating: hours::max() is no limit; the default
  /// never gives up; zero takes a free side and otherwise fails at once); one deadline
  /// for the whole call, which recovers a side whose holder died as claim_sending()
  /// does. Errors: corio::errc::timed_out (another producer held it whenever it
  /// looked), and process_mutex's lock errors (the OS error of a futex wait the kernel
  /// refuses among them) except owner_dead, which is recovered. Thread-safety: any
  /// thread. Cost: as process_mutex::lock_blocking.
  [[nodiscard]] result<shm_queue_sender> claim_sending_blocking(
      saturating_duration limit = clock::duration::max()) const noexcept;
  /// Claims the consumers' side, as claim_sending() the producers'.
  [[nodiscard]] task<result<shm_queue_receiver>> claim_receiving(std::stop_token token = {}) const;
  /// claim_receiving() without waiting: resource_unavailable_try_again while another
  /// consumer holds the side.
  [[nodiscard]] result<shm_queue_receiver> try_claim_receiving() const noexcept;
  /// Thread form of claim_receiving(), as claim_sending_blocking() for the consumers'
  /// side (timed_out: another consumer held it whenever it looked).
  [[nodiscard]] result<shm_queue_receiver> claim_receiving_blocking(
      saturating_duration limit = clock::duration::max()) const noexcept;

 private:
  friend class shm_queue_sender;
  friend class shm_queue_receiver;

  shm_queue(shared_memory memory, detail::queue_header* header, detail::queue_geometry geometry,
            process_mutex send_lock, process_mutex receive_lock) noexcept
      : m_memory(std::move(memory)),
        m_header(header),
        m_geometry(geometry),
        m_send_lock(send_lock),
        m_receive_lock(receive_lock) {}

  static result<shm_queue> adopt(shared_memory memory);
  task<result<void>> send_slow(std::span<const std::byte> message, std::stop_token token) const;
  task<result<std::size_t>> receive_slow(std::span<std::byte> buffer, std::stop_token token) const;

  shared_memory m_memory;
  detail::queue_header* m_header = nullptr;
  detail::queue_geometry m_geometry;  // validated at open; never re-read from the header
  process_mutex m_send_lock;
  process_mutex m_receive_lock;
};

/// The producers' side of a shm_queue, claimed by one owner (shm_queue::claim_sending):
/// its sends take no lock each. Move-only; releases the side when destroyed.
class shm_queue_sender {
 public:
  shm_queue_sender() noexcept = default;
  /// Takes over `o`'s claim; `o` claims nothing afterwards.
  shm_queue_sender(shm_queue_sender&& o) noexcept : m_queue(std::exchange(o.m_queue, nullptr)), m_guard(std::move(o.m_guard)) {}
  /// Releases this claim (if any), then takes over `o`'s.
  shm_queue_sender& operator=(shm_queue_sender&& o) noexcept {
    if (this != &o) {
      m_guard = std::move(o.m_guard);
      m_queue = std::exchange(o.m_queue, nullptr);
    }
    return *this;
  }

  /// The awaitable operation of send() (an implementation detail).
  struct send_op {
    ///@{
    /// Used by detail::fast_or_wait (see shm_queue::send_op).
    using value_type = result<void>;
    const shm_queue_sender* sender;
    std::span<const std::byte> message;
    std::optional<value_type> try_now() noexcept;
    task<value_type> wait_slow(std::stop_token token) const;
    ///@}
  };

  /// True while this claims a side (not default-constructed, moved from or released).
  [[nodiscard]] bool valid() const noexcept { return m_queue != nullptr; }
  /// Sends `message`, waiting (with the side still claimed) while the queue is full.
  /// Awaitable yielding result<void>; the errors of shm_queue::send(), and
  /// operation_not_permitted for a claim that is not valid() or was inherited through
  /// fork(). The span and the claim must stay valid until the await completes.
  [[nodiscard]] detail::fast_or_wait<send_op> send(std::span<const std::byte> message,
                                                   std::stop_token token = {}) const noexcept {
    return {send_op{this, message}, std::move(token)};
  }
  /// Without waiting: corio::errc::full when full.
  result<void> try_send(std::span<const std::byte> message) const noexcept;
  /// Thread form of send(), as shm_queue::send_blocking(): blocks the calling thread
  /// (never call it on a worker) while the queue is full, with the side still claimed,
  /// for at most `limit` (saturating; the default never gives up). The errors of
  /// send() but operation_canceled (no stop token: close() or `limit` ends the wait),
  /// and corio::errc::timed_out once `limit` has passed with the queue still full,
  /// having sent nothing, and the OS error of a futex wait the kernel refuses (nothing
  /// sent); a message that fits is sent whatever `limit` (zero included).
  /// Thread-safety: the claim's owner, one call at a time (see the header). Cost:
  /// try_send()'s when there is room; else a clock read per look and a futex(2) wait.
  result<void> send_blocking(std::span<const std::byte> message,
                             saturating_duration limit = clock::duration::max()) const noexcept;
  /// Ends the claim: the next producer may take the side. Idempotent.
  void release() noexcept;

 private:
  friend class shm_queue;
  shm_queue_sender(const shm_queue* queue, process_mutex_guard guard) noexcept
      : m_queue(queue), m_guard(std::move(guard)) {}
  task<result<void>> send_slow(std::span<const std::byte> message, std::stop_token token) const;

  const shm_queue* m_queue = nullptr;
  process_mutex_guard m_guard;
};

/// The consumers' side of a shm_queue, claimed by one owner (shm_queue::claim_receiving):
/// its receives take no lock each. Move-only; releases the side when destroyed.
class shm_queue_receiver {
 public:
  shm_queue_receiver() noexcept = default;
  /// Takes over `o`'s claim; `o` claims nothing afterwards.
  shm_queue_receiver(shm_queue_receiver&& o) noexcept : m_queue(std::exchange(o.m_queue, nullptr)), m_guard(std::move(o.m_guard)) {}
  /// Releases this claim (if any), then takes over `o`'s.
  shm_queue_receiver& operator=(shm_queue_receiver&& o) noexcept {
    if (this != &o) {
      m_guard = std::move(o.m_guard);
      m_queue = std::exchange(o.m_queue, nullptr);
    }
    return *this;
  }

  /// The awaitable operation of receive() (an implementation detail).
  struct receive_op {
    ///@{
    /// Used by detail::fast_or_wait (see shm_queue::receive_op).
    using value_type = result<std::size_t>;
    const shm_queue_receiver* receiver;
    std::span<std::byte> buffer;
    std::optional<value_type> try_now() noexcept;
    task<value_type> wait_slow(std::stop_token token) const;
    ///@}
  };

  /// True while this claims a side (not default-constructed, moved from or released).
  [[nodiscard]] bool valid() const noexcept { return m_queue != nullptr; }
  /// Receives the oldest message into `buffer` (at least max_message_size() bytes),
  /// waiting (with the side still claimed) while the queue is empty. Awaitable yielding
  /// result<size_t>; the errors of shm_queue::receive(), and operation_not_permitted as
  /// for shm_queue_sender::send().
  [[nodiscard]] detail::fast_or_wait<receive_op> receive(std::span<std::byte> buffer,
                                                         std::stop_token token = {}) const noexcept {
    return {receive_op{this, buffer}, std::move(token)};
  }
  /// Without waiting: corio::errc::empty when empty (also while a producer may still be
  /// publishing into a closed queue: try again).
  result<std::size_t> try_receive(std::span<std::byte> buffer) const noexcept;
  /// Thread form of receive(), as shm_queue::receive_blocking(): blocks the calling
  /// thread (never call it on a worker) while the queue is empty, with the side still
  /// claimed, for at most `limit` (saturating; the default never gives up). The errors of
  /// receive() but operation_canceled (no stop token: close() or `limit` ends the wait),
  /// and corio::errc::timed_out once `limit` has passed with the queue still empty,
  /// having taken nothing, and the OS error of a futex wait the kernel refuses (nothing
  /// taken); a queued message is taken whatever `limit` (zero included),
  /// and a closed, drained queue returns corio::errc::closed. Thread-safety: the claim's
  /// owner, one call at a time. Cost: try_receive()'s when a message is queued; else
  /// receive_blocking()'s pause and spin, a clock read per look and a futex(2) wait.
  result<std::size_t> receive_blocking(std::span<std::byte> buffer,
                                       saturating_duration limit = clock::duration::max()) const noexcept;
  /// Ends the claim: the next consumer may take the side. Idempotent.
  void release() noexcept;

 private:
  friend class shm_queue;
  shm_queue_receiver(const shm_queue* queue, process_mutex_guard guard) noexcept
      : m_queue(queue), m_guard(std::move(guard)) {}
  task<result<std::size_t>> receive_slow(std::span<std::byte> buffer, std::stop_token token) const;

  const shm_queue* m_queue = nullptr;
  process_mutex_guard m_guard;
};

}  // namespace corio::ipc
