// Socket addresses (ipc/address.hpp): parsing ports and hosts, IPv4/IPv6/UNIX (path and
// abstract) construction, name resolution, and the error categories for address and
// getaddrinfo failures.
#include <corio/ipc/address.hpp>

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <corio/runtime/blocking.hpp>

namespace corio::ipc {

namespace {

class address_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "corio.address"; }
  std::string message(int ev) const override {
    switch (static_cast<address_errc>(ev)) {
      case address_errc::empty: return "empty socket address";
      case address_errc::missing_port: return "port missing (expected host:port)";
      case address_errc::invalid_port: return "invalid port (expected a number 0-65535)";
      case address_errc::invalid_ipv4: return "not an IPv4 address literal (use resolve() for host names)";
      case address_errc::invalid_ipv6: return "not an IPv6 address literal";
      case address_errc::unclosed_bracket: return "'[' without ']' in an IPv6 address";
      case address_errc::path_too_long: return "Unix socket path or name too long (at most 107 bytes)";
      case address_errc::not_unix: return "not a Unix-domain address";
      case address_errc::invalid_path: return "Unix socket path with a NUL byte";
    }
    return "unknown socket address error";
  }
};

class gai_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "corio.getaddrinfo"; }
  std::string message(int ev) const override { return ::gai_strerror(ev); }
};

result<std::uint16_t> parse_port(std::string_view s) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || value > 65535) {
    return unexpected(make_error_code(address_errc::invalid_port));
  }
  return static_cast<std::uint16_t>(value);
}

// An IPv6 zone ("%eth0" or "%2", without the '%'): a number is the interface index
// itself, a name is looked up (if_nametoindex). invalid_ipv6 for an empty zone, a number
// over 32 bits or an unknown interface.
result<std::uint32_t> parse_scope(std::string_view zone) {
  auto invalid = [] { return unexpected(make_error_code(address_errc::invalid_ipv6)); };
  std::uint32_t index = 0;
  if (!zone.empty() && std::all_of(zone.begin(), zone.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    auto [end, ec] = std::from_chars(zone.data(), zone.data() + zone.size(), index);
    if (ec != std::errc{}) {
      return invalid();  // over 32 bits
    }
    return index;
  }
  if (!zone.empty() && zone.find('\0') == std::string_view::npos) {
    index = ::if_nametoindex(std::string(zone).c_str());  // one ioctl; 0 when unknown
  }
  if (index == 0) {
    return invalid();
  }
  return index;
}

result<socket_address> unix_name(std::string_view name, bool abstract) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::size_t offset = abstract ? 1 : 0;
  // A path needs its terminating NUL; an abstract name is counted by length instead.
  std::size_t limit = sizeof(un.sun_path) - (abstract ? 1 : 1);
  if (name.size() > limit) {
    return unexpected(make_error_code(address_errc::path_too_long));
  }
  if (name.empty() && !abstract) {
    return unexpected(make_error_code(address_errc::empty));
  }
  // The kernel would end a path at its first NUL (another file); an abstract name is
  // counted by length, so a NUL is one of its bytes.
  if (!abstract && name.find('\0') != std::string_view::npos) {
    return unexpected(make_error_code(address_errc::invalid_path));
  }
  std::memcpy(un.sun_path + offset, name.data(), name.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + offset + name.size() + (abstract ? 0 : 1));
  return socket_address(reinterpret_cast<const sockaddr*>(&un), len);
}

}  // namespace

const std::error_category& address_category() noexcept {
  static const address_category_impl c;
  return c;
}

const std::error_category& getaddrinfo_category() noexcept {
  static const gai_category_impl c;
  return c;
}

socket_address::socket_address() noexcept : m_storage{}, m_len(sizeof(sa_family_t)) {
  m_storage.ss_family = AF_UNSPEC;
}

socket_address::socket_address(const sockaddr* sa, socklen_t len) noexcept : m_storage{} {
  m_len = std::min<socklen_t>(len, sizeof(m_storage));
  std::memcpy(&m_storage, sa, m_len);
}

result<socket_address> socket_address::ipv4(std::string_view host, std::uint16_t port) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  std::string h(host);
  // inet_pton reads up to the first NUL: "127.0.0.1\0junk" must not pass as 127.0.0.1.
  if (host.find('\0') != std::string_view::npos || ::inet_pton(AF_INET, h.c_str(), &in.sin_addr) != 1) {
    return unexpected(make_error_code(address_errc::invalid_ipv4));
  }
  return socket_address(reinterpret_cast<const sockaddr*>(&in), sizeof in);
}

result<socket_address> socket_address::ipv6(std::string_view host, std::uint16_t port) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port);
  // A zone ("fe80::1%eth0", "fe80::1%2") is the scope id; inet_pton takes the rest.
  std::size_t percent = host.find('%');
  if (percent != std::string_view::npos) {
    auto scope = parse_scope(host.substr(percent + 1));
    if (!scope) {
      return unexpected(scope.error());
    }
    in6.sin6_scope_id = *scope;
  }
  std::string h(host.substr(0, percent));
  // inet_pton reads up to the first NUL: "::1\0junk" must not pass as ::1.
  if (h.find('\0') != std::string::npos || ::inet_pton(AF_INET6, h.c_str(), &in6.sin6_addr) != 1) {
    return unexpected(make_error_code(address_errc::invalid_ipv6));
  }
  return socket_address(reinterpret_cast<const sockaddr*>(&in6), sizeof in6);
}

result<socket_address> socket_address::unix_path(std::string_view path) { return unix_name(path, false); }

result<socket_address> socket_address::unix_abstract(std::string_view name) { return unix_name(name, true); }

socket_address socket_address::loopback_v4(std::uint16_t port) noexcept {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return {reinterpret_cast<const sockaddr*>(&in), sizeof in};
}

socket_address socket_address::loopback_v6(std::uint16_t port) noexcept {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port);
  in6.sin6_addr = in6addr_loopback;
  return {reinterpret_cast<const sockaddr*>(&in6), sizeof in6};
}

result<socket_address> socket_address::parse(std::string_view text) {
  if (text.empty()) {
    return unexpected(make_error_code(address_errc::empty));
  }
  if (text.starts_with("unix:")) {
    text.remove_prefix(5);
    if (text.starts_with("@")) {
      return unix_abstract(text.substr(1));
    }
    return unix_path(text);
  }
  if (text.front() == '@') {
    return unix_abstract(text.substr(1));
  }
  if (text.front() == '/' || text.starts_with("./")) {
    return unix_path(text);
  }
  if (text.front() == '[') {
    std::size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return unexpected(make_error_code(address_errc::unclosed_bracket));
    }
    std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return unexpected(make_error_code(address_errc::missing_port));
    }
    auto port = parse_port(rest.substr(1));
    if (!port) {
      return unexpected(port.error());
    }
    return ipv6(text.substr(1, close - 1), *port);
  }
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return unexpected(make_error_code(address_errc::missing_port));
  }
  if (text.find(':') != colon) {
    // Two or more colons without brackets: an IPv6 literal needs "[...]:port".
    return unexpected(make_error_code(address_errc::invalid_ipv6));
  }
  auto port = parse_port(text.substr(colon + 1));
  if (!port) {
    return unexpected(port.error());
  }
  return ipv4(text.substr(0, colon), *port);
}

bool socket_address::is_abstract() const noexcept {
  const auto* un = reinterpret_cast<const sockaddr_un*>(&m_storage);
  return is_unix() && m_len > offsetof(sockaddr_un, sun_path) && un->sun_path[0] == '\0';
}

std::uint16_t socket_address::port() const noexcept {
  if (family() == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&m_storage)->sin_port);
  }
  if (family() == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&m_storage)->sin6_port);
  }
  return 0;
}

socket_address socket_address::with_port(std::uint16_t port) const noexcept {
  socket_address copy = *this;
  if (family() == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&copy.m_storage)->sin_port = htons(port);
  } else if (family() == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(&copy.m_storage)->sin6_port = htons(port);
  }
  return copy;
}

std::string socket_address::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&m_storage)->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port());
  }
  if (family() == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&m_storage);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    // Built by append: g++ 12 -O3 warns falsely (-Wrestrict) on "literal" + std::string.
    std::string out("[");
    out.append(buf);
    if (in6->sin6_scope_id != 0) {
      out.append("%").append(std::to_string(in6->sin6_scope_id));  // the index: no lookup, parses back
    }
    out.append("]:").append(std::to_string(port()));
    return out;
  }
  if (family() == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&m_storage);
    std::size_t n = m_len > offsetof(sockaddr_un, sun_path) ? m_len - offsetof(sockaddr_un, sun_path) : 0;
    if (n == 0) {
      return "unix:(unnamed)";
    }
    if (un->sun_path[0] == '\0') {
      std::string out("@");
      out.append(un->sun_path + 1, n - 1);
      return out;
    }
    std::string path(un->sun_path, ::strnlen(un->sun_path, n));
    // parse() takes a path as it is only when it starts with '/' or "./".
    return path.starts_with('/') || path.starts_with("./") ? path : "unix:" + path;
  }
  return "(unspecified)";
}

bool operator==(const socket_address& a, const socket_address& b) noexcept {
  return a.m_len == b.m_len && std::memcmp(&a.m_storage, &b.m_storage, a.m_len) == 0;
}

task<result<std::vector<socket_address>>> resolve(std::string host, std::string service, int family,
                                                  std::stop_token token) {
  struct lookup {
    int rc = 0;
    int saved_errno = 0;
    std::vector<socket_address> addresses;
  };
  auto job = [&host, &service, family]() {
    lookup out;
    addrinfo hints{};
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    out.rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
    out.saved_errno = errno;
    for (addrinfo* ai = list; out.rc == 0 && ai != nullptr; ai = ai->ai_next) {
      socket_address a(ai->ai_addr, ai->ai_addrlen);
      if (std::find(out.addresses.begin(), out.addresses.end(), a) == out.addresses.end()) {
        out.addresses.push_back(a);
      }
    }
    if (list != nullptr) {
      ::freeaddrinfo(list);
    }
    return out;
  };
  auto r = co_await spawn_blocking(job, std::move(token));
  if (!r) {
    co_return unexpected(r.error());
  }
  if (r->rc == EAI_SYSTEM) {
    co_return unexpected(std::error_code(r->saved_errno, std::system_category()));
  }
  if (r->rc != 0) {
    co_return unexpected(std::error_code(r->rc, getaddrinfo_category()));
  }
  co_return std::move(r->addresses);
}

}  // namespace corio::ipc
