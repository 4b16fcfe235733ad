// Scaffolding shared by the datagram socket tests (udp_test, unix_test): the outcome of a
// connected recv in words, so that a case compares one string; two datagrams sent and
// received over a connected pair; and a receive that a stop from another thread ends.
#pragma once

#include <corio/ipc/socket.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/runtime.hpp>
#include <corio/runtime/task.hpp>

#include <chrono>
#include <cstddef>
#include <span>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>

#include "helpers.hpp"

namespace corio_test {

/// A connected recv's outcome in words: the bytes stored and whether the datagram was cut,
/// or the error.
inline std::string described(const corio::result<corio::ipc::datagram>& d, const std::string& buf) {
  if (!d) {
    return d.error().message();
  }
  std::string out = "'";
  out.append(buf, 0, d->size);
  out += d->truncated ? "' truncated" : "' whole";
  return out;
}

/// Sends `first`, then `second`, from `from` to `to` (connected to each other), then
/// receives both on `to` with recv: the first into a buffer of `first_capacity` bytes (for
/// 0 the empty span, no buffer at all), the second into one of 4. Yields both outcomes in
/// words (described), "; " between: whether the first was cut and that the second is the
/// next datagram, not the rest of the first. (The texts are taken by value: the task may
/// outlive its caller's temporaries.)
template <class Socket>
corio::task<std::string> recv_two_datagrams(const Socket& from, const Socket& to, std::string first,
                                            std::string second, std::size_t first_capacity) {
  (void)co_await from.send(bytes(first));
  (void)co_await from.send(bytes(second));
  std::string buf(first_capacity, '\0');
  auto one = co_await to.recv(first_capacity == 0 ? std::span<std::byte>{} : wbytes(buf));
  std::string out = described(one, buf) + "; ";
  buf.assign(4, '\0');
  auto two = co_await to.recv(wbytes(buf));
  co_return out + described(two, buf);
}

/// Runs `receive(token)` (a receive that nothing will satisfy) on `rt` while another
/// thread requests the token's stop after 50 ms; yields the error the receive ended with
/// (a null code if it yielded something).
template <class Receive>
std::error_code error_when_stopped(corio::runtime& rt, Receive receive) {
  std::stop_source stop;
  auto body = [&]() -> corio::task<std::error_code> {
    auto r = co_await receive(stop.get_token());
    co_return r ? std::error_code{} : r.error();
  };
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    stop.request_stop();
  });
  std::error_code ended = rt.block_on(body());
  canceller.join();
  return ended;
}

}  // namespace corio_test
