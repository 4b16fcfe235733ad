// corio::ipc::socket_address: an IPv4, IPv6 or Unix-domain socket address, parsed from
// text with errors that say what is wrong; corio::ipc::resolve(): name resolution.
//
// Concept: a value type holding a sockaddr_storage and its length. Text forms accepted by
// parse(): "127.0.0.1:8080", "[::1]:8080", "[fe80::1%eth0]:8080" or "[fe80::1%2]:8080"
// (an IPv6 scope: an interface name or index), "unix:/run/x.sock", "unix:relative.sock"
// or any string starting with '/' or "./" (a filesystem path), "@name" or "unix:@name"
// (a Linux abstract name, which may hold NUL bytes; a path or an IP host may not). Host
// names are not looked up by parse() (it never blocks; an interface name in a scope
// costs one if_nametoindex(3) ioctl): use resolve(), which runs getaddrinfo(3) on the
// runtime's blocking pool (runtime/blocking.hpp). to_string() gives text that parse()
// turns back into the same address (a scope as its index), except for a relative path
// that starts with '@', which reads back as an abstract name.
// Errors: parse failures are ipc::address_errc codes (category "corio.address"), e.g.
// "port missing (expected host:port)"; resolve failures are getaddrinfo's EAI_* codes in
// category "corio.getaddrinfo" with gai_strerror's text (EAI_SYSTEM maps to errno).
// Thread-safety: a plain value. Cost: 130 bytes, no allocation (to_string() allocates).
// Cancellation: resolve() can be withdrawn while queued on the blocking pool; a lookup
// that has started runs to completion and its result is discarded.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// Why a socket address could not be parsed.
enum class address_errc {
  empty = 1,        ///< the text is empty
  missing_port,     ///< "host:port" expected, no ':' found
  invalid_port,     ///< the port is not a number in 0..65535
  invalid_ipv4,     ///< not a dotted-quad IPv4 literal (names need resolve())
  invalid_ipv6,     ///< not an IPv6 literal inside [ ] (or an unknown or malformed %scope)
  unclosed_bracket, ///< "[" without "]"
  path_too_long,    ///< a Unix path or abstract name longer than sun_path allows
  not_unix,         ///< a Unix-only operation on another family
  invalid_path,     ///< a Unix path with a NUL byte (the kernel would cut it there)
};

/// The category of address_errc (parse errors of socket_address).
const std::error_category& address_category() noexcept;
/// The category of getaddrinfo's EAI_* codes, as resolve() reports them.
const std::error_category& getaddrinfo_category() noexcept;

/// Lets an address_errc compare with and convert to std::error_code.
inline std::error_code make_error_code(address_errc e) noexcept {
  return {static_cast<int>(e), address_category()};
}

/// An IPv4, IPv6 or Unix-domain socket address (a sockaddr_storage and its length),
/// parsed from text or copied from the kernel; a plain value.
class socket_address {
 public:
  /// An empty address (family AF_UNSPEC).
  socket_address() noexcept;
  /// Copies a native address (len bytes of `sa`, at most sizeof(sockaddr_storage)).
  socket_address(const sockaddr* sa, socklen_t len) noexcept;

  /// Parses one of the text forms of the header comment.
  [[nodiscard]] static result<socket_address> parse(std::string_view text);
  /// An IPv4 literal and a port.
  [[nodiscard]] static result<socket_address> ipv4(std::string_view host, std::uint16_t port);
  /// An IPv6 literal (without brackets, with an optional "%zone": an interface name or
  /// index, the scope id) and a port.
  [[nodiscard]] static result<socket_address> ipv6(std::string_view host, std::uint16_t port);
  /// A filesystem path for a Unix-domain socket.
  [[nodiscard]] static result<socket_address> unix_path(std::string_view path);
  /// A Linux abstract Unix name (no file; gone when the last socket closes).
  [[nodiscard]] static result<socket_address> unix_abstract(std::string_view name);
  /// 127.0.0.1:port.
  [[nodiscard]] static socket_address loopback_v4(std::uint16_t port) noexcept;
  /// The IPv6 loopback address, [::1]:port.
  [[nodiscard]] static socket_address loopback_v6(std::uint16_t port) noexcept;

  /// AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when empty.
  [[nodiscard]] int family() const noexcept { return m_storage.ss_family; }
  /// An IPv4 or IPv6 address.
  [[nodiscard]] bool is_ip() const noexcept { return family() == AF_INET || family() == AF_INET6; }
  /// A Unix-domain address (path, abstract name or unnamed).
  [[nodiscard]] bool is_unix() const noexcept { return family() == AF_UNIX; }
  /// The Unix name is abstract (starts with a NUL byte).
  [[nodiscard]] bool is_abstract() const noexcept;
  /// The port of an IP address (0 otherwise).
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// A copy with another port (IP addresses only).
  [[nodiscard]] socket_address with_port(std::uint16_t port) const noexcept;
  /// "1.2.3.4:80", "[::1]:80", "[fe80::1%2]:80", "/path", "./path", "unix:relative/path",
  /// "@name", "unix:(unnamed)" or "(unspecified)".
  [[nodiscard]] std::string to_string() const;

  /// The address for system calls (valid for size() bytes).
  [[nodiscard]] const sockaddr* native() const noexcept { return reinterpret_cast<const sockaddr*>(&m_storage); }
  /// The address for calls that fill it (room for capacity() bytes; then set_size()).
  [[nodiscard]] sockaddr* native() noexcept { return reinterpret_cast<sockaddr*>(&m_storage); }
  /// The length of the native address in bytes.
  [[nodiscard]] socklen_t size() const noexcept { return m_len; }
  /// For calls that fill the address: set the length the kernel returned.
  void set_size(socklen_t len) noexcept { m_len = len; }
  /// The room native() offers: sizeof(sockaddr_storage).
  [[nodiscard]] static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }

  friend bool operator==(const socket_address& a, const socket_address& b) noexcept;

 private:
  sockaddr_storage m_storage;
  socklen_t m_len;
};

/// Resolves `host` and `service` (a port number or a name from /etc/services) with
/// getaddrinfo(3) on the blocking pool. `family`: AF_UNSPEC, AF_INET or AF_INET6.
/// Yields the addresses in getaddrinfo's order (stream sockets only, no duplicates).
[[nodiscard]] task<result<std::vector<socket_address>>> resolve(std::string host, std::string service,
                                                                int family = AF_UNSPEC, std::stop_token token = {});

}  // namespace corio::ipc

template <>
struct std::is_error_code_enum<corio::ipc::address_errc> : std::true_type {};
