// The loops behind read_exact / write_all, shared by every byte stream in ipc/ (sockets,
// pipe ends, child stdio): they call the stream's one-SQE read_some / write_some until the
// whole buffer is done.
// Thread-safety: one task per stream direction at a time. Cost: one task frame (recycled)
// around the single-SQE operations. Cancellation: each step honours `token` and the
// inherited token; on cancellation the bytes already transferred are not reported.
#pragma once

#include <cstddef>
#include <span>
#include <stop_token>

#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc::detail {

/// Reads exactly buf.size() bytes; errc::closed if the stream ends first.
template <class Stream>
task<result<void>> read_exact_loop(const Stream& stream, std::span<std::byte> buf, std::stop_token token) {
  while (!buf.empty()) {
    auto n = co_await stream.read_some(buf, token);
    if (!n) {
      co_return unexpected(n.error());
    }
    if (*n == 0) {
      co_return unexpected(make_error_code(errc::closed));
    }
    buf = buf.subspan(*n);
  }
  co_return result<void>{};
}

/// Writes all of buf, resuming after short writes.
template <class Stream>
task<result<void>> write_all_loop(const Stream& stream, std::span<const std::byte> buf, std::stop_token token) {
  while (!buf.empty()) {
    auto n = co_await stream.write_some(buf, token);
    if (!n) {
      co_return unexpected(n.error());
    }
    buf = buf.subspan(*n);
  }
  co_return result<void>{};
}

}  // namespace corio::ipc::detail
