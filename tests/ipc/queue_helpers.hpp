// Scaffolding shared by the message queue tests (message_queue_test: POSIX queues,
// sysv_message_queue_test: SysV queues): a message's bytes, a result's error, a received
// message as text, and rounds of a receive whose stop races a send, in which every
// message must be either returned or left in the queue.
#pragma once

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>

#include <cstddef>
#include <span>
#include <stop_token>
#include <string>
#include <system_error>
#include <vector>

namespace corio_test {

/// The bytes of a message.
inline std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

/// The error of a result, or a null code for a success (never .error() on a value).
template <class R>
std::error_code error_of(const R& r) {
  return r ? std::error_code{} : r.error();
}

/// The first `n` bytes of `buf` (a received message) as text.
inline std::string text_of(const std::vector<std::byte>& buf, std::size_t n) {
  return std::string(reinterpret_cast<const char*>(buf.data()), n);
}

/// How the rounds of cancel_races_send ended.
struct race_counts {
  int received = 0;     ///< the receive returned the message
  int left_queued = 0;  ///< the receive was cancelled and the message was still queued
  int other = 0;        ///< anything else: a lost message or another error
};

/// `rounds` rounds on `q`, each: spawn `receive_error(q, token)` (a receive into its own
/// buffer that yields its error, or a null code for a message), yield `yields(round)`
/// times (where the receive is when the stop comes), try_send "raced", request the stop
/// and count how the receive ended, taking the message back out where it was cancelled.
template <class Queue, class ReceiveError, class Yields>
corio::task<race_counts> cancel_races_send(const Queue* q, int rounds, ReceiveError receive_error, Yields yields) {
  race_counts counts;
  std::vector<std::byte> buf(64);
  for (int round = 0; round < rounds; ++round) {
    std::stop_source stop;
    auto waiter = corio::spawn(receive_error(q, stop.get_token()));
    for (int i = 0; i < yields(round); ++i) {
      co_await corio::yield_now{};
    }
    (void)q->try_send(bytes_of("raced"));
    stop.request_stop();
    const std::error_code ec = co_await waiter;
    if (!ec) {
      ++counts.received;
    } else if (ec == std::errc::operation_canceled && q->try_receive(buf)) {
      ++counts.left_queued;
    } else {
      ++counts.other;
    }
  }
  co_return counts;
}

}  // namespace corio_test
