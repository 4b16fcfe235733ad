// TCP (ipc/tcp.hpp): connecting a tcp_stream (with and without a time limit) and binding a
// tcp_listener.
#include <corio/ipc/tcp.hpp>

#include <corio/runtime/timeout.hpp>

#include <utility>

namespace corio::ipc {

task<result<tcp_stream>> tcp_stream::connect(socket_address addr, std::stop_token token) {
  auto fd = detail::open_socket(addr.family(), SOCK_STREAM, 0);
  if (!fd) {
    co_return unexpected(fd.error());
  }
  tcp_stream s(*fd);
  auto r = co_await detail::connect(s.fd(), addr.native(), addr.size(), std::move(token));
  if (!r) {
    co_return unexpected(r.error());
  }
  co_return s;
}

task<result<tcp_stream>> tcp_stream::connect(socket_address addr, saturating_duration limit,
                                             std::stop_token token) {
  auto fd = detail::open_socket(addr.family(), SOCK_STREAM, 0);
  if (!fd) {
    co_return unexpected(fd.error());
  }
  tcp_stream s(*fd);
  auto r = co_await corio::timeout(detail::connect(s.fd(), addr.native(), addr.size(), std::move(token)), limit.get());
  if (!r) {
    co_return unexpected(r.error());
  }
  co_return s;
}

result<tcp_listener> tcp_listener::bind(const socket_address& addr, const tcp_listen_options& options) {
  // Non-blocking where the ring's accept copes with it: accept() then tries accept4 first.
  const bool direct = detail::direct_accept_supported();
  auto fd = detail::open_socket(addr.family(), SOCK_STREAM | (direct ? SOCK_NONBLOCK : 0), 0);
  if (!fd) {
    return unexpected(fd.error());
  }
  tcp_listener l(*fd);
  l.m_direct = direct;
  if (options.reuse_address) {
    if (auto r = l.set_option(SOL_SOCKET, SO_REUSEADDR, 1); !r) {
      return unexpected(r.error());
    }
  }
  if (options.reuse_port) {
    if (auto r = l.set_option(SOL_SOCKET, SO_REUSEPORT, 1); !r) {
      return unexpected(r.error());
    }
  }
  if (addr.family() == AF_INET6) {
    if (auto r = l.set_option(IPPROTO_IPV6, IPV6_V6ONLY, options.v6_only ? 1 : 0); !r) {
      return unexpected(r.error());
    }
  }
  // Before listen(2): a connection takes the listener's options when its handshake
  // completes, which may be before any call after listen.
  if (options.keepalive.enabled) {
    if (auto r = l.set_keepalive(true); !r) {
      return unexpected(r.error());
    }
    const std::pair<int, int> timings[] = {{TCP_KEEPIDLE, options.keepalive.idle_s},
                                           {TCP_KEEPINTVL, options.keepalive.interval_s},
                                           {TCP_KEEPCNT, options.keepalive.probes}};
    for (auto [name, value] : timings) {
      if (value != 0) {
        (void)l.set_option(IPPROTO_TCP, name, value);  // best effort (tcp.hpp)
      }
    }
  }
  if (auto r = detail::bind_listen(l.fd(), addr, options.backlog); !r) {
    return unexpected(r.error());
  }
  return l;
}

}  // namespace corio::ipc
