// Sockets (ipc/socket.hpp): opening, binding and listening, addresses, options, the RST-on-close
// setting, and the stream socket's read_exact/write_all/writev_all loops.
#include <corio/ipc/socket.hpp>

#include <corio/ipc/detail/exact_io.hpp>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <vector>

namespace corio::ipc {

namespace {
std::error_code last_error() { return {errno, std::system_category()}; }
}  // namespace

result<int> detail::open_socket(int domain, int type, int protocol) {
  int fd = ::socket(domain, type | SOCK_CLOEXEC, protocol);
  if (fd < 0) {
    return unexpected(last_error());
  }
  return fd;
}

result<void> detail::bind_listen(int fd, const socket_address& addr, int backlog) {
  if (::bind(fd, addr.native(), addr.size()) != 0 || ::listen(fd, backlog) != 0) {
    return unexpected(last_error());
  }
  return {};
}

result<socket> socket::open(int domain, int type, int protocol) {
  return detail::open_socket(domain, type, protocol).map([](int fd) { return socket(fd); });
}

result<socket_address> socket::local_address() const {
  socket_address a;
  socklen_t len = socket_address::capacity();
  if (::getsockname(fd(), a.native(), &len) != 0) {
    return unexpected(last_error());
  }
  a.set_size(len);
  return a;
}

result<socket_address> socket::peer_address() const {
  socket_address a;
  socklen_t len = socket_address::capacity();
  if (::getpeername(fd(), a.native(), &len) != 0) {
    return unexpected(last_error());
  }
  a.set_size(len);
  return a;
}

result<void> socket::set_option(int level, int name, int value) {
  if (::setsockopt(fd(), level, name, &value, sizeof value) != 0) {
    return unexpected(last_error());
  }
  return {};
}

result<int> socket::option(int level, int name) const {
  int value = 0;
  socklen_t len = sizeof value;
  if (::getsockopt(fd(), level, name, &value, &len) != 0) {
    return unexpected(last_error());
  }
  return value;
}

result<void> socket::set_linger_reset() {
  linger l{1, 0};
  if (::setsockopt(fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l) != 0) {
    return unexpected(last_error());
  }
  return {};
}

task<result<void>> stream_socket::read_exact(std::span<std::byte> buf, std::stop_token token) const {
  return detail::read_exact_loop(*this, buf, std::move(token));
}

task<result<void>> stream_socket::write_all(std::span<const std::byte> buf, std::stop_token token) const {
  return detail::write_all_loop(*this, buf, std::move(token));
}

task<result<void>> stream_socket::writev_all(std::span<const iovec> iov_in, std::stop_token token) const {
  std::vector<iovec> iov(iov_in.begin(), iov_in.end());
  std::size_t first = 0;
  while (first < iov.size()) {
    if (iov[first].iov_len == 0) {
      ++first;
      continue;
    }
    // One sendmsg takes at most IOV_MAX iovecs (more fail with EMSGSIZE): the rest go
    // in later rounds, as the remainder of a partial send does.
    auto rest = std::span<const iovec>(iov).subspan(first);
    auto n = co_await writev(rest.first(std::min<std::size_t>(rest.size(), IOV_MAX)), token);
    if (!n) {
      co_return unexpected(n.error());
    }
    std::size_t left = *n;
    while (left > 0 && first < iov.size()) {
      std::size_t take = std::min(left, iov[first].iov_len);
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + take;
      iov[first].iov_len -= take;
      left -= take;
      if (iov[first].iov_len == 0) {
        ++first;
      }
    }
  }
  co_return result<void>{};
}

result<void> stream_socket::shutdown(int how) const {
  if (::shutdown(fd(), how) != 0) {
    return unexpected(last_error());
  }
  return {};
}

result<void> datagram_socket::bind(const socket_address& addr) const {
  if (::bind(fd(), addr.native(), addr.size()) != 0) {
    return unexpected(last_error());
  }
  return {};
}

result<void> datagram_socket::connect(const socket_address& addr) const {
  if (::connect(fd(), addr.native(), addr.size()) != 0) {
    return unexpected(last_error());
  }
  return {};
}

task<result<std::size_t>> datagram_socket::send_to(std::span<const std::byte> buf, socket_address to,
                                                   std::stop_token token) const {
  iovec iov{const_cast<std::byte*>(buf.data()), buf.size()};
  msghdr msg{};
  msg.msg_name = to.native();
  msg.msg_namelen = to.size();
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  co_return co_await track(detail::sendmsg(fd(), &msg, 0, std::move(token)));
}

task<result<datagram>> datagram_socket::recv_from(std::span<std::byte> buf, std::stop_token token) const {
  iovec iov{buf.data(), buf.size()};
  datagram out;
  msghdr msg{};
  msg.msg_name = out.from.native();
  msg.msg_namelen = socket_address::capacity();
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  auto n = co_await track(detail::recvmsg(fd(), &msg, 0, std::move(token)));
  if (!n) {
    co_return unexpected(n.error());
  }
  out.from.set_size(msg.msg_namelen);
  out.size = *n;
  out.truncated = (msg.msg_flags & MSG_TRUNC) != 0;
  co_return out;
}

}  // namespace corio::ipc
