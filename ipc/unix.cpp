// UNIX-domain sockets (ipc/unix.hpp): connecting, passing descriptors (SCM_RIGHTS), peer
// credentials, listeners that remove their path, datagram sockets and socketpair().
#include <corio/ipc/unix.hpp>

#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace corio::ipc {

namespace {
std::error_code last_error() { return {errno, std::system_category()}; }
// The kernel's SCM_MAX_FD.
constexpr std::size_t kMaxFds = 253;
// The filesystem path of a Unix address, to unlink: sun_path up to its first NUL (not
// to_string(), which writes a relative path as "unix:path").
std::string path_of(const socket_address& addr) {
  const auto* un = reinterpret_cast<const sockaddr_un*>(addr.native());
  std::size_t n = addr.size() > offsetof(sockaddr_un, sun_path) ? addr.size() - offsetof(sockaddr_un, sun_path) : 0;
  return std::string(un->sun_path, ::strnlen(un->sun_path, n));
}

}  // namespace

task<result<unix_stream>> unix_stream::connect(socket_address addr, std::stop_token token) {
  auto fd = detail::open_socket(AF_UNIX, SOCK_STREAM, 0);
  if (!fd) {
    co_return unexpected(fd.error());
  }
  unix_stream s(*fd);
  auto r = co_await detail::connect(s.fd(), addr.native(), addr.size(), std::move(token));
  if (!r) {
    co_return unexpected(r.error());
  }
  co_return s;
}

task<result<std::size_t>> unix_stream::send_fds(std::span<const std::byte> data, std::span<const int> fds,
                                                std::stop_token token) const {
  if (data.empty() || fds.size() > kMaxFds) {
    co_return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  iovec iov{const_cast<std::byte*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
  }
  co_return co_await track(detail::sendmsg(fd(), &msg, 0, std::move(token)));
}

task<result<received_fds>> unix_stream::recv_fds(std::span<std::byte> buf, std::size_t max_fds,
                                                 std::stop_token token) const {
  max_fds = std::min(max_fds, kMaxFds);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * std::max<std::size_t>(max_fds, 1)));
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  auto n = co_await track(detail::recvmsg(fd(), &msg, MSG_CMSG_CLOEXEC, std::move(token)));
  if (!n) {
    co_return unexpected(n.error());
  }
  received_fds out;
  out.bytes = *n;
  out.truncated_fds = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
      continue;
    }
    std::size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int received = -1;
      std::memcpy(&received, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
      if (out.fds.size() < max_fds) {
        out.fds.emplace_back(received);
      } else {
        // CMSG_SPACE rounds up, so the kernel may deliver one more than asked for.
        ::close(received);
        out.truncated_fds = true;
      }
    }
  }
  co_return out;
}

result<ucred> unix_stream::peer_credentials() const {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return unexpected(last_error());
  }
  return cred;
}

unix_listener::unix_listener(unix_listener&& other) noexcept
    : socket(std::move(other)),
      m_path(std::exchange(other.m_path, {})),
      m_acceptors(std::move(other.m_acceptors)),
      m_direct(std::exchange(other.m_direct, false)) {}

unix_listener& unix_listener::operator=(unix_listener&& other) noexcept {
  if (this != &other) {
    m_acceptors = std::move(other.m_acceptors);  // closes ours before the descriptor
    remove_path();
    socket::operator=(std::move(other));
    m_path = std::exchange(other.m_path, {});
    m_direct = std::exchange(other.m_direct, false);
  }
  return *this;
}

unix_listener::~unix_listener() { remove_path(); }

void unix_listener::remove_path() noexcept {
  if (!m_path.empty()) {
    ::unlink(m_path.c_str());
    m_path.clear();
  }
}

result<unix_listener> unix_listener::bind(const socket_address& addr, int backlog) {
  if (!addr.is_unix()) {
    return unexpected(make_error_code(address_errc::not_unix));
  }
  // Non-blocking where the ring's accept copes with it: accept() then tries accept4 first.
  const bool direct = detail::direct_accept_supported();
  auto fd = detail::open_socket(AF_UNIX, SOCK_STREAM | (direct ? SOCK_NONBLOCK : 0), 0);
  if (!fd) {
    return unexpected(fd.error());
  }
  socket guard(*fd);
  if (auto r = detail::bind_listen(guard.fd(), addr, backlog); !r) {
    return unexpected(r.error());
  }
  std::string path = addr.is_abstract() ? std::string() : path_of(addr);
  return unix_listener(guard.release(), std::move(path), direct);
}

result<unix_datagram> unix_datagram::open() {
  return detail::open_socket(AF_UNIX, SOCK_DGRAM, 0).map([](int fd) { return unix_datagram(fd); });
}

result<unix_datagram> unix_datagram::bind(const socket_address& addr) {
  if (!addr.is_unix()) {
    return unexpected(make_error_code(address_errc::not_unix));
  }
  auto s = open();
  if (!s) {
    return s;
  }
  if (auto r = s->datagram_socket::bind(addr); !r) {
    return unexpected(r.error());
  }
  return s;
}

result<std::pair<unix_stream, unix_stream>> socketpair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return unexpected(last_error());
  }
  return std::pair<unix_stream, unix_stream>(unix_stream(fds[0]), unix_stream(fds[1]));
}

result<std::pair<unix_datagram, unix_datagram>> datagram_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return unexpected(last_error());
  }
  return std::pair<unix_datagram, unix_datagram>(unix_datagram(fds[0]), unix_datagram(fds[1]));
}

}  // namespace corio::ipc
