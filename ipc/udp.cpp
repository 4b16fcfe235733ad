// UDP (ipc/udp.hpp): opening and binding a udp_socket.
#include <corio/ipc/udp.hpp>

namespace corio::ipc {

result<udp_socket> udp_socket::open(int family) {
  return detail::open_socket(family, SOCK_DGRAM, 0).map([](int fd) { return udp_socket(fd); });
}

result<udp_socket> udp_socket::bind(const socket_address& addr) {
  auto s = open(addr.family());
  if (!s) {
    return s;
  }
  if (auto r = s->datagram_socket::bind(addr); !r) {
    return unexpected(r.error());
  }
  return s;
}

}  // namespace corio::ipc
