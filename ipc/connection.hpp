// corio::ipc::connection: length-framed messages over a connected stream, on the wire
// exactly as Python's multiprocessing.connection.Connection sends them.
//
// Concept: a connection owns a connected stream socket (TCP or Unix; ipc/tcp.hpp,
// ipc/unix.hpp) and sends and receives whole messages: a length prefix (ipc/frame.hpp)
// and the bytes. send_bytes / recv_bytes carry bytes (Python's Connection.send_bytes /
// recv_bytes); send / recv carry one pickled object each (Python's Connection.send /
// recv), through the safe codec of ipc/pickle.hpp: recv never runs or imports anything,
// and decodes a message straight from the read-ahead buffer when all of it is there.
// Authentication (Python's authkey handshake) is a separate step:
// ipc/authentication.hpp, or ipc::listener / ipc::connect which do both.
// Limits (connection_options):
// - max_message_size: a length prefix above it is refused with errc::message_size before
//   anything is allocated for the message, and the connection is closed (the stream
//   cannot be resynchronised). A malformed prefix (a negative length) is
//   errc::protocol_error and closes the connection too.
// - max_send_size: a message to send above it is refused with errc::message_size before
//   anything is sent; the connection stays usable. Unset, max_message_size applies to sends
//   too. A separate send limit is for a side whose own messages may be larger than what
//   it accepts from its peer (a manager server's replies: ipc/manager_server.hpp).
// - stall_timeout: once a message has begun to arrive (any byte of its prefix), all of it
//   must arrive within this time; once a send has to wait for the peer to read, it must
//   complete within this time. Otherwise errc::timed_out and the connection is
//   closed: a peer that sends half a frame and stalls is dropped.
// - idle_timeout: how long recv waits for the first byte of the next message
//   (errc::timed_out; nothing was lost, the connection stays open).
// A huge duration means "never" (no timer is armed; nothing overflows).
// "Closed" here means: the socket is shut down in both directions at once (the peer
// reads end of stream; operations in flight on it end) and every later operation returns
// errc::closed; the descriptor itself is released by the destructor.
// End of stream between messages gives errc::closed; in the middle of one
// errc::protocol_error ("truncated").
// Thread-safety: one owner. One receive and one send may be in flight at the same time
// (from different tasks, on any workers); two concurrent receives (or sends) are misuse.
// Cost: a receive reads ahead into a buffer of read_buffer_size bytes (allocated on the
// first receive), so a small message usually costs one recv SQE (several queued messages:
// one SQE for all); a larger message is read straight into its destination after its
// prefix. A send is one sendmsg syscall for prefix and payload together when the socket
// takes them at once, made directly (no SQE; it suspends only to yield when the worker's
// budget is spent, as any try-first operation does); only a send that has to wait
// goes through the ring and arms a timer. No allocation per message besides the coroutine
// frames (recycled), for recv_bytes(), the returned vector, and for recv(), the decoded
// value (send and recv reuse buffers kept in the connection, each kept up to 1 MiB).
// Batches: send_many / send_many_bytes encode several messages into the connection's send
// buffer and send them with one sendmsg (the same bytes on the wire as that many sends: the
// peer, Python included, reads them as separate messages); recv_some / recv_bytes_some wait
// for one message as recv does, then also take every further message already wholly in the
// read-ahead buffer (up to a maximum) without another SQE or wait. An RPC loop with several
// requests in flight thus costs a recv SQE and a sendmsg per batch instead of per message.
// A batch sent is at most max_batch_size bytes (prefixes included; larger:
// errc::message_size, nothing sent). A batch received is at most what the read-ahead
// buffer holds (read_buffer_size, 4 KiB by default: about 200 small pickles); raise
// read_buffer_size for bigger batches. A set idle_timeout arms a timer for each receive
// that has to wait, batched or not.
// Cancellation: every call takes a std::stop_token and honours the inherited one
// (when_any, timeout). A receive cancelled before any byte of a message arrived, or a send
// cancelled before any byte left, returns std::errc::operation_canceled and the
// connection stays usable; cancelled in the middle of a message, it closes the connection.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string_view>
#include <vector>

#include <corio/ipc/frame.hpp>
#include <corio/ipc/pickle.hpp>
#include <corio/ipc/socket.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// A timeout that never fires. Any duration of a century or more counts as "never": no
/// timer is armed and no deadline is computed, so nothing can overflow.
inline constexpr std::chrono::nanoseconds no_timeout = std::chrono::nanoseconds::max();

namespace detail {
constexpr bool is_no_timeout(std::chrono::nanoseconds d) noexcept { return d >= std::chrono::hours(24 * 365 * 100); }
}  // namespace detail

/// The limits and buffers of one connection (see the header comment).
struct connection_options {
  /// Longest message received (4 MiB); also the longest sent while max_send_size is unset.
  std::size_t max_message_size = std::size_t{4} << 20;
  /// Longest message sent (send, send_bytes, each message of a batch); unset:
  /// max_message_size. SIZE_MAX: no limit but memory (Python's Connection has none).
  std::optional<std::size_t> max_send_size;
  /// A message begun (received or sent) must be complete within this (no_timeout: never).
  std::chrono::nanoseconds stall_timeout = std::chrono::seconds(30);
  /// recv waits at most this for the first byte of the next message (default: forever).
  std::chrono::nanoseconds idle_timeout = no_timeout;
  std::size_t read_buffer_size = 4096;  ///< read-ahead buffer (at least 16 bytes are used)
  /// send_many / send_many_bytes: longest batch, length prefixes included (64 MiB); a larger
  /// one is refused with errc::message_size before it is copied.
  std::size_t max_batch_size = std::size_t{64} << 20;
  pickle::load_options unpickle;        ///< recv(): limits and allow-list of the decoder
  pickle::dump_options pickle;          ///< send(): protocol (4: every Python 3 reads it)
};

/// Python-framed messages over one connected stream socket; see the header comment.
class connection {
 public:
  /// An empty connection (every operation returns errc::closed).
  connection() noexcept = default;
  /// Takes a connected stream socket: a tcp_stream or unix_stream (moved in).
  explicit connection(stream_socket stream, const connection_options& options = {}) noexcept;
  /// Takes over `other`'s socket, buffer and state; `other` is left closed.
  connection(connection&& other) noexcept;
  /// Closes this connection's socket, then takes over `other`'s (left closed).
  connection& operator=(connection&& other) noexcept;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  /// Sends one message (`data` may be empty). Errors: errc::message_size for a message
  /// above the send limit (max_send_size, or else max_message_size; nothing is sent, the
  /// connection stays usable), errc::closed, errc::timed_out (stall_timeout), the OS
  /// error (e.g. EPIPE, ECONNRESET).
  [[nodiscard]] task<result<void>> send_bytes(std::span<const std::byte> data, std::stop_token token = {});

  /// Receives one message into `out` (resized to the message; its capacity is reused, so
  /// a loop over one vector allocates only when a message is larger than any before).
  /// Errors: errc::closed (the peer ended the stream between messages),
  /// errc::message_size / errc::protocol_error (connection closed), errc::timed_out.
  [[nodiscard]] task<result<void>> recv_bytes(std::vector<std::byte>& out, std::stop_token token = {});
  /// Receives one message as a new vector.
  [[nodiscard]] task<result<std::vector<std::byte>>> recv_bytes(std::stop_token token = {});
  /// Receives one message into `buf`; yields its size. A message longer than `buf` (but
  /// within max_message_size) is read and discarded and errc::message_size returned; the
  /// connection stays usable (Python's recv_bytes_into raises BufferTooShort).
  [[nodiscard]] task<result<std::size_t>> recv_bytes_into(std::span<std::byte> buf, std::stop_token token = {});

  /// Sends one object: its pickle as one message (Python's Connection.send; its buffer is
  /// kept up to 1 MiB, as send_many_bytes'). Errors: pickle::errc from encoding (nothing
  /// sent), then as send_bytes.
  [[nodiscard]] task<result<void>> send(const pickle::value& v, std::stop_token token = {});
  /// Sends every message of `messages`, in order, as that many send_bytes would (the same
  /// bytes on the wire), but copied into the connection's send buffer and sent with one
  /// sendmsg when the socket takes them at once. The batch is one send: its stall_timeout
  /// and cancellation rules apply to the whole batch (cancelled before any byte left:
  /// operation_canceled, nothing sent, still usable; cancelled after, the connection is
  /// closed). Errors: errc::closed, then errc::message_size when any message is above the
  /// send limit (as send_bytes) or the batch with its prefixes above max_batch_size
  /// (nothing is sent, the connection stays usable), then as send_bytes. An empty batch
  /// sends nothing.
  /// Thread-safety: a send (not concurrently with another send). Cost: one copy of the
  /// bytes; the send buffer keeps its capacity for the next batch up to 1 MiB and is
  /// released after a larger batch; for large messages send_bytes, which does not copy,
  /// is cheaper.
  [[nodiscard]] task<result<void>> send_many_bytes(std::span<const std::span<const std::byte>> messages,
                                                   std::stop_token token = {});
  /// Sends the pickle of every value of `values`, in order, as that many send() would,
  /// encoded straight into the send buffer and sent as by send_many_bytes (one sendmsg).
  /// Errors, in send()'s order: pickle::errc from encoding any value, or errc::message_size
  /// when any pickle is above the send limit (as send_bytes) or the batch above
  /// max_batch_size (in both cases nothing is sent and the connection stays usable;
  /// encoding stops there), then errc::closed, then as send_bytes. Thread-safety,
  /// cancellation and cost: as send_many_bytes.
  [[nodiscard]] task<result<void>> send_many(std::span<const pickle::value> values, std::stop_token token = {});

  /// Receives one message and unpickles it (Python's Connection.recv). Errors: as
  /// recv_bytes, or pickle::errc when the message does not decode (forbidden class, too
  /// deep, truncated, ...: see unpickle_error()); the message is consumed and the
  /// connection stays usable.
  [[nodiscard]] task<result<pickle::value>> recv(std::stop_token token = {});
  /// Why the last decode of recv() or recv_some failed (with the byte offset), or "" when
  /// none failed yet. A recv_some that stopped before a buffered message that does not
  /// decode has already decoded it: this then describes that message, whose error the
  /// next recv() or recv_some returns (without decoding it again).
  [[nodiscard]] std::string_view unpickle_error() const noexcept;

  /// Receives at least one and at most `max` messages, unpickled, into `out` (cleared
  /// first): waits for the first exactly as recv() does (idle and stall timeouts,
  /// cancellation, errors), then appends every following message that is already wholly
  /// in the read-ahead buffer, without waiting or reading again. Yields out.size(). A
  /// buffered message after the first that is malformed or does not decode ends the batch
  /// before it and stays buffered: the next receive reports its error (a decode error is
  /// kept, see unpickle_error(); recv_bytes would still take the message's bytes). Errors:
  /// as recv() (out is then empty); std::errc::invalid_argument for max == 0. A batch is
  /// at most what read_buffer_size holds (see the header comment). Thread-safety: a
  /// receive. Cost: the first message as recv(); each further one a decode from the buffer.
  [[nodiscard]] task<result<std::size_t>> recv_some(std::vector<pickle::value>& out, std::size_t max,
                                                    std::stop_token token = {});
  /// recv_some for raw messages: `out` is resized to the n messages received (1 to `max`),
  /// out[i] holding the i-th. Elements of out[0, n) that existed keep their capacity (each
  /// is assigned, growing only for a longer message); elements at n and beyond are
  /// destroyed by the resize, with their capacity, so a loop over one `out` reallocates
  /// only when a batch is longer, or a message larger, than before. Errors: as recv_bytes
  /// (out is then cleared: every element destroyed); std::errc::invalid_argument for
  /// max == 0 (out cleared). Thread-safety: a receive (not concurrently with another
  /// receive). Cost: the first message as recv_bytes (one recv SQE when it has to wait);
  /// each further one a copy from the read-ahead buffer, no SQE, no wait; an allocation
  /// only for an element that is new or too small.
  [[nodiscard]] task<result<std::size_t>> recv_bytes_some(std::vector<std::vector<std::byte>>& out,
                                                          std::size_t max, std::stop_token token = {});

  /// Closes the connection now (see the header comment); idempotent.
  void close() noexcept;
  /// False once closed (by close(), by an error that closes it, or moved from).
  [[nodiscard]] bool is_open() const noexcept;
  /// Bytes received and not yet delivered (the start of the next messages).
  [[nodiscard]] std::size_t buffered() const noexcept { return m_end - m_begin; }

  /// The socket (for its addresses and options; reading or writing it directly would
  /// break the framing).
  [[nodiscard]] const stream_socket& stream() const noexcept { return m_stream; }
  /// The limits in force.
  [[nodiscard]] const connection_options& options() const noexcept { return m_options; }
  /// Changes the limits; takes effect at the next operation.
  void set_options(const connection_options& options);
  /// Changes options().idle_timeout alone; takes effect at the next receive. Unlike
  /// set_options(), keeps the decoder (and unpickle_error()) and a message recv_some could
  /// not decode. Not while a receive is in flight.
  void set_idle_timeout(std::chrono::nanoseconds timeout) noexcept { m_options.idle_timeout = timeout; }

 private:
  struct sink;
  task<result<std::size_t>> receive(sink& to, std::stop_token token);
  task<result<std::size_t>> finish_frame(sink& to, std::stop_token token);
  result<frame::header> buffered_header();
  std::size_t take_buffered_body(sink& to, const frame::header& h);
  task<result<void>> send_frames(std::span<const std::byte> head, std::span<const std::byte> body,
                                 std::stop_token token);
  result<void> encode_batch(std::span<const pickle::value> values);
  // The longest message send_bytes and the batches may send.
  std::size_t send_limit() const noexcept { return m_options.max_send_size.value_or(m_options.max_message_size); }
  void trim_send_scratch() noexcept;
  void trim_recv_scratch() noexcept;  // releases a recv buffer grown past 1 MiB
  bool take_pending_decode(std::error_code& error);
  bool peek_buffered(std::span<const std::byte>& body, std::size_t& frame_size) const;
  void consume_buffered(std::size_t frame_size) noexcept;
  task<result<void>> finish_send(std::span<const std::byte> header, std::span<const std::byte> data,
                                 std::size_t& sent, std::stop_token token);
  result<std::size_t> deliver(sink& to, const frame::header& h);
  void fail() noexcept;
  bool ensure_buffer();

  stream_socket m_stream;
  connection_options m_options;
  std::unique_ptr<pickle::reader> m_unpickler;  // made by the first recv()
  std::vector<std::byte> m_recv_scratch;         // recv(): a message not wholly buffered
  std::vector<std::byte> m_send_scratch;         // send(): the pickle being sent
  // recv_some: the error of the buffered message at the front, already decoded and failed
  // (it is consumed and this returned by the next recv(); any other receive clears it).
  std::error_code m_pending_decode;
  std::unique_ptr<std::byte[]> m_buffer;
  std::size_t m_capacity = 0;
  std::size_t m_begin = 0;  // buffered bytes are m_buffer[m_begin, m_end)
  std::size_t m_end = 0;
  // Set by whichever side (receive or send) closes the connection; read by both, possibly
  // on different workers: relaxed is enough, it orders nothing else (the shutdown(2) it
  // accompanies is what ends the other side's operation).
  std::atomic<bool> m_closed{true};
};

}  // namespace corio::ipc
