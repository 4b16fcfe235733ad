// Basic I/O on file descriptors through the worker's io_uring: read, write, nop.
//
// Each call returns an io_op (runtime/io_op.hpp): lazy, awaited once, yielding
// result<std::size_t> bytes (or the OS error; operation_canceled when stopped).
// Buffers must stay valid until the await completes (they do, if they live in the
// awaiting coroutine: its frame cannot be destroyed while the operation is in flight).
// Thread-safety: any number of operations may be in flight on one fd from different
// tasks; their order is the kernel's. Cost: one SQE, batched with the worker's others.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <stop_token>

#include <corio/runtime/io_op.hpp>
#include <corio/runtime/result.hpp>

namespace corio::io {

namespace detail {
/// Adapts result<int> to result<std::size_t>.
template <class Op>
struct sized_op : Op {
  using Op::Op;
  explicit sized_op(Op&& op) : Op(std::move(op)) {}
  [[nodiscard]] result<std::size_t> await_resume() noexcept {
    return Op::await_resume().map([](int n) { return static_cast<std::size_t>(n); });
  }
};
template <class Prep>
sized_op<io_op<Prep>> make_sized(Prep prep, std::stop_token token) {
  return sized_op<io_op<Prep>>(io_op<Prep>(std::move(prep), std::move(token)));
}
}  // namespace detail

/// Reads up to buf.size() bytes from `fd` at `offset` (-1: the file position / a stream).
inline auto read(int fd, std::span<std::byte> buf, std::int64_t offset = -1, std::stop_token token = {}) {
  return detail::make_sized(
      [fd, buf, offset](io_uring_sqe* sqe) {
        io_uring_prep_read(sqe, fd, buf.data(), static_cast<unsigned>(buf.size()), static_cast<std::uint64_t>(offset));
      },
      std::move(token));
}

/// Writes up to buf.size() bytes to `fd` at `offset` (-1: the file position / a stream).
inline auto write(int fd, std::span<const std::byte> buf, std::int64_t offset = -1, std::stop_token token = {}) {
  return detail::make_sized(
      [fd, buf, offset](io_uring_sqe* sqe) {
        io_uring_prep_write(sqe, fd, buf.data(), static_cast<unsigned>(buf.size()), static_cast<std::uint64_t>(offset));
      },
      std::move(token));
}

/// A no-op round trip through the ring (useful to measure the ring and to yield to I/O).
inline auto nop(std::stop_token token = {}) {
  return io_op([](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); }, std::move(token));
}

/// Waits until `fd` is ready for `events` (POLLIN, POLLOUT, ...); yields the revents.
inline auto poll(int fd, unsigned events, std::stop_token token = {}) {
  return io_op([fd, events](io_uring_sqe* sqe) { io_uring_prep_poll_add(sqe, fd, events); }, std::move(token));
}

}  // namespace corio::io
