// ipc::connection: Python-framed messages over a stream socket with a read-ahead buffer,
// size limits and stall/idle timeouts (ipc/connection.hpp).
#include <corio/ipc/connection.hpp>

// Defines detail::finish_root, which every task<T> instantiated here needs.
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/timeout.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstring>
#include <utility>

namespace corio::ipc {

namespace {

constexpr std::size_t min_buffer = 16;  // holds the longest prefix (12 bytes)
// recv()'s buffer for a message not wholly in the read-ahead buffer: released after a
// message larger than this (as the send buffer is, connection_batch.cpp).
constexpr std::size_t keep_recv_capacity = std::size_t{1} << 20;

std::error_code closed_error() noexcept { return make_error_code(errc::closed); }

}  // namespace

/// Where a received message goes.
struct connection::sink {
  std::vector<std::byte>* vec = nullptr;  // recv_bytes: resized to the message
  std::span<std::byte> into;              // recv_bytes_into: the caller's buffer
  std::span<std::byte> dest;              // the message's bytes (set by prepare, or a view)
  bool discard = false;                   // recv_bytes_into: it does not fit; skip it
  bool view = false;                      // recv: a wholly buffered message is not copied:
                                          // dest points into the read-ahead buffer

  void prepare(std::uint64_t length) {
    auto n = static_cast<std::size_t>(length);
    if (vec != nullptr) {
      vec->resize(n);
      dest = std::span(*vec);
    } else if (n <= into.size()) {
      dest = into.first(n);
    } else {
      discard = true;
    }
  }
  result<std::size_t> outcome(std::size_t length) const {
    if (discard) {
      return unexpected(make_error_code(errc::message_size));
    }
    return length;
  }
};

connection::connection(stream_socket stream, const connection_options& options) noexcept
    : m_stream(std::move(stream)), m_options(options), m_closed(!m_stream.is_open()) {}

connection::connection(connection&& other) noexcept
    : m_stream(std::move(other.m_stream)),
      m_options(other.m_options),
      m_unpickler(std::move(other.m_unpickler)),
      m_recv_scratch(std::move(other.m_recv_scratch)),
      m_send_scratch(std::move(other.m_send_scratch)),
      m_pending_decode(std::exchange(other.m_pending_decode, {})),
      m_buffer(std::move(other.m_buffer)),
      m_capacity(std::exchange(other.m_capacity, 0)),
      m_begin(std::exchange(other.m_begin, 0)),
      m_end(std::exchange(other.m_end, 0)),
      m_closed(other.m_closed.exchange(true, std::memory_order_relaxed)) {}

connection& connection::operator=(connection&& other) noexcept {
  if (this != &other) {
    m_stream = std::move(other.m_stream);
    m_options = other.m_options;
    m_unpickler = std::move(other.m_unpickler);
    m_recv_scratch = std::move(other.m_recv_scratch);
    m_send_scratch = std::move(other.m_send_scratch);
    m_pending_decode = std::exchange(other.m_pending_decode, {});
    m_buffer = std::move(other.m_buffer);
    m_capacity = std::exchange(other.m_capacity, 0);
    m_begin = std::exchange(other.m_begin, 0);
    m_end = std::exchange(other.m_end, 0);
    m_closed.store(other.m_closed.exchange(true, std::memory_order_relaxed), std::memory_order_relaxed);
  }
  return *this;
}

connection::~connection() = default;

void connection::set_options(const connection_options& options) {
  m_options = options;
  m_unpickler.reset();  // made again with the new decoder options
  m_pending_decode.clear();  // a message recv_some could not decode is decoded again
}

bool connection::is_open() const noexcept { return !m_closed.load(std::memory_order_relaxed); }

void connection::close() noexcept { fail(); }

void connection::fail() noexcept {
  // relaxed: see the member's comment.
  if (!m_closed.exchange(true, std::memory_order_relaxed) && m_stream.is_open()) {
    // shutdown, not close: an operation of the other direction may be in flight on this
    // descriptor; it ends (and the peer reads end of stream) while the number stays ours.
    ::shutdown(m_stream.fd(), SHUT_RDWR);
  }
}

bool connection::ensure_buffer() {
  if (!m_buffer) {
    m_capacity = std::max(m_options.read_buffer_size, min_buffer);
    m_buffer = std::make_unique_for_overwrite<std::byte[]>(m_capacity);
    m_begin = m_end = 0;
  }
  return true;
}

task<result<void>> connection::recv_bytes(std::vector<std::byte>& out, std::stop_token token) {
  sink to;
  to.vec = &out;
  auto n = co_await receive(to, std::move(token));
  if (!n) {
    co_return unexpected(n.error());
  }
  co_return result<void>{};
}

task<result<std::vector<std::byte>>> connection::recv_bytes(std::stop_token token) {
  std::vector<std::byte> out;
  sink to;
  to.vec = &out;
  auto n = co_await receive(to, std::move(token));
  if (!n) {
    co_return unexpected(n.error());
  }
  co_return out;
}

task<result<std::size_t>> connection::recv_bytes_into(std::span<std::byte> buf, std::stop_token token) {
  sink to;
  to.into = buf;
  co_return co_await receive(to, std::move(token));
}

task<result<void>> connection::send(const pickle::value& v, std::stop_token token) {
  m_send_scratch.clear();
  if (auto r = pickle::dump(v, m_send_scratch, m_options.pickle); !r) {
    trim_send_scratch();  // a failed dump keeps the capacity it grew to
    co_return r;
  }
  auto sent = co_await send_bytes(m_send_scratch, std::move(token));
  trim_send_scratch();  // as after a batch: one large reply must not pin its size for good
  co_return sent;
}

task<result<pickle::value>> connection::recv(std::stop_token token) {
  if (!m_unpickler) {
    m_unpickler = std::make_unique<pickle::reader>(m_options.unpickle);
  }
  if (std::error_code pending; take_pending_decode(pending)) {
    co_return unexpected(pending);
  }
  sink to;
  to.vec = &m_recv_scratch;  // where a message goes that was not wholly buffered
  to.view = true;
  auto n = co_await receive(to, std::move(token));
  if (!n) {
    trim_recv_scratch();  // a message cut short (stall, cancel) may have grown it too
    co_return unexpected(n.error());
  }
  result<pickle::value> v = m_unpickler->load(to.dest);
  trim_recv_scratch();
  co_return v;
}

// As send()'s buffer: one large message must not pin its size for the connection's life.
void connection::trim_recv_scratch() noexcept {
  if (m_recv_scratch.capacity() > keep_recv_capacity) {
    std::vector<std::byte>().swap(m_recv_scratch);
  }
}

std::string_view connection::unpickle_error() const noexcept {
  return m_unpickler ? std::string_view(m_unpickler->error_message()) : std::string_view();
}

result<std::size_t> connection::deliver(sink& to, const frame::header& h) {
  m_begin += h.header_size;
  auto n = static_cast<std::size_t>(h.length);
  if (to.view) {
    // Valid until the next receive: the bytes stay in the buffer until it reads again.
    to.dest = std::span(m_buffer.get() + m_begin, n);
  } else {
    to.prepare(h.length);
    if (!to.discard && n != 0) {
      std::memcpy(to.dest.data(), m_buffer.get() + m_begin, n);
    }
  }
  m_begin += n;
  if (m_begin == m_end) {
    m_begin = m_end = 0;
  }
  return to.outcome(n);
}

task<result<std::size_t>> connection::receive(sink& to, std::stop_token token) {
  m_pending_decode.clear();  // a message recv_some could not decode is now taken as bytes
  if (!is_open()) {
    co_return unexpected(closed_error());
  }
  ensure_buffer();
  if (m_begin == m_end) {
    // Between messages: wait for the first byte of the next one (idle_timeout).
    m_begin = m_end = 0;
    std::span<std::byte> space(m_buffer.get(), m_capacity);
    result<std::size_t> n;
    if (detail::is_no_timeout(m_options.idle_timeout)) {
      n = co_await m_stream.read_some(space, token);
    } else {
      n = co_await corio::timeout(m_stream.read_some(space, token), m_options.idle_timeout);
    }
    if (!n) {
      // Nothing of a message was consumed: a cancelled or timed-out wait leaves the
      // connection usable; an OS error (reset, ...) ends it.
      if (n.error() != std::errc::operation_canceled && n.error() != std::errc::timed_out) {
        fail();
      }
      co_return unexpected(n.error());
    }
    if (*n == 0) {
      fail();
      co_return unexpected(closed_error());
    }
    m_end = *n;
  }
  auto h = frame::decode_header(std::span(m_buffer.get() + m_begin, m_end - m_begin), m_options.max_message_size);
  if (!h) {
    fail();
    co_return unexpected(h.error());
  }
  if (h->complete() && m_end - m_begin - h->header_size >= h->length) {
    co_return deliver(to, *h);  // the whole message was buffered: no wait, no timer
  }
  // The message has begun: all of it must arrive within stall_timeout.
  result<std::size_t> n;
  if (detail::is_no_timeout(m_options.stall_timeout)) {
    n = co_await finish_frame(to, token);
  } else {
    n = co_await corio::timeout(finish_frame(to, token), m_options.stall_timeout);
  }
  if (!n) {
    fail();
    co_return unexpected(n.error());
  }
  co_return to.outcome(*n);
}

// Decodes the frame header at the front of the buffer. When only a part of it is buffered
// (at most 11 bytes), moves that part to the buffer's start, for the rest to be read after it.
result<frame::header> connection::buffered_header() {
  auto d = frame::decode_header(std::span(m_buffer.get() + m_begin, m_end - m_begin), m_options.max_message_size);
  if (d && !d->complete()) {
    std::memmove(m_buffer.get(), m_buffer.get() + m_begin, m_end - m_begin);
    m_end -= m_begin;
    m_begin = 0;
  }
  return d;
}

// Consumes header h from the buffer and hands the body's buffered bytes to `to`; returns
// how many of the body's bytes that was.
std::size_t connection::take_buffered_body(sink& to, const frame::header& h) {
  m_begin += h.header_size;
  to.prepare(h.length);
  std::size_t done = std::min(static_cast<std::size_t>(h.length), m_end - m_begin);
  if (!to.discard && done != 0) {
    std::memcpy(to.dest.data(), m_buffer.get() + m_begin, done);
  }
  m_begin += done;
  return done;
}

task<result<std::size_t>> connection::finish_frame(sink& to, std::stop_token token) {
  const std::error_code truncated = make_error_code(errc::protocol_error);
  frame::header h;
  for (;;) {
    auto d = buffered_header();
    if (!d) {
      co_return unexpected(d.error());
    }
    if (d->complete()) {
      h = *d;
      break;
    }
    auto n = co_await m_stream.read_some(std::span(m_buffer.get() + m_end, m_capacity - m_end), token);
    if (!n) {
      co_return unexpected(n.error());
    }
    if (*n == 0) {
      co_return unexpected(truncated);
    }
    m_end += *n;
  }
  auto length = static_cast<std::size_t>(h.length);
  std::size_t done = take_buffered_body(to, h);
  while (done < length) {
    // Everything buffered belonged to this message. A skipped rest goes through the buffer
    // (bytes past the message stay buffered); a kept one straight into its destination.
    m_begin = m_end = 0;
    const std::span<std::byte> into = to.discard ? std::span(m_buffer.get(), m_capacity) : to.dest.subspan(done);
    auto n = co_await m_stream.read_some(into, token);
    if (!n) {
      co_return unexpected(n.error());
    }
    if (*n == 0) {
      co_return unexpected(truncated);
    }
    if (to.discard) {
      std::size_t take = std::min(*n, length - done);
      done += take;
      m_begin = take;
      m_end = *n;
    } else {
      done += *n;
    }
  }
  if (m_begin == m_end) {
    m_begin = m_end = 0;
  }
  co_return length;
}

task<result<void>> connection::send_bytes(std::span<const std::byte> data, std::stop_token token) {
  if (!is_open()) {
    co_return unexpected(closed_error());
  }
  if (data.size() > send_limit()) {
    co_return unexpected(make_error_code(errc::message_size));
  }
  auto header = frame::encode_header(data.size());
  co_return co_await send_frames(header.view(), data, std::move(token));
}

namespace {

// send_frames' try policy: fixed_try(true) that notes an EAGAIN in *full.
class send_try : public fixed_try {
 public:
  explicit send_try(bool* full) noexcept : fixed_try(true), m_full(full) {}
  void not_ready() noexcept { *m_full = true; }

 private:
  bool* m_full;
};

// send_frames' ring path: the ring's sendmsg, unless the direct try has just found the
// socket full (*full), when it reports EAGAIN without an SQE: a sendmsg that does not
// wait would find it full again, and finish_send's write waits for room.
template <class Op>
class unless_full {
 public:
  unless_full(Op op, const bool* full) noexcept : m_op(std::move(op)), m_full(full) {}

  bool await_ready() noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    return !*m_full && m_op.await_suspend(h);
  }
  // A tracked op's try under its close lock (try_first_op looks for it) stays in use.
  template <class F>
    requires requires(Op& op, F f) { op.attempt_now(std::move(f)); }
  bool attempt_now(F f) {
    return m_op.attempt_now(std::move(f));
  }
  auto await_resume() {
    using R = decltype(m_op.await_resume());
    return *m_full ? R(unexpected(os_error(-EAGAIN))) : m_op.await_resume();
  }

 private:
  Op m_op;
  const bool* m_full;
};

}  // namespace

// Sends `head` then `body` (empty for a batch already framed in `head`): one sendmsg that
// does not wait, then, only if the socket did not take everything, the rest under
// stall_timeout. Closes the connection when part of it left and the rest could not.
task<result<void>> connection::send_frames(std::span<const std::byte> head, std::span<const std::byte> body,
                                           std::stop_token token) {
  iovec iov[2] = {{const_cast<std::byte*>(head.data()), head.size()},
                  {const_cast<std::byte*>(body.data()), body.size()}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = body.empty() ? 1 : 2;
  // First try: one sendmsg that does not wait, made directly (detail::nowait_sendmsg says
  // why); through the ring when the explicit or inherited token is stopped
  // (operation_canceled, nothing sent) and off a worker (errc::no_runtime); when the
  // socket is full (EAGAIN) straight to finish_send's waiting write (unless_full). A
  // settled try charges the worker's cooperative budget, so a sender whose peer keeps up
  // still lets other tasks run. Almost always the socket takes everything: no timer.
  const int fd = m_stream.fd();
  bool full = false;  // the direct try found EAGAIN: no ring sendmsg, finish_send waits
  auto n = co_await make_try_first(unless_full(detail::sendmsg(fd, &msg, MSG_DONTWAIT, token), &full),
                                   detail::nowait_sendmsg(fd, &msg), send_try(&full), token);
  std::size_t sent = 0;
  if (n) {
    sent = *n;
  } else if (n.error() != std::errc::resource_unavailable_try_again) {
    if (n.error() != std::errc::operation_canceled) {
      fail();
    }
    co_return unexpected(n.error());
  }
  if (sent == head.size() + body.size()) {
    co_return result<void>{};
  }
  // The peer is not reading fast enough: the rest must leave within stall_timeout.
  result<void> r;
  if (detail::is_no_timeout(m_options.stall_timeout)) {
    r = co_await finish_send(head, body, sent, token);
  } else {
    r = co_await corio::timeout(finish_send(head, body, sent, token), m_options.stall_timeout);
  }
  if (!r && !(sent == 0 && r.error() == std::errc::operation_canceled)) {
    fail();  // part of the message left (or the peer stalled): the stream is unusable
  }
  co_return r;
}

task<result<void>> connection::finish_send(std::span<const std::byte> header, std::span<const std::byte> data,
                                           std::size_t& sent, std::stop_token token) {
  std::size_t total = header.size() + data.size();
  while (sent < total) {
    iovec iov[2];
    std::size_t count = 0;
    if (sent < header.size()) {
      iov[count++] = {const_cast<std::byte*>(header.data() + sent), header.size() - sent};
      if (!data.empty()) {
        iov[count++] = {const_cast<std::byte*>(data.data()), data.size()};
      }
    } else {
      std::size_t off = sent - header.size();
      iov[count++] = {const_cast<std::byte*>(data.data() + off), data.size() - off};
    }
    auto n = co_await m_stream.writev(std::span<const iovec>(iov, count), token);
    if (!n) {
      co_return unexpected(n.error());
    }
    sent += *n;
  }
  co_return result<void>{};
}

}  // namespace corio::ipc
