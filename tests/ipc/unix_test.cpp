// Tests for ipc/unix.hpp: path and abstract listeners, datagrams, socketpair, SCM_RIGHTS
// descriptor passing through IORING_OP_SENDMSG/RECVMSG, credentials, cancellation.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "datagram_helpers.hpp"
#include "helpers.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <stop_token>
#include <string>
#include <vector>

using corio::task;
using corio::ipc::socket_address;
using corio::ipc::unix_datagram;
using corio::ipc::unix_listener;
using corio::ipc::unix_stream;
using corio_test::bytes;
using corio_test::error_when_stopped;
using corio_test::recv_two_datagrams;
using corio_test::wbytes;

namespace {
task<std::string> unix_round_trip(const unix_listener& l, socket_address addr) {
  auto server = corio::spawn([](const unix_listener& ll) -> task<std::string> {
    auto s = co_await ll.accept();
    if (!s) {
      co_return s.error().message();
    }
    std::string buf(5, '\0');
    if (auto r = co_await s->read_exact(wbytes(buf)); !r) {
      co_return r.error().message();
    }
    (void)co_await s->write_all(bytes("reply"));
    co_return buf;
  }(l));
  auto c = co_await unix_stream::connect(addr);
  if (!c) {
    co_return "connect: " + c.error().message();
  }
  (void)co_await c->write_all(bytes("hello"));
  std::string reply(5, '\0');
  (void)co_await c->read_exact(wbytes(reply));
  co_return co_await server + "/" + reply;
}
}  // namespace

TEST_CASE("unix: a stream listener on a path serves a client and removes its file", "[ipc][unix]") {
  corio_test::temp_dir dir;
  std::string path = dir.file("s.sock");
  {
    corio::runtime rt(corio_test::workers(2));
    auto addr = socket_address::unix_path(path).value();
    auto l = unix_listener::bind(addr);
    REQUIRE(l);
    CHECK(::access(path.c_str(), F_OK) == 0);
    CHECK(rt.block_on(unix_round_trip(*l, addr)) == "hello/reply");
    // A second bind on the same path fails clearly.
    CHECK(unix_listener::bind(addr).error() == std::errc::address_in_use);
  }
  CHECK(::access(path.c_str(), F_OK) != 0);
}

TEST_CASE("unix: an abstract name works without a file", "[ipc][unix]") {
  corio::runtime rt(corio_test::workers(2));
  auto addr = socket_address::unix_abstract("corio-test-" + std::to_string(::getpid())).value();
  auto l = unix_listener::bind(addr);
  REQUIRE(l);
  CHECK(l->local_address().value().is_abstract());
  CHECK(rt.block_on(unix_round_trip(*l, addr)) == "hello/reply");
}

TEST_CASE("unix: connecting to a missing path fails with no_such_file_or_directory", "[ipc][unix][fault]") {
  corio::runtime rt(corio_test::workers(1));
  auto body = []() -> task<std::error_code> {
    auto c = co_await unix_stream::connect(socket_address::unix_path("/nonexistent/corio.sock").value());
    co_return c ? std::error_code{} : c.error();
  };
  CHECK(rt.block_on(body()) == std::errc::no_such_file_or_directory);
}

TEST_CASE("unix: datagram sockets keep message boundaries and report the sender", "[ipc][unix]") {
  corio_test::temp_dir dir;
  corio::runtime rt(corio_test::workers(1));
  auto server = unix_datagram::bind(socket_address::unix_path(dir.file("d.sock")).value());
  auto client = unix_datagram::bind(socket_address::unix_path(dir.file("c.sock")).value());
  REQUIRE(server);
  REQUIRE(client);
  auto body = [&]() -> task<std::string> {
    (void)co_await client->send_to(bytes("one"), server->local_address().value());
    (void)co_await client->send_to(bytes("two!"), server->local_address().value());
    std::string out;
    for (int i = 0; i < 2; ++i) {
      std::string buf(16, '\0');
      auto d = co_await server->recv_from(wbytes(buf));
      if (!d) {
        co_return d.error().message();
      }
      out += buf.substr(0, d->size) + "@" + d->from.to_string() + ";";
    }
    co_return out;
  };
  std::string c = dir.file("c.sock");
  CHECK(rt.block_on(body()) == "one@" + c + ";two!@" + c + ";");
}

TEST_CASE("unix: socketpair and datagram_pair are connected both ways", "[ipc][unix]") {
  corio::runtime rt(corio_test::workers(2));
  auto sp = corio::ipc::socketpair();
  auto dp = corio::ipc::datagram_pair();
  REQUIRE(sp);
  REQUIRE(dp);
  auto body = [&]() -> task<std::string> {
    (void)co_await sp->first.write_all(bytes("abc"));
    (void)co_await sp->second.write_all(bytes("xyz"));
    std::string a(3, '\0'), b(3, '\0');
    (void)co_await sp->second.read_exact(wbytes(a));
    (void)co_await sp->first.read_exact(wbytes(b));
    (void)co_await dp->first.send(bytes("m1"));
    (void)co_await dp->first.send(bytes("m22"));
    std::string d1(8, '\0'), d2(8, '\0');
    auto n1 = co_await dp->second.recv(wbytes(d1));
    auto n2 = co_await dp->second.recv(wbytes(d2));
    co_return a + b + d1.substr(0, n1->size) + d2.substr(0, n2->size);
  };
  CHECK(rt.block_on(body()) == "abcxyzm1m22");
  auto cred = sp->first.peer_credentials();
  REQUIRE(cred);
  CHECK(cred->pid == ::getpid());
}

TEST_CASE("unix: a connected datagram recv reports a datagram longer than the buffer as truncated",
          "[ipc][unix]") {
  // recv used to yield only the bytes stored: a cut datagram looked like a short one.
  corio::runtime rt(corio_test::workers(1));
  auto dp = corio::ipc::datagram_pair();
  REQUIRE(dp);
  // The second recv gets the next datagram: the cut one's rest is gone.
  CHECK(rt.block_on(recv_two_datagrams(dp->first, dp->second, "0123456789", "ab", 4)) ==
        "'0123' truncated; 'ab' whole");
}

TEST_CASE("unix: a connected datagram recv of an empty datagram yields size 0, not truncated", "[ipc][unix]") {
  corio::runtime rt(corio_test::workers(1));
  auto dp = corio::ipc::datagram_pair();
  REQUIRE(dp);
  // "x" comes next: the empty one was a datagram of its own.
  CHECK(rt.block_on(recv_two_datagrams(dp->first, dp->second, "", "x", 4)) == "'' whole; 'x' whole");
}

TEST_CASE("unix: a connected datagram recv into an empty buffer reports the datagram truncated", "[ipc][unix]") {
  corio::runtime rt(corio_test::workers(1));
  auto dp = corio::ipc::datagram_pair();
  REQUIRE(dp);
  // The first recv has no buffer: the whole datagram is discarded.
  CHECK(rt.block_on(recv_two_datagrams(dp->first, dp->second, "abc", "de", 0)) == "'' truncated; 'de' whole");
}

TEST_CASE("unix: a stop token cancels a pending connected datagram recv with operation_canceled",
          "[ipc][unix][cancel]") {
  corio::runtime rt(corio_test::workers(2));
  auto dp = corio::ipc::datagram_pair();
  REQUIRE(dp);
  std::string buf(16, '\0');
  auto pending = [&](std::stop_token t) { return dp->second.recv(wbytes(buf), t); };  // nothing is sent
  CHECK(error_when_stopped(rt, pending) == std::errc::operation_canceled);
}

TEST_CASE("unix: writev_all sends more iovecs than IOV_MAX, in order, through partial writes", "[ipc][unix]") {
  // One sendmsg takes at most IOV_MAX (1024) iovecs: 2,500 used to fail with EMSGSIZE.
  // 250,000 bytes also exceed the socket buffer, so some sends stop mid-array.
  corio::runtime rt(corio_test::workers(2));
  auto sp = corio::ipc::socketpair();
  REQUIRE(sp);
  std::string src(250000, '\0');
  for (std::size_t k = 0; k < src.size(); ++k) {
    src[k] = static_cast<char>('a' + (k * 7 + k / 26) % 26);
  }
  std::vector<iovec> iov;
  for (std::size_t at = 0; at < src.size(); at += 100) {
    iov.push_back({src.data() + at, 100});
  }
  REQUIRE(iov.size() == 2500);
  auto body = [&]() -> task<std::string> {
    auto reader = corio::spawn([](const unix_stream& s, std::size_t size) -> task<std::string> {
      std::string got(size, '\0');
      auto r = co_await s.read_exact(wbytes(got));
      co_return r ? got : r.error().message();
    }(sp->second, src.size()));
    auto w = co_await sp->first.writev_all(iov);
    if (!w) {
      sp->first.close();  // the reader then ends instead of waiting for the rest
    }
    std::string got = co_await reader;
    co_return w ? (got == src ? "all in order" : "wrong bytes") : w.error().message();
  };
  CHECK(rt.block_on(body()) == "all in order");
}

TEST_CASE("unix: descriptors passed with SCM_RIGHTS work in the receiver", "[ipc][unix][fd]") {
  std::size_t fds_before = corio_test::open_fd_count();
  {
    corio::runtime rt(corio_test::workers(2));
    auto sp = corio::ipc::socketpair();
    REQUIRE(sp);
    auto body = [&]() -> task<std::string> {
      auto p = corio::ipc::pipe();
      if (!p) {
        co_return "pipe";
      }
      int to_send[2] = {p->writer.fd(), p->reader.fd()};
      auto sent = co_await sp->first.send_fds(bytes("F"), to_send);
      if (!sent || *sent != 1) {
        co_return "send_fds";
      }
      p->writer.close();  // the received copy keeps the pipe open
      std::string tag(1, '\0');
      auto got = co_await sp->second.recv_fds(wbytes(tag), 4);
      if (!got || got->fds.size() != 2 || got->bytes != 1 || tag != "F" || got->truncated_fds) {
        co_return "recv_fds";
      }
      corio::ipc::pipe_writer w(got->fds[0].release());
      (void)co_await w.write_all(bytes("through a passed fd"));
      w.close();
      std::string out(19, '\0');
      auto r = co_await p->reader.read_exact(wbytes(out));
      co_return r ? out : r.error().message();
    };
    CHECK(rt.block_on(body()) == "through a passed fd");
  }
  CHECK(corio_test::open_fd_count() == fds_before);
}

TEST_CASE("unix: extra descriptors beyond max_fds are reported truncated and not leaked", "[ipc][unix][fd]") {
  std::size_t fds_before = corio_test::open_fd_count();
  {
    corio::runtime rt(corio_test::workers(1));
    auto sp = corio::ipc::socketpair();
    REQUIRE(sp);
    auto body = [&]() -> task<bool> {
      int three[3] = {0, 1, 2};
      (void)co_await sp->first.send_fds(bytes("x"), three);
      std::string tag(1, '\0');
      auto got = co_await sp->second.recv_fds(wbytes(tag), 1);
      co_return got && got->truncated_fds && got->fds.size() <= 1;
    };
    CHECK(rt.block_on(body()));
  }
  CHECK(corio_test::open_fd_count() == fds_before);
}

TEST_CASE("unix: a stop token cancels a pending recv_fds", "[ipc][unix][cancel]") {
  corio::runtime rt(corio_test::workers(2));
  auto sp = corio::ipc::socketpair();
  REQUIRE(sp);
  std::string tag(1, '\0');
  auto pending = [&](std::stop_token t) { return sp->second.recv_fds(wbytes(tag), 4, t); };
  CHECK(error_when_stopped(rt, pending) == std::errc::operation_canceled);
}
