// ipc::connect: connect + Python's client-side handshake (ipc/client.hpp).
#include <corio/ipc/client.hpp>

#include <corio/ipc/tcp.hpp>
#include <corio/ipc/unix.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/timeout.hpp>

#include <utility>

namespace corio::ipc {

namespace {

task<result<stream_socket>> open_stream(socket_address addr, std::chrono::nanoseconds limit, std::stop_token token) {
  if (addr.is_unix()) {
    result<unix_stream> s;
    if (detail::is_no_timeout(limit)) {
      s = co_await unix_stream::connect(std::move(addr), std::move(token));
    } else {
      s = co_await corio::timeout(unix_stream::connect(std::move(addr), std::move(token)), limit);
    }
    if (!s) {
      co_return unexpected(s.error());
    }
    co_return stream_socket(std::move(*s));
  }
  result<tcp_stream> s;
  if (detail::is_no_timeout(limit)) {
    s = co_await tcp_stream::connect(std::move(addr), std::move(token));
  } else {
    s = co_await tcp_stream::connect(std::move(addr), limit, std::move(token));
  }
  if (!s) {
    co_return unexpected(s.error());
  }
  (void)s->set_nodelay(true);  // small request/response messages: no Nagle delay
  co_return stream_socket(std::move(*s));
}

}  // namespace

task<result<connection>> connect(socket_address addr, client_options options, std::stop_token token) {
  auto s = co_await open_stream(std::move(addr), options.connect_timeout, token);
  if (!s) {
    co_return unexpected(s.error());
  }
  connection conn(std::move(*s), options.connection);
  if (auto r = co_await authenticate_client(conn, std::move(options.auth), std::move(token)); !r) {
    co_return unexpected(r.error());
  }
  co_return conn;
}

task<result<connection>> connect(socket_address addr, std::string authkey, std::stop_token token) {
  client_options options;
  options.auth.authkey = std::move(authkey);
  co_return co_await connect(std::move(addr), std::move(options), std::move(token));
}

}  // namespace corio::ipc
