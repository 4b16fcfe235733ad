// http_hello --self-test (self_test.hpp): the clients it runs (raw exchanges, slow-loris
// clients, connections held open) and the checks, one line printed each.
#include "self_test.hpp"

#include "request.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::socket_address;
using corio::ipc::tcp_listener;
using corio::ipc::tcp_stream;
using steady = std::chrono::steady_clock;

namespace http_hello {
namespace {

// Sends `request`, half-closes, and returns everything the server sends until it closes.
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
    auto n = co_await corio::timeout(c->read_some(std::as_writable_bytes(std::span(buf))), 10s);
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

// Reads until the server closes the connection; true if it did before `limit` (and then
// *closed_at, if given, is when).
task<bool> closed_by_server(const tcp_stream& c, std::chrono::milliseconds limit, std::string* got = nullptr,
                            steady::time_point* closed_at = nullptr) {
  std::array<char, 4096> buf{};
  for (;;) {
    auto n = co_await corio::timeout(c.read_some(std::as_writable_bytes(std::span(buf))), limit);
    if (closed_at != nullptr) {
      *closed_at = steady::now();
    }
    if (!n) {
      co_return n.error() != std::errc::timed_out;  // reset by the server counts as closed
    }
    if (*n == 0) {
      co_return true;
    }
    if (got != nullptr) {
      got->append(buf.data(), *n);
    }
  }
}

std::string ms(steady::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

// A slow-loris client: a request head one byte at a time, `pace` apart, never finished.
// Yields "cut" when the server closed it while it was still sending, at most `cut_within`
// after its first byte; "503" when it was turned away; else what happened.
task<std::string> slow_client(socket_address addr, std::chrono::milliseconds pace, int max_bytes,
                              std::chrono::milliseconds cut_within) {
  auto c = co_await tcp_stream::connect(addr, 2s);
  if (!c) {
    co_return "connect failed";
  }
  std::string got;
  steady::time_point first_byte = steady::now();
  steady::time_point closed_at{};
  auto reader = corio::spawn(closed_by_server(*c, 1000 * pace, &got, &closed_at));
  std::string head = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  for (int i = 0; i < max_bytes && !reader.is_finished(); ++i) {
    char byte = i < static_cast<int>(head.size()) ? head[static_cast<std::size_t>(i)] : 'a';
    if (!co_await c->write_all(std::as_bytes(std::span(&byte, 1)))) {
      break;  // the server closed it: the reader sees that too
    }
    (void)co_await corio::sleep_for(pace);
  }
  bool sending_done = !reader.is_finished();
  (void)c->shutdown(SHUT_RDWR);  // let the reader finish if the server never closed
  bool closed = co_await reader;
  if (got.starts_with("HTTP/1.1 503")) {
    co_return "503";
  }
  if (!closed || sending_done || !got.empty()) {
    co_return "still open after " + std::to_string(max_bytes) + " bytes";
  }
  co_return closed_at - first_byte <= cut_within ? "cut" : "cut only after " + ms(closed_at - first_byte);
}

// Reads one response on a kept-alive connection (it ends with the body of GET /).
task<bool> read_hello(const tcp_stream& c) {
  std::string got;
  std::array<char, 4096> buf{};
  while (!got.ends_with(kBody)) {
    auto n = co_await corio::timeout(c.read_some(std::as_writable_bytes(std::span(buf))), 10s);
    if (!n || *n == 0) {
      co_return false;
    }
    got.append(buf.data(), *n);
  }
  co_return got.starts_with("HTTP/1.1 200");
}

// The connection limit, on a second server whose timeouts never fire during the test:
// with 4 connections served, the 5th is turned away; once one closes, a new one is served.
task<void> check_connection_limit(const std::function<void(bool, const std::string&)>& check) {
  auto l = tcp_listener::bind(socket_address::loopback_v4(0));
  if (!l) {
    check(false, "bind a second listener");
    co_return;
  }
  auto addr = l->local_address().value();
  server strict{.config = {.header_timeout = 1h, .idle_timeout = 1h, .max_connections = 4}};
  std::stop_source stop;
  auto loop = corio::spawn(accept_loop(*l, strict, stop.get_token()));
  std::string req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  std::vector<tcp_stream> held;
  bool served = true;
  for (int i = 0; i < 4; ++i) {
    auto c = co_await tcp_stream::connect(addr, 2s);
    served = served && c && co_await c->write_all(std::as_bytes(std::span(req))) && co_await read_hello(*c);
    if (c) {
      held.push_back(std::move(*c));
    }
  }
  std::string fifth;
  auto c5 = co_await tcp_stream::connect(addr, 2s);
  bool refused = c5 && co_await closed_by_server(*c5, 10s, &fifth) && fifth.starts_with("HTTP/1.1 503");
  check(served && refused, "with 4 connections allowed and served, a 5th gets 503");
  held.erase(held.begin());  // one closes: the server sees its end and frees the place
  bool again = false;
  for (int attempt = 0; attempt < 1000 && !again; ++attempt) {
    std::string r = co_await exchange(addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    again = r.starts_with("HTTP/1.1 200");
    if (!again) {
      (void)co_await corio::sleep_for(5ms);
    }
  }
  check(again, "after one of them closes, a new connection is served");
  // Stopped with three connections open (their timeouts an hour away): the loop aborts
  // them and returns once each has ended (its watchdog joined, its place given back),
  // and each client sees its end.
  stop.request_stop();
  co_await loop;
  bool ended = true;
  for (auto& c : held) {
    bool closed = co_await closed_by_server(c, 10s);
    ended = ended && closed;
  }
  check(ended && held.size() == 3 && strict.connections.load(std::memory_order_relaxed) == 0,
        "stopped with 3 connections open, the loop ends them all and returns");
}

}  // namespace

task<int> self_test(const tcp_listener& l, server& srv) {
  std::stop_source stop;
  auto loop = corio::spawn(accept_loop(l, srv, stop.get_token()));
  auto addr = l.local_address().value();
  int failures = 0;
  std::function<void(bool, const std::string&)> check = [&](bool ok, const std::string& what) {
    std::printf("%-72s %s\n", what.c_str(), ok ? "ok" : "FAILED");
    std::fflush(stdout);
    failures += ok ? 0 : 1;
  };
  // Responses
  std::string one = co_await exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  check(one.starts_with("HTTP/1.1 200 OK\r\n") && one.ends_with("\r\n\r\nHello, World!"), "GET / answers Hello, World!");
  std::string three = co_await exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                                              "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  check(count(three, "HTTP/1.1 200 OK") == 3 && count(three, "Connection: close") == 1,
        "three pipelined requests, the last closes");
  std::string missing = co_await exchange(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
  check(missing.starts_with("HTTP/1.1 404"), "GET /nope is 404");
  std::string head = co_await exchange(addr, "HEAD / HTTP/1.1\r\n\r\nHEAD /nope HTTP/1.1\r\nConnection: close\r\n\r\n");
  check(head.starts_with("HTTP/1.1 200 OK\r\n") && count(head, "Content-Length: 13\r\n") == 1 &&
            count(head, "Content-Length: 10\r\n") == 1 && count(head, "404 Not Found") == 1 &&
            head.ends_with("Connection: close\r\n\r\n") && count(head, "Hello") == 0,
        "HEAD gets GET's headers and no body, for 200 and 404");
  // Bodies
  std::string post = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n");
  check(post.starts_with("HTTP/1.1 405") && count(post, "Allow: GET, HEAD") == 1 && count(post, "200 OK") == 1,
        "POST is 405, its body skipped");
  std::string big_body(1 << 20, 'x');  // spans many reads: skipped as it arrives
  std::string big = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: " + std::to_string(big_body.size()) +
                                                "\r\n\r\n" + big_body + "GET / HTTP/1.1\r\n\r\n");
  check(big.starts_with("HTTP/1.1 405") && count(big, "200 OK") == 1, "a 1 MiB body is skipped, then GET answered");
  std::string chunked = co_await exchange(addr, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                "5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n"
                                                "X-Trailer: t\r\n\r\nGET / HTTP/1.1\r\n\r\n");
  check(chunked.starts_with("HTTP/1.1 405") && count(chunked, "200 OK") == 1,
        "a chunked body (extension, trailer) is skipped, then GET answered");
  // Refusals
  std::string garbage = co_await exchange(addr, "\x01\x02 garbage\r\n\r\n");
  check(garbage.starts_with("HTTP/1.1 400"), "garbage gets 400 and a close");
  std::string negative = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
  check(negative.starts_with("HTTP/1.1 400") && count(negative, "HTTP/1.1") == 1, "Content-Length: -1 is 400");
  std::string huge = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n");
  check(huge.starts_with("HTTP/1.1 400"), "an oversized Content-Length is 400");
  std::string junk = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n");
  check(junk.starts_with("HTTP/1.1 400"), "a non-numeric Content-Length is 400");
  std::string smuggle = co_await exchange(addr, "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                "0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n");
  check(smuggle.starts_with("HTTP/1.1 400") && count(smuggle, "HTTP/1.1 ") == 1,
        "Content-Length with Transfer-Encoding is 400, nothing after it is answered");
  std::string te10 = co_await exchange(addr, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  check(te10.starts_with("HTTP/1.1 400"), "Transfer-Encoding in HTTP/1.0 is 400");
  for (std::string te : {"gzip", "gzip, chunked", "chunked, chunked", "xchunked"}) {
    std::string r = co_await exchange(addr, "POST / HTTP/1.1\r\nTransfer-Encoding: " + te + "\r\n\r\n0\r\n\r\n");
    check(r.starts_with("HTTP/1.1 501") && count(r, "HTTP/1.1 ") == 1, "Transfer-Encoding: " + te + " is 501");
  }
  std::string bad_chunk = co_await exchange(addr, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  check(bad_chunk.starts_with("HTTP/1.1 405") && count(bad_chunk, "HTTP/1.1 400") == 1, "a bad chunk size is 400");
  for (std::string field : {std::string("X-A: b\x01" "c"), std::string("X-A: b\0c", 8), std::string("X-A: b\x7f"),
                            std::string("X-A: a\rb"), std::string("X-A: a\nb"), std::string("Host : x"),
                            std::string(" folded"), std::string("X\x01Y: z"), std::string("no colon")}) {
    std::string r = co_await exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n" + field + "\r\n\r\n");
    std::string shown;
    for (char ch : field) {
      auto c = static_cast<unsigned char>(ch);
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      shown += c < 0x20 || c == 0x7f ? std::string(hex) : std::string(1, ch);
    }
    check(r.starts_with("HTTP/1.1 400") && count(r, "HTTP/1.1 ") == 1, "header field '" + shown + "' is 400");
  }
  std::string long_head = co_await exchange(addr, "GET / HTTP/1.1\r\nX-Big: " + std::string(17 * 1024, 'a') + "\r\n\r\n");
  check(long_head.starts_with("HTTP/1.1 431"), "a 17 KiB request head is 431");
  std::string endless = co_await exchange(addr, "GET / HTTP/1.1\r\nX-Big: " + std::string(64 * 1024, 'a'));
  check(endless.starts_with("HTTP/1.1 431"), "a head that never ends is 431 after 16 KiB");

  // Timeouts (run with short --header-timeout-ms / --idle-timeout-ms, see meson.build)
  const auto header = srv.config.header_timeout;
  const auto idle = srv.config.idle_timeout;
  {
    auto c = co_await tcp_stream::connect(addr, 2s);
    bool ok = c && co_await closed_by_server(*c, 100 * idle);
    check(ok, "a connection that sends nothing is closed after the idle timeout");
  }
  {
    auto c = co_await tcp_stream::connect(addr, 2s);
    std::string req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    std::string got;
    bool ok = c && co_await c->write_all(std::as_bytes(std::span(req))) &&
              co_await closed_by_server(*c, 100 * idle, &got);
    check(ok && got.starts_with("HTTP/1.1 200") && count(got, "HTTP/1.1") == 1,
          "a kept-alive connection is closed after the idle timeout");
  }
  // Each cut by the header timeout must come within about that time of the first byte of
  // the head, also when the idle timeout is longer (a second run, see meson.build): within
  // the header timeout plus at least a second of slack for a loaded machine.
  const auto cut_within = header + std::max<std::chrono::milliseconds>(header, 1s);
  {
    // A byte every header/5: the head can never complete within header_timeout.
    std::string r = co_await slow_client(addr, std::max(header / 5, 1ms), 500, cut_within);
    check(r == "cut", "a slow-loris client is cut off by the header timeout (" + r + ")");
  }
  {
    // One byte of a head, then nothing: cut header_timeout after it, not at the idle deadline.
    auto c = co_await tcp_stream::connect(addr, 2s);
    steady::time_point start = steady::now();
    steady::time_point closed_at = start;
    std::string byte = "G";
    bool ok = c && co_await c->write_all(std::as_bytes(std::span(byte))) &&
              co_await closed_by_server(*c, 100 * (header + idle), nullptr, &closed_at);
    auto took = closed_at - start;
    check(ok && took >= header && took <= cut_within,
          "a head begun and never finished is cut after the header timeout (" + ms(took) + ")");
  }
  {
    // A head finished after the header timeout (and before the idle one) is not answered.
    auto c = co_await tcp_stream::connect(addr, 2s);
    std::string part = "GET / HTTP/1.1\r\nHost: x\r\n";
    std::string end = "\r\n";
    std::string got;
    bool ok = c && co_await c->write_all(std::as_bytes(std::span(part)));
    (void)co_await corio::sleep_for(header + header / 2);
    if (ok) {
      (void)co_await c->write_all(std::as_bytes(std::span(end)));  // fails if already cut
    }
    ok = ok && co_await closed_by_server(*c, 100 * (header + idle), &got);
    check(ok && got.empty(), "a head finished after the header timeout is not answered");
  }
  {
    // More slow clients than connections allowed: each is either turned away with 503
    // or cut off by the header timeout (none holds its place); then a normal client is
    // served.
    const int slow = static_cast<int>(srv.config.max_connections) + 8;
    std::vector<corio::join_handle<std::string>> loris;
    for (int i = 0; i < slow; ++i) {
      loris.push_back(corio::spawn(slow_client(addr, std::max(header / 5, 1ms), 500, cut_within)));
    }
    int cut = 0, turned_away = 0;
    std::string other;  // the first other outcome
    for (auto& h : loris) {
      std::string r = co_await h;
      cut += r == "cut" ? 1 : 0;
      turned_away += r == "503" ? 1 : 0;
      if (r != "cut" && r != "503" && other.empty()) {
        other = ", one " + r;
      }
    }
    check(cut + turned_away == slow, std::to_string(slow) + " slow clients: " + std::to_string(cut) + " cut off, " +
                                         std::to_string(turned_away) + " turned away with 503" + other);
    std::string after = co_await exchange(addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    check(after.starts_with("HTTP/1.1 200"), "after them a normal client is served");
  }
  co_await check_connection_limit(check);
  stop.request_stop();
  co_await loop;
  check(srv.connections.load(std::memory_order_relaxed) == 0, "stopped, the server has given back every place");
  check(watchdogs_outlived() == 0, "no watchdog outlived its connection");
  co_return failures == 0 ? 0 : 1;
}

}  // namespace http_hello
