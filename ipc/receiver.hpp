// corio::ipc::stream_receiver: reading a stream socket into kernel-selected buffers
// (made by stream_socket::receiver(); TCP and Unix stream sockets).
//
// Concept: `auto rx = stream.receiver({.buffer_size = 16384, .buffer_count = 8});`
// (a result<stream_receiver>), then `co_await rx->receive(token)` yields result<received_buffer>: a move-only view of
// one buffer the kernel filled (data(): std::span<const std::byte>). Destroying it (or
// release()) gives the buffer back. An empty buffer (size() == 0) is the end of the
// stream, as read_some's 0 is; after it every receive() yields end of stream again.
// Behind it, one IORING_OP_RECV with IORING_RECV_MULTISHOT and IOSQE_BUFFER_SELECT is
// armed on a provided-buffer ring (IORING_REGISTER_PBUF_RING) registered on the ring of
// the worker whose receive() came first; the kernel copies each arrival straight into a
// free buffer and posts one CQE per buffer. So no SQE per message and no buffer of the
// caller's to keep ready, but the copy from the socket into user memory still happens
// once — "zero-copy" it is not. A message larger than buffer_size arrives as several
// buffers, in stream order. The receiver reads ahead: once started, data is pulled from
// the socket into free buffers whether or not a receive() is waiting.
// Fallback: before Linux 6.0, where registration fails, or with
// receive_options::provided_buffers = false, the same receiver does one plain recv at a
// time into its own buffers: same API, same semantics (stats().provided_buffers says).
// Design, protocol and lifetime: ipc/detail/receiver_state.hpp.
//
// Back-pressure: buffers held by the caller (and queued ones) are not available to the
// kernel. When none is free the kernel ends the multishot (-ENOBUFS), the bytes stay in
// the socket (the peer is throttled by flow control), and the multishot is re-armed when
// a buffer comes back. Nothing is lost and nothing spins; a caller that holds every
// buffer stops the stream until it gives one back. The queue of completed buffers is
// bounded by buffer_count by construction.
// Cancellation: receive(token) honours its std::stop_token and the inherited one and
// returns std::errc::operation_canceled; no data is lost (a buffer completed for a
// cancelled receive() stays queued for the next). close() (and the destructor) ends the
// receiver: waiting receive()s return errc::closed, queued buffers are dropped, the SQE is
// cancelled through its worker. Buffers already handed out stay valid until given back.
// Runtime shutdown cancels the SQE like every other operation (receive() then yields
// operation_canceled).
// Thread-safety: receive() and stats() from any task or thread (several waiting receives
// get successive buffers, FIFO — usually one reader makes sense); a received_buffer may be
// given back on any thread; one owner destroys the receiver. The socket must outlive the
// receiver (its descriptor is borrowed); the runtime must outlive the receiver and every
// received_buffer.
// Cost: buffer_size * buffer_count bytes of memory (one mapping) per receiver, one buffer
// group on its worker's ring. receive() that finds a queued buffer is one short lock and
// no syscall; one that waits costs a lock and a wake through the scheduler; giving a
// buffer back is a lock and two stores (plus a doorbell to the owner after -ENOBUFS).
// The completions are processed on the owner worker (pinned, like the acceptor).
// Measured (bench/ipc/echo_rx_ab.sh: examples/echo_server with read_some vs
// --provided-buffers, driven by bench/ipc/echo_load, 1 worker, 50 connections with one
// request in flight each, loopback, 2-vCPU VM shared with other work; medians of 7
// alternating repeats): server CPU per request is the same within noise. 16 KiB x 4
// buffers: 64 B 4.98 vs 5.06 us, 16 KiB 6.65 vs 7.18 us (pairwise it goes both ways).
// 64 KiB x 8: 64 B 5.05 vs 5.03 us, 16 KiB 7.01 vs 6.64 us (+6%, more memory touched).
// 4 KiB x 32 (a 16 KiB message split in 4): 16 KiB 36.0 vs 9.2 us, rps 27k vs 106k.
// One recv SQE saved per message does not show next to the send, the wake-ups and the
// TCP stack, matching the hand-written C floor (bench/ipc/uring_echo.c: multishot recv
// gained nothing measurable with one message in flight per connection, and buffers smaller
// than the message hurt). Use it for its API (the receiver owns and recycles the
// buffers, reads ahead, bounds what it holds), not for speed. The buffers are per
// receiver, not shared between connections, so it saves no memory either.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <memory>
#include <span>
#include <stop_token>
#include <utility>

#include <corio/ipc/detail/receiver_state.hpp>
#include <corio/ipc/detail/state_wait.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// One buffer the kernel filled, or (empty) the end of the stream. Move-only; destroying
/// it gives the buffer back to its receiver (from any thread).
class received_buffer {
 public:
  received_buffer() noexcept = default;
  /// Made by stream_receiver::receive(): buffer `bid` holding `len` bytes.
  received_buffer(std::shared_ptr<detail::receiver_state> state, int bid, std::size_t len) noexcept
      : m_state(std::move(state)), m_bid(bid), m_data(m_state->buffer(bid), len) {}
  /// Takes over `o`'s buffer; `o` is empty afterwards.
  received_buffer(received_buffer&& o) noexcept
      : m_state(std::move(o.m_state)), m_bid(std::exchange(o.m_bid, -1)), m_data(std::exchange(o.m_data, {})) {}
  /// Gives back the buffer held so far (if any), then takes over `o`'s.
  received_buffer& operator=(received_buffer&& o) noexcept {
    if (this != &o) {
      release();
      m_state = std::move(o.m_state);
      m_bid = std::exchange(o.m_bid, -1);
      m_data = std::exchange(o.m_data, {});
    }
    return *this;
  }
  received_buffer(const received_buffer&) = delete;
  received_buffer& operator=(const received_buffer&) = delete;
  ~received_buffer() { release(); }

  /// The received bytes (valid while this object holds the buffer).
  [[nodiscard]] std::span<const std::byte> data() const noexcept { return m_data; }
  /// How many bytes were received.
  [[nodiscard]] std::size_t size() const noexcept { return m_data.size(); }
  /// True at the end of the stream (and for a released or moved-from buffer).
  [[nodiscard]] bool empty() const noexcept { return m_data.empty(); }
  /// Gives the buffer back now (idempotent); data() is empty afterwards.
  void release() noexcept {
    if (m_bid >= 0) {
      m_state->give_back(m_bid);
      m_bid = -1;
    }
    m_data = {};
    m_state.reset();
  }

 private:
  std::shared_ptr<detail::receiver_state> m_state;
  int m_bid = -1;
  std::span<const std::byte> m_data;
};

/// Reads a stream socket into kernel-selected buffers (multishot recv on a provided-buffer
/// ring); each receive() yields one filled buffer. See the header.
class stream_receiver {
 public:
  /// The awaitable of receive(): yields result<received_buffer>.
  class [[nodiscard]] receive_awaiter : public detail::state_wait<detail::receiver_state, detail::recv_waiter> {
   public:
    using state_wait::state_wait;
    [[nodiscard]] result<received_buffer> await_resume() {
      if (std::error_code ec = finish()) {
        return unexpected(ec);
      }
      if (m_node.bid >= 0) {
        return received_buffer(m_state, std::exchange(m_node.bid, -1), m_node.len);
      }
      if (m_node.error != 0) {
        return unexpected(m_node.error == -ECANCELED ? cancelled_error() : os_error(m_node.error));
      }
      return received_buffer{};  // end of stream
    }
  };

  stream_receiver() noexcept = default;
  /// Takes over `other`'s receive request; `other` is closed afterwards.
  stream_receiver(stream_receiver&&) noexcept = default;
  /// Closes this receiver (waiting receive()s get errc::closed), then takes over `other`'s.
  stream_receiver& operator=(stream_receiver&& other) noexcept {
    if (this != &other) {
      close();
      m_state = std::move(other.m_state);
    }
    return *this;
  }
  stream_receiver(const stream_receiver&) = delete;
  stream_receiver& operator=(const stream_receiver&) = delete;
  ~stream_receiver() { close(); }

  /// The next filled buffer; empty at end of stream. See the header comment.
  [[nodiscard]] receive_awaiter receive(std::stop_token token = {}) const { return {m_state, std::move(token)}; }
  /// Ends the receiver (idempotent): waiting receive()s return errc::closed.
  void close() noexcept {
    if (m_state) {
      m_state->close();
    }
  }
  /// False for a default-constructed or moved-from receiver.
  [[nodiscard]] bool is_open() const noexcept { return m_state != nullptr; }
  /// Counters of the receiver, and whether multishot is in use.
  [[nodiscard]] receive_stats stats() const { return m_state ? m_state->stats() : receive_stats{}; }

  /// Used by stream_socket::receiver(). ENOMEM when the buffers cannot be mapped.
  static result<stream_receiver> make(int fd, const receive_options& options) {
    stream_receiver r;
    r.m_state = std::make_shared<detail::receiver_state>(fd, options);
    if (!r.m_state->valid()) {
      return unexpected(std::make_error_code(std::errc::not_enough_memory));
    }
    return r;
  }

 private:
  std::shared_ptr<detail::receiver_state> m_state;
};

}  // namespace corio::ipc
