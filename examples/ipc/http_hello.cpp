// http_hello: a minimal HTTP/1.1 server answering GET / with "Hello, World!".
// Keep-alive and pipelining (every complete request in a read is answered in one write),
// Connection: close, HTTP/1.0, 404 for other paths, 405 for other methods, 400 for garbage
// (then the connection is closed), a Date header; request bodies (Content-Length) are
// skipped as they arrive, never stored (so a huge body costs no memory); a Content-Length
// that is not a plain decimal number up to 1 GiB (or is repeated) is a 400. Enough for
// curl, wrk and ab.
//   http_hello [--port N] [--workers N]   serve until killed
//   http_hello --self-test                serve on port 0 and check a few raw exchanges
//   http_hello --help
#include "../common/args.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/tcp.hpp>

#include <strings.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::socket_address;
using corio::ipc::tcp_listener;
using corio::ipc::tcp_stream;

namespace {

constexpr std::string_view kBody = "Hello, World!";

// "Date: ..." for the current second, cached per thread.
std::string_view date_header() {
  thread_local std::time_t cached = 0;
  thread_local char buf[64];
  thread_local std::size_t len = 0;
  std::time_t now = std::time(nullptr);
  if (now != cached) {
    cached = now;
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    len = std::strftime(buf, sizeof buf, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  }
  return {buf, len};
}

void append_response(std::string& out, std::string_view status, std::string_view body, bool close) {
  out += "HTTP/1.1 ";
  out += status;
  out += "\r\nServer: corio\r\nContent-Type: text/plain\r\n";
  out += date_header();
  out += "Content-Length: ";
  out += std::to_string(body.size());
  out += close ? "\r\nConnection: close\r\n\r\n" : "\r\n\r\n";
  out += body;
}

bool header_is(std::string_view line, std::string_view name, std::string_view* value) {
  if (line.size() <= name.size() || ::strncasecmp(line.data(), name.data(), name.size()) != 0 ||
      line[name.size()] != ':') {
    return false;
  }
  std::string_view v = line.substr(name.size() + 1);
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
    v.remove_prefix(1);
  }
  *value = v;
  return true;
}

enum class parse { incomplete, ok, bad };

constexpr std::uint64_t kMaxBody = 1ull << 30;

// A Content-Length value: digits only (no sign, no spaces inside), at most kMaxBody.
bool parse_length(std::string_view v, std::uint64_t* out) {
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
    v.remove_suffix(1);
  }
  if (v.empty() || v.size() > 10) {
    return false;
  }
  std::uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') {
      return false;
    }
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (n > kMaxBody) {
    return false;
  }
  *out = n;
  return true;
}

// Parses one request head at the front of `in`; on ok, appends the response and sets
// `used` (the head's bytes) and `body` (the bytes of body that follow, to be skipped).
parse handle_request(std::string_view in, std::string& out, std::size_t& used, std::uint64_t& body, bool& close) {
  std::size_t end = in.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    return in.size() > 16 * 1024 ? parse::bad : parse::incomplete;
  }
  std::string_view head = in.substr(0, end);
  std::size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  std::size_t sp1 = line.find(' ');
  std::size_t sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) {
    return parse::bad;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return parse::bad;
  }
  bool keep_alive = version == "HTTP/1.1";
  std::uint64_t content_length = 0;
  bool has_length = false;
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
  while (!rest.empty()) {
    std::size_t e = rest.find("\r\n");
    std::string_view h = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    std::string_view v;
    if (header_is(h, "Connection", &v)) {
      if (::strncasecmp(v.data(), "close", 5) == 0) {
        keep_alive = false;
      } else if (::strncasecmp(v.data(), "keep-alive", 10) == 0) {
        keep_alive = true;
      }
    } else if (header_is(h, "Content-Length", &v)) {
      if (has_length || !parse_length(v, &content_length)) {
        return parse::bad;
      }
      has_length = true;
    }
  }
  used = end + 4;
  body = content_length;
  close = !keep_alive;
  if (method != "GET" && method != "HEAD") {
    append_response(out, "405 Method Not Allowed", "", close);
  } else if (target != "/") {
    append_response(out, "404 Not Found", "not found\n", close);
  } else {
    append_response(out, "200 OK", method == "HEAD" ? "" : kBody, close);
    if (method == "HEAD") {
      // HEAD: same headers as GET (Content-Length of the body), no body.
      out.replace(out.rfind("Content-Length: 0"), 17, "Content-Length: 13");
    }
  }
  return parse::ok;
}

task<void> serve_connection(tcp_stream s) {
  (void)s.set_nodelay(true);
  std::string in;
  std::string out;
  std::uint64_t skip = 0;  // body bytes still to discard
  std::vector<std::byte> buf(16 * 1024);
  for (;;) {
    auto n = co_await s.read_some(buf);
    if (!n || *n == 0) {
      co_return;
    }
    in.append(reinterpret_cast<const char*>(buf.data()), *n);
    out.clear();
    std::size_t consumed = 0;
    bool close = false;
    for (;;) {
      if (skip > 0) {  // the previous request's body: drop it as it arrives
        std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(skip, in.size() - consumed));
        consumed += take;
        skip -= take;
        if (skip > 0) {
          break;  // all of this read was body; `in` is emptied below
        }
      }
      std::size_t used = 0;
      std::uint64_t body = 0;
      parse p = handle_request(std::string_view(in).substr(consumed), out, used, body, close);
      if (p == parse::bad) {
        append_response(out, "400 Bad Request", "bad request\n", true);
        close = true;
        break;
      }
      if (p == parse::incomplete) {
        break;
      }
      consumed += used;
      skip = body;
      if (close) {
        break;
      }
    }
    in.erase(0, consumed);
    if (!out.empty() && !co_await s.write_all(std::as_bytes(std::span(out)))) {
      co_return;
    }
    if (close) {
      co_return;
    }
  }
}

task<void> accept_loop(const tcp_listener& l) {
  for (;;) {
    auto s = co_await l.accept();
    if (!s) {
      (void)co_await corio::sleep_for(10ms);  // EMFILE: back off, do not spin
      continue;
    }
    (void)corio::spawn(serve_connection(std::move(*s)));  // detached
  }
}

task<std::string> exchange(socket_address addr, std::string request) {
  auto c = co_await tcp_stream::connect(addr, 2s);
  if (!c) {
    co_return "connect failed";
  }
  (void)co_await c->write_all(std::as_bytes(std::span(request)));
  (void)c->shutdown(SHUT_WR);
  std::string all;
  std::array<char, 4096> buf{};
  for (;;) {
    auto n = co_await corio::timeout(c->read_some(std::as_writable_bytes(std::span(buf))), 2s);
    if (!n || *n == 0) {
      break;
    }
    all.append(buf.data(), *n);
  }
  co_return all;
}

std::size_t count(const std::string& s, std::string_view what) {
  std::size_t n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) {
    ++n;
  }
  return n;
}

task<int> self_test(const tcp_listener& l) {
  (void)corio::spawn(accept_loop(l));  // detached; destroyed at shutdown
  auto addr = l.local_address().value();
  int failures = 0;
  auto check = [&](bool ok, const char* what) {
    std::printf("%-48s %s\n", what, ok ? "ok" : "FAILED");
    failures += ok ? 0 : 1;
  };
  std::string one = co_await exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  check(one.starts_with("HTTP/1.1 200 OK\r\n") && one.ends_with("\r\n\r\nHello, World!"), "GET / answers Hello, World!");
  std::string three = co_await exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                                              "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  check(count(three, "HTTP/1.1 200 OK") == 3 && count(three, "Connection: close") == 1,
        "three pipelined requests, the last closes");
  std::string missing = co_await exchange(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
  check(missing.starts_with("HTTP/1.1 404"), "GET /nope is 404");
  std::string post = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n");
  check(post.starts_with("HTTP/1.1 405") && count(post, "200 OK") == 1, "POST is 405, its body skipped");
  std::string garbage = co_await exchange(addr, "\x01\x02 garbage\r\n\r\n");
  check(garbage.starts_with("HTTP/1.1 400"), "garbage gets 400 and a close");
  std::string negative = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
  check(negative.starts_with("HTTP/1.1 400") && count(negative, "HTTP/1.1") == 1, "Content-Length: -1 is 400");
  std::string huge = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n");
  check(huge.starts_with("HTTP/1.1 400"), "an oversized Content-Length is 400");
  std::string junk = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n");
  check(junk.starts_with("HTTP/1.1 400"), "a non-numeric Content-Length is 400");
  std::string big_body(1 << 20, 'x');  // spans many reads: skipped as it arrives
  std::string big = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: " + std::to_string(big_body.size()) +
                                                "\r\n\r\n" + big_body + "GET / HTTP/1.1\r\n\r\n");
  check(big.starts_with("HTTP/1.1 405") && count(big, "200 OK") == 1, "a 1 MiB body is skipped, then GET answered");
  co_return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint16_t port = 8080;
  unsigned workers = 0;
  bool test = false;
  example::args args("http_hello", "a minimal HTTP/1.1 server answering GET / with Hello, World!");
  args.port(port).workers(workers);
  args.flag("--self-test", test, "serve on any free port and check a few raw exchanges");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (test) {
    port = 0;
  }
  corio::runtime rt(example::with_workers(workers));
  auto l = tcp_listener::bind(socket_address::loopback_v4(port));
  if (!l) {
    std::fprintf(stderr, "http_hello: bind: %s\n", l.error().message().c_str());
    return 1;
  }
  if (test) {
    return rt.block_on(self_test(*l));
  }
  std::printf("http_hello listening on %s\n", l->local_address().value().to_string().c_str());
  std::fflush(stdout);
  rt.block_on(accept_loop(*l));
  return 0;
}
