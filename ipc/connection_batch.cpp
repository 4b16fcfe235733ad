// ipc::connection's batches (ipc/connection.hpp): send_many / send_many_bytes frame several
// messages into the send buffer for one sendmsg; recv_some / recv_bytes_some take, after
// the first message, every further one already wholly in the read-ahead buffer; a decode
// that fails there is kept for the next recv().
#include <corio/ipc/connection.hpp>

// Defines detail::finish_root, which every task<T> instantiated here needs.
#include <corio/runtime/spawn.hpp>

#include <cstring>
#include <utility>

namespace corio::ipc {

namespace {

// A send buffer with more capacity than this is released after its batch (as
// pickle::reader does with its buffers): one huge batch must not pin its memory.
constexpr std::size_t keep_send_capacity = std::size_t{1} << 20;

void append(std::vector<std::byte>& out, std::span<const std::byte> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

// The bytes of `messages` framed, or errc::message_size when a message is above
// max_message or the whole above max_batch. The sum is checked before each addition, so
// it never exceeds max_batch and cannot wrap.
result<std::size_t> framed_size(std::span<const std::span<const std::byte>> messages, std::size_t max_message,
                                std::size_t max_batch) {
  std::size_t total = 0;
  for (auto m : messages) {
    std::size_t head = frame::encode_header(m.size()).size;
    if (m.size() > max_message || head > max_batch - total || m.size() > max_batch - total - head) {
      return unexpected(make_error_code(errc::message_size));
    }
    total += head + m.size();
  }
  return total;
}

}  // namespace

void connection::trim_send_scratch() noexcept {
  if (m_send_scratch.capacity() > keep_send_capacity) {
    std::vector<std::byte>().swap(m_send_scratch);
  }
}

task<result<void>> connection::send_many_bytes(std::span<const std::span<const std::byte>> messages,
                                               std::stop_token token) {
  if (!is_open()) {
    co_return unexpected(make_error_code(errc::closed));
  }
  auto total = framed_size(messages, send_limit(), m_options.max_batch_size);
  if (!total) {
    co_return unexpected(total.error());
  }
  if (messages.empty()) {
    co_return result<void>{};
  }
  m_send_scratch.clear();
  m_send_scratch.reserve(*total);
  for (auto m : messages) {
    append(m_send_scratch, frame::encode_header(m.size()).view());
    append(m_send_scratch, m);
  }
  auto r = co_await send_frames(m_send_scratch, {}, std::move(token));
  trim_send_scratch();
  co_return r;
}

// Frames the pickle of every value into m_send_scratch: a 4-byte prefix is reserved before
// each pickle is appended, then written (widened to the 12-byte form for a pickle of 2 GiB
// or more, which only a raised send limit lets through). Stops at the first value
// that does not encode, or once the batch is above max_batch_size (so at most one pickle
// more than that is ever encoded).
result<void> connection::encode_batch(std::span<const pickle::value> values) {
  m_send_scratch.clear();
  for (const auto& v : values) {
    std::size_t at = m_send_scratch.size();
    m_send_scratch.resize(at + 4);
    if (auto r = pickle::dump(v, m_send_scratch, m_options.pickle); !r) {
      return r;
    }
    std::size_t n = m_send_scratch.size() - at - 4;
    if (n > send_limit()) {
      return unexpected(make_error_code(errc::message_size));
    }
    auto h = frame::encode_header(n);
    if (h.size > 4) {
      m_send_scratch.insert(m_send_scratch.begin() + static_cast<std::ptrdiff_t>(at + 4), h.size - 4, std::byte{});
    }
    std::memcpy(m_send_scratch.data() + at, h.bytes.data(), h.size);
    if (m_send_scratch.size() > m_options.max_batch_size) {
      return unexpected(make_error_code(errc::message_size));
    }
  }
  return {};
}

// Encodes before checking that the connection is open, as send() does: an unpicklable
// value is reported as such on a closed connection too.
task<result<void>> connection::send_many(std::span<const pickle::value> values, std::stop_token token) {
  if (auto r = encode_batch(values); !r) {
    m_send_scratch.clear();
    trim_send_scratch();
    co_return r;
  }
  if (!is_open()) {
    co_return unexpected(make_error_code(errc::closed));
  }
  if (values.empty()) {
    co_return result<void>{};
  }
  auto r = co_await send_frames(m_send_scratch, {}, std::move(token));
  trim_send_scratch();
  co_return r;
}

// The next message when all of it is already buffered and its prefix is valid: its body,
// and in `frame_size` the bytes it takes with its prefix. Consumes nothing; false otherwise
// (a malformed or oversized prefix too: the next receive reports it).
bool connection::peek_buffered(std::span<const std::byte>& body, std::size_t& frame_size) const {
  if (!m_buffer || m_begin == m_end) {
    return false;
  }
  std::span<const std::byte> rest(m_buffer.get() + m_begin, m_end - m_begin);
  auto h = frame::decode_header(rest, m_options.max_message_size);
  if (!h || !h->complete() || rest.size() - h->header_size < h->length) {
    return false;
  }
  body = rest.subspan(h->header_size, static_cast<std::size_t>(h->length));
  frame_size = h->header_size + body.size();
  return true;
}

void connection::consume_buffered(std::size_t frame_size) noexcept {
  m_begin += frame_size;
  if (m_begin == m_end) {
    m_begin = m_end = 0;
  }
}

// recv(): when recv_some left a message that failed to decode at the front of the buffer,
// consumes it and yields its error in `error` (true); false otherwise. Any other receive
// clears the error (receive()) and takes the message as bytes.
bool connection::take_pending_decode(std::error_code& error) {
  error = std::exchange(m_pending_decode, {});
  std::span<const std::byte> body;
  std::size_t frame_size = 0;
  if (!error || !is_open() || !peek_buffered(body, frame_size)) {
    return false;
  }
  consume_buffered(frame_size);
  return true;
}

task<result<std::size_t>> connection::recv_some(std::vector<pickle::value>& out, std::size_t max,
                                                std::stop_token token) {
  out.clear();
  if (max == 0) {
    co_return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  auto first = co_await recv(std::move(token));
  if (!first) {
    co_return unexpected(first.error());
  }
  out.push_back(std::move(*first));
  std::span<const std::byte> body;
  std::size_t frame_size = 0;
  while (out.size() < max && peek_buffered(body, frame_size)) {
    auto v = m_unpickler->load(body);
    if (!v) {
      // Stays buffered, its error kept: the next recv() consumes it and returns the error
      // without decoding it again (unpickle_error() describes it already).
      m_pending_decode = v.error();
      break;
    }
    consume_buffered(frame_size);
    out.push_back(std::move(*v));
  }
  co_return out.size();
}

task<result<std::size_t>> connection::recv_bytes_some(std::vector<std::vector<std::byte>>& out, std::size_t max,
                                                      std::stop_token token) {
  if (max == 0) {
    out.clear();
    co_return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  if (out.empty()) {
    out.emplace_back();
  }
  if (auto r = co_await recv_bytes(out[0], std::move(token)); !r) {
    out.clear();
    co_return unexpected(r.error());
  }
  std::size_t n = 1;
  std::span<const std::byte> body;
  std::size_t frame_size = 0;
  while (n < max && peek_buffered(body, frame_size)) {
    if (out.size() == n) {
      out.emplace_back();
    }
    out[n++].assign(body.begin(), body.end());
    consume_buffered(frame_size);
  }
  out.resize(n);
  co_return n;
}

}  // namespace corio::ipc
