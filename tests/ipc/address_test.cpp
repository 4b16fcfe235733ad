// Tests for ipc/address.hpp: parsing IPv4, IPv6 and Unix addresses with clear errors,
// formatting, and resolve() on the blocking pool.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"

#include <net/if.h>

#include <cstddef>
#include <string>
#include <string_view>

using corio::ipc::address_errc;
using corio::ipc::socket_address;

TEST_CASE("address: IPv4, IPv6 and Unix forms parse and print back", "[ipc][address]") {
  auto v4 = socket_address::parse("127.0.0.1:8080");
  REQUIRE(v4);
  CHECK(v4->family() == AF_INET);
  CHECK(v4->port() == 8080);
  CHECK(v4->to_string() == "127.0.0.1:8080");

  auto v6 = socket_address::parse("[::1]:443");
  REQUIRE(v6);
  CHECK(v6->family() == AF_INET6);
  CHECK(v6->port() == 443);
  CHECK(v6->to_string() == "[::1]:443");

  auto path = socket_address::parse("/tmp/x.sock");
  REQUIRE(path);
  CHECK(path->is_unix());
  CHECK_FALSE(path->is_abstract());
  CHECK(path->to_string() == "/tmp/x.sock");
  CHECK(socket_address::parse("unix:/tmp/x.sock").value() == *path);

  auto abstract = socket_address::parse("@corio-test");
  REQUIRE(abstract);
  CHECK(abstract->is_abstract());
  CHECK(abstract->to_string() == "@corio-test");
  CHECK(socket_address::parse("unix:@corio-test").value() == *abstract);
}

TEST_CASE("address: malformed text gives an error that says what is wrong", "[ipc][address]") {
  CHECK(socket_address::parse("").error() == address_errc::empty);
  CHECK(socket_address::parse("127.0.0.1").error() == address_errc::missing_port);
  CHECK(socket_address::parse("127.0.0.1:").error() == address_errc::invalid_port);
  CHECK(socket_address::parse("127.0.0.1:99999").error() == address_errc::invalid_port);
  CHECK(socket_address::parse("127.0.0.1:8o").error() == address_errc::invalid_port);
  CHECK(socket_address::parse("300.1.2.3:80").error() == address_errc::invalid_ipv4);
  CHECK(socket_address::parse("localhost:80").error() == address_errc::invalid_ipv4);
  CHECK(socket_address::parse("::1:80").error() == address_errc::invalid_ipv6);
  CHECK(socket_address::parse("[::1:80").error() == address_errc::unclosed_bracket);
  CHECK(socket_address::parse("[::g]:80").error() == address_errc::invalid_ipv6);
  CHECK(socket_address::parse("[::1]").error() == address_errc::missing_port);
  CHECK(socket_address::parse("/" + std::string(200, 'a')).error() == address_errc::path_too_long);
  auto e = socket_address::parse("localhost:80").error();
  CHECK(e.category().name() == std::string("corio.address"));
  CHECK(e.message().find("resolve()") != std::string::npos);
}

namespace {
std::error_code error_of(const corio::result<socket_address>& r) { return r ? std::error_code{} : r.error(); }
}  // namespace

TEST_CASE("address: a NUL byte in an IP host or a Unix path is refused, not cut off; an abstract name keeps it",
          "[ipc][address]") {
  using namespace std::literals;
  CHECK(error_of(socket_address::parse("127.0.0.1\0garbage:80"sv)) == address_errc::invalid_ipv4);
  CHECK(error_of(socket_address::parse("[::1\0junk]:80"sv)) == address_errc::invalid_ipv6);
  CHECK(error_of(socket_address::ipv4("127.0.0.1\0"sv, 80)) == address_errc::invalid_ipv4);
  CHECK(error_of(socket_address::ipv6("::1\0"sv, 80)) == address_errc::invalid_ipv6);
  CHECK(error_of(socket_address::parse("/tmp/a\0b"sv)) == address_errc::invalid_path);
  CHECK(error_of(socket_address::parse("unix:a\0b"sv)) == address_errc::invalid_path);
  CHECK(error_of(socket_address::unix_path("/tmp/a\0"sv)) == address_errc::invalid_path);
  auto abstract = socket_address::parse("@a\0b"sv);
  REQUIRE(abstract);
  CHECK(abstract->size() == offsetof(sockaddr_un, sun_path) + 4);  // the leading NUL, 'a', NUL, 'b'
  CHECK(abstract->to_string() == "@a\0b"sv);
}

TEST_CASE("address: to_string parses back to the same address, relative Unix paths and IPv6 scopes included",
          "[ipc][address]") {
  for (std::string_view text : {"unix:relative.sock", "unix:dir/x.sock", "./here.sock", "/abs.sock", "@abstract",
                                "[::1]:80", "[fe80::1%1]:80", "1.2.3.4:5"}) {
    INFO(text);
    auto a = socket_address::parse(text);
    REQUIRE(a);
    auto back = socket_address::parse(a->to_string());
    CHECK(error_of(back) == std::error_code{});
    CHECK((back && *back == *a));
  }
  CHECK(socket_address::parse("unix:relative.sock").value().to_string() == "unix:relative.sock");
  CHECK(socket_address::parse("unix:/abs.sock").value().to_string() == "/abs.sock");

  auto scoped = socket_address::parse("[fe80::1%7]:80");
  REQUIRE(scoped);
  CHECK(reinterpret_cast<const sockaddr_in6*>(scoped->native())->sin6_scope_id == 7);
  CHECK(scoped->to_string() == "[fe80::1%7]:80");
  if (unsigned lo = ::if_nametoindex("lo"); lo != 0) {
    auto named = socket_address::parse("[fe80::1%lo]:80");
    REQUIRE(named);
    CHECK(reinterpret_cast<const sockaddr_in6*>(named->native())->sin6_scope_id == lo);
    CHECK(named->to_string() == "[fe80::1%" + std::to_string(lo) + "]:80");
  }
  CHECK(error_of(socket_address::parse("[fe80::1%no-such-if0]:80")) == address_errc::invalid_ipv6);
  CHECK(error_of(socket_address::parse("[fe80::1%]:80")) == address_errc::invalid_ipv6);
  CHECK(error_of(socket_address::parse("[fe80::1%99999999999]:80")) == address_errc::invalid_ipv6);
}

TEST_CASE("address: resolve finds localhost and reports unknown hosts", "[ipc][address]") {
  corio::runtime rt(corio_test::workers(1));
  auto body = []() -> corio::task<std::string> {
    auto r = co_await corio::ipc::resolve("localhost", "8080", AF_INET);
    if (!r || r->empty()) {
      co_return "localhost: " + (r ? std::string("empty") : r.error().message());
    }
    if ((*r)[0].to_string() != "127.0.0.1:8080") {
      co_return "got " + (*r)[0].to_string();
    }
    auto bad = co_await corio::ipc::resolve("no-such-host.invalid", "80");
    if (bad) {
      co_return "an .invalid name resolved";
    }
    if (bad.error().category() != corio::ipc::getaddrinfo_category() &&
        bad.error().category() != std::system_category()) {
      co_return "wrong category " + std::string(bad.error().category().name());
    }
    co_return "";
  };
  CHECK(rt.block_on(body()).empty());
}
