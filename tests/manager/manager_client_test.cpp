// Tests for ipc/manager_client.hpp: against ipc::manager_server, several tasks sharing one
// proxy while it is released (calls queued behind a blocking call, then a release: each
// finds the proxy's connection or errc::closed, and the reference is dropped once);
// against Python's own SyncManager (every Python 3 found), a '#PROXY' reply (a method in
// method_to_typeid): an error that leaves no object behind on the server; a create
// stopped or timed out before its reply, or stopped in the middle of it, and a create
// whose reply is malformed but names the object (through a front that changes the real
// server's reply): none leaves its object on the server.
#include <catch2/catch.hpp>

#include "../ipc/pythons.hpp"
#include "helpers.hpp"
#include "manager_helpers.hpp"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <stop_token>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include <corio/corio.hpp>
#include <corio/ipc/frame.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/manager_client.hpp>
#include <corio/ipc/manager_queue.hpp>
#include <corio/ipc/manager_server.hpp>
#include <corio/ipc/process/command.hpp>

using corio_test::within;
using namespace std::chrono_literals;
using corio::task;
using corio::ipc::manager_client;
using corio::ipc::manager_reply;
using corio::ipc::manager_server;
using corio::ipc::socket_address;
namespace pickle = corio::ipc::pickle;

namespace {

// A server on a free loopback port with one typeid, Shared: always the same queue.
struct shared_server {
  std::shared_ptr<corio::ipc::managed_queue> shared = std::make_shared<corio::ipc::managed_queue>();
  manager_server server = corio_test::bind_loopback_server();

  shared_server() { server.register_object("Shared", shared); }
};

// Runs body(server, client) with the server serving, on `workers` workers; stops it after.
void serve(shared_server& s, std::function<task<void>(shared_server&, manager_client&)> body, unsigned workers) {
  corio_test::serve_with_client(s, std::move(body), workers);
}

}  // namespace

TEST_CASE("manager_client: a call queued on a proxy that another task releases fails with closed or runs first",
          "[manager]") {
  shared_server s;
  // One worker: the tasks interleave only where they wait, in the order they start.
  serve(
      s,
      [](shared_server& s, manager_client& c) -> task<void> {
        auto p = co_await c.create("Shared");
        REQUIRE(p);
        auto putter = co_await c.create("Shared");
        REQUIRE(putter);
        // A holds the proxy's lock in a blocking get; B queues behind it, then C releases.
        auto a = corio::spawn(p->call("get"));
        CHECK(co_await within(10s, [&s] { return s.server.stats().waiting == 1; }));
        auto b = corio::spawn(p->call("qsize"));
        (void)co_await corio::sleep_for(20ms);  // B waits for the lock
        auto c_release = corio::spawn(p->release());
        (void)co_await corio::sleep_for(20ms);  // C waits for the lock, behind B
        auto d = corio::spawn(p->call("qsize"));  // D, after the release began: behind C
        (void)co_await corio::sleep_for(20ms);
        auto put = co_await putter->call("put", pickle::value::items_of(pickle::value("job")));
        REQUIRE(put);
        CHECK(put->ok());
        auto got_a = co_await a;
        REQUIRE(got_a);
        CHECK(got_a->value == pickle::value("job"));
        auto got_b = co_await b;  // the lock is FIFO: B ran before the release closed it
        REQUIRE(got_b);
        CHECK(got_b->value == pickle::value(0));
        auto released = co_await c_release;
        CHECK(released);
        auto late = co_await d;
        REQUIRE_FALSE(late);
        CHECK(late.error() == corio::errc::closed);
        auto again = co_await p->release();  // one decref only
        REQUIRE_FALSE(again);
        CHECK(again.error() == corio::errc::closed);
        auto after = co_await p->call("qsize");
        REQUIRE_FALSE(after);
        CHECK(after.error() == corio::errc::closed);
        auto dropped = co_await putter->release();  // (named: as in proxy_reply below)
        INFO((dropped ? std::string("ok") : dropped.error().message()));
        CHECK(dropped);
        CHECK(s.server.number_of_objects() == 0);
      },
      1);
}

namespace {

// Python's own SyncManager server on a free loopback port: prints the port, then serves.
constexpr const char* sync_manager_script = R"(
import sys
from multiprocessing.managers import SyncManager
server = SyncManager(('127.0.0.1', 0), authkey=b'password').get_server()
print(server.address[1], flush=True)
server.serve_forever()
)";

// The first line the child writes to its stdout ("" at its end or after an error).
task<std::string> first_line(corio::ipc::child& c) {
  std::string line;
  std::array<std::byte, 64> buf{};
  while (line.find('\n') == std::string::npos) {
    auto n = co_await c.stdout_pipe()->read(buf);
    if (!n || *n == 0) {
      co_return "";
    }
    line.append(reinterpret_cast<const char*>(buf.data()), *n);
  }
  co_return line.substr(0, line.find('\n'));
}

// dict.__iter__ on a SyncManager answers '#PROXY' (its method_to_typeid): calls it through
// a corio proxy; yields the server's number_of_objects before and after, or -1, -1.
task<std::pair<std::int64_t, std::int64_t>> proxy_reply(std::uint16_t port) {
  auto c = co_await manager_client::connect(socket_address::loopback_v4(port), "password");
  REQUIRE(c);
  auto d = co_await c->create("dict");
  REQUIRE(d);
  auto set = co_await d->call("__setitem__", pickle::value::items_of("a", 1));
  REQUIRE(set);
  CHECK(set->ok());
  auto before = co_await c->request("number_of_objects");
  REQUIRE(before);
  auto it = co_await d->call("__iter__");
  REQUIRE_FALSE(it);  // not supported: the client has no proxy to give for it
  CHECK(it.error() == corio::errc::protocol_error);
  auto len = co_await d->call("__len__");  // the proxy goes on
  REQUIRE(len);
  CHECK(len->value == pickle::value(1));
  auto after = co_await c->request("number_of_objects");
  REQUIRE(after);
  auto released = co_await d->release();  // (named: g++ 12 loses a co_await's temporary in CHECK)
  CHECK(released);
  co_return std::pair{before->value.as<std::int64_t>().value_or(-1), after->value.as<std::int64_t>().value_or(-1)};
}

}  // namespace

TEST_CASE("manager_client: a '#PROXY' reply of Python's SyncManager is an error that leaves no object behind",
          "[manager]") {
  REQUIRE_FALSE(corio_test::pythons().empty());  // Debian always has /usr/bin/python3
  for (const auto& py : corio_test::pythons()) {
    INFO("python " << py.version << " at " << py.path);
    corio::runtime rt(corio_test::workers(2));
    auto counts = rt.block_on([](std::string python) -> task<std::pair<std::int64_t, std::int64_t>> {
      corio::ipc::command cmd(python);
      cmd.arg("-c").arg(sync_manager_script).stdout_mode(corio::ipc::stdio::piped()).kill_on_drop(true);
      auto server = cmd.spawn();
      REQUIRE(server);
      auto port = co_await corio::timeout(first_line(*server), 60s);
      REQUIRE(port);
      REQUIRE_FALSE(port->empty());
      auto counts = co_await corio::timeout(proxy_reply(static_cast<std::uint16_t>(std::stoi(*port))), 60s);
      (void)server->kill();
      (void)co_await server->wait();
      REQUIRE(counts);
      co_return *counts;
    }(py.path));
    CHECK(counts.first == 1);  // the dict
    // The iterator the server made for the '#PROXY' reply was dropped again.
    CHECK(counts.second == 1);
  }
}

// A create() stopped after its request went out and before the reply came: the server
// still makes the object (its factory was already running); the client must drop it. The
// server runs on a runtime of its own, so that its blocking factory cannot hold up the
// client's stop. The factory keeps a weak_ptr to what it made: it expires only when the
// server has dropped the object (its last reference gone).
struct slow_factory {
  std::atomic<bool> started{false};
  std::atomic<bool> done{false};  // `made` is set (release; acquired by the test's loads)
  std::weak_ptr<corio::ipc::managed_queue> made;
};

// With `impatient`, the create's connection has a 150 ms idle_timeout and is not stopped:
// the create ends timed_out while the factory runs.
task<void> create_stopped_in_factory(socket_address addr, slow_factory* f, bool impatient, bool* stopped_in_time,
                                     bool* dropped) {
  corio::ipc::client_options o;
  o.auth.authkey = "password";
  if (impatient) {
    o.connection.idle_timeout = 150ms;
  }
  auto c = co_await manager_client::connect(addr, o);
  REQUIRE(c);
  std::stop_source stop;
  auto made = corio::spawn(c->create("Slow", {}, {}, nullptr, stop.get_token()));
  auto started = co_await within(10s, [f] { return f->started.load(); });
  REQUIRE(started);
  if (!impatient) {
    stop.request_stop();  // the factory is still in its 600 ms
  }
  auto r = co_await made;
  *stopped_in_time = !r && r.error() == (impatient ? std::errc::timed_out : std::errc::operation_canceled);
  auto finished = co_await within(10s, [f] { return f->done.load(std::memory_order_acquire); });
  REQUIRE(finished);
  *dropped = co_await within(5s, [f] { return f->made.expired(); });
}

task<void> join_serving(corio::join_handle<corio::result<void>> serving) {
  auto r = co_await serving;
  REQUIRE(r);
}

TEST_CASE("manager_client: a create stopped or timed out before its reply leaves no object on the server",
          "[manager]") {
  const bool impatient = GENERATE(false, true);
  shared_server s;
  slow_factory f;
  s.server.register_type("Slow", [&f](const corio::ipc::call_args&)
                                     -> std::variant<std::shared_ptr<corio::ipc::managed_object>, corio::ipc::call_outcome> {
    f.started.store(true);
    std::this_thread::sleep_for(600ms);  // blocks the server's worker, not the client's
    auto q = std::make_shared<corio::ipc::managed_queue>();
    f.made = q;
    f.done.store(true, std::memory_order_release);
    return q;
  });
  corio::runtime server_rt(corio_test::workers(1));
  auto serving = server_rt.spawn(s.server.serve());
  REQUIRE(serving);
  bool stopped_in_time = false;
  bool dropped = false;
  {
    corio::runtime client_rt(corio_test::workers(1));
    client_rt.block_on(
        create_stopped_in_factory(s.server.address().value(), &f, impatient, &stopped_in_time, &dropped));
  }
  s.server.stop();
  server_rt.block_on(join_serving(std::move(*serving)));
  CHECK(stopped_in_time);
  CHECK(dropped);
  CHECK(s.server.number_of_objects() == 0);
}

namespace {

// A manager server's front, on a Unix address: it forwards every request of each
// connection it accepts to the server (on a connection of its own) and every reply back,
// except the reply to the first create, which it changes in one of two ways:
// - `rewrite` set: the client gets rewrite(reply) instead (a malformed create reply);
// - `split` set: the client gets the reply (rewritten or not) in two parts: the length
//   prefix with the first half of the pickle; once the client has read all of that (the
//   socket's unread-output count, SIOCOUTQ, is 0: a Unix socket counts what its peer has
//   not yet consumed) `partly_read` is set, and the rest follows only once `send_rest` is.
// The server thus makes and counts the object as usual, and its number_of_objects tells
// whether the client dropped it.
struct front {
  explicit front(socket_address server) : server(server) {}

  socket_address server;
  std::function<pickle::value(pickle::value)> rewrite;
  bool split = false;
  corio::ipc::listener listener = bind();
  // The flags pass between the front's tasks and the test's task on any worker; each is
  // set once and only read otherwise, and orders nothing else: relaxed.
  std::atomic<bool> create_seen{false};
  std::atomic<bool> partly_read{false};
  std::atomic<bool> send_rest{false};
  // Set by the relay instead of a Catch assertion (Catch is not thread-safe, and the relay
  // runs on a worker beside the test's task); checked by serve_fronted at the end.
  std::atomic<bool> relay_failed{false};

  static corio::ipc::listener bind() {
    static std::atomic<int> count{0};  // a name per front (relaxed: only unique)
    auto name = "corio-manager-front-" + std::to_string(::getpid()) + "-" + std::to_string(count.fetch_add(1));
    corio::ipc::listener_options o;
    o.auth.authkey = "password";
    auto l = corio::ipc::listener::bind(socket_address::unix_abstract(name).value(), std::move(o));
    REQUIRE(l);
    return std::move(*l);
  }
  socket_address address() const { return listener.address().value(); }
};

bool is_create(const pickle::value& request) {
  const pickle::value* method = request.at(1);
  return method != nullptr && *method == pickle::value("create");
}

// Bytes the peer of `fd` (a Unix stream socket) has not read yet.
int unread_output(int fd) {
  int n = -1;
  return ::ioctl(fd, SIOCOUTQ, &n) == 0 ? n : -1;
}

// Sends `reply` to the client in two parts (see front::split); false when it could not.
task<bool> send_split(front& f, corio::ipc::connection& conn, const pickle::value& reply, std::stop_token stop) {
  std::vector<std::byte> body;
  if (!pickle::dump(reply, body)) {
    f.relay_failed.store(true, std::memory_order_relaxed);
    co_return false;
  }
  const auto head = corio::ipc::frame::encode_header(body.size());
  std::vector<std::byte> first(head.view().begin(), head.view().end());
  const std::size_t half = body.size() / 2;
  first.insert(first.end(), body.begin(), body.begin() + static_cast<std::ptrdiff_t>(half));
  if (!co_await conn.stream().write_all(first, stop)) {
    co_return false;
  }
  const int fd = conn.stream().fd();
  const bool read = co_await within(10s, [fd] { return unread_output(fd) == 0; });
  if (!read) {
    f.relay_failed.store(true, std::memory_order_relaxed);
    co_return false;
  }
  f.partly_read.store(true, std::memory_order_relaxed);
  const bool go = co_await within(10s, [&f] { return f.send_rest.load(std::memory_order_relaxed); });
  if (!go) {
    f.relay_failed.store(true, std::memory_order_relaxed);
    co_return false;
  }
  // (The client may have closed its end by now: then this fails, as the client chose.)
  auto rest = co_await conn.stream().write_all(std::span<const std::byte>(body).subspan(half), stop);
  co_return rest.has_value();
}

// One connection of the front: forwards until either side ends it.
task<void> front_link(front& f, corio::ipc::connection conn, std::stop_token stop) {
  auto up = co_await corio::ipc::connect(f.server, "password", stop);
  if (!up) {
    co_return;
  }
  for (;;) {
    auto request = co_await conn.recv(stop);
    if (!request) {
      co_return;
    }
    const bool changed = is_create(*request) && !f.create_seen.exchange(true, std::memory_order_relaxed);
    auto sent = co_await up->send(*request, stop);
    if (!sent) {
      co_return;
    }
    auto reply = co_await up->recv(stop);
    if (!reply) {
      co_return;
    }
    if (changed && f.rewrite) {
      *reply = f.rewrite(std::move(*reply));
    }
    if (changed && f.split) {
      auto whole = co_await send_split(f, conn, *reply, stop);
      if (!whole) {
        co_return;
      }
      continue;
    }
    auto back = co_await conn.send(*reply, stop);
    if (!back) {
      co_return;
    }
  }
}

// The server's create reply ('#RETURN', (ident, exposed)) made malformed, naming the
// same object: 0 ('#RETURN', (ident, 5)), exposed not a sequence of names; 1 ('#RETURN',
// (ident, exposed, 'extra')); 2 ('#RETURN', (ident, exposed), 'extra').
pickle::value malformed(const pickle::value& reply, int shape) {
  const pickle::value ident = *reply.at(1)->at(0);
  const pickle::value exposed = *reply.at(1)->at(1);
  switch (shape) {
    case 0:
      return pickle::value::tuple_of("#RETURN", pickle::value::tuple_of(ident, 5));
    case 1:
      return pickle::value::tuple_of("#RETURN", pickle::value::tuple_of(ident, exposed, "extra"));
    default:
      return pickle::value::tuple_of("#RETURN", pickle::value::tuple_of(ident, exposed), "extra");
  }
}

// Runs body(server, front, client) with the server serving and a client connected through
// the front (set up by `setup` before it listens); stops both after.
void serve_fronted(shared_server& s, const std::function<void(front&)>& setup,
                   const std::function<task<void>(shared_server&, front&, manager_client&)>& body) {
  serve(
      s,
      [&setup, &body](shared_server& s, manager_client&) -> task<void> {
        front f(s.server.address().value());
        setup(f);
        std::stop_source stop;
        auto serving = corio::spawn(f.listener.serve(
            [&f](corio::ipc::connection c, std::stop_token st) { return front_link(f, std::move(c), std::move(st)); },
            stop.get_token()));
        auto c = co_await manager_client::connect(f.address(), "password");
        CHECK(c);
        if (c) {
          co_await body(s, f, *c);
        }
        stop.request_stop();
        auto served = co_await serving;
        CHECK(served);
        CHECK_FALSE(f.relay_failed.load(std::memory_order_relaxed));  // the relay's tasks have ended
      },
      2);
}

}  // namespace

// A create reply that names the object but is otherwise malformed: the create fails with
// protocol_error and drops the object the server made (before, it stayed there).
TEST_CASE("manager_client: a malformed create reply that names an object is an error that drops it", "[manager]") {
  const int shape = GENERATE(0, 1, 2);
  INFO("shape " << shape);
  shared_server s;
  serve_fronted(
      s,
      [shape](front& f) { f.rewrite = [shape](const pickle::value& reply) { return malformed(reply, shape); }; },
      [](shared_server& s, front& f, manager_client& c) -> task<void> {
        auto q = co_await c.create("Shared");
        CHECK(f.create_seen.load(std::memory_order_relaxed));
        REQUIRE_FALSE(q);
        CHECK(q.error() == corio::errc::protocol_error);
        // The decref was sent and answered before create returned.
        CHECK(s.server.number_of_objects() == 0);
      });
}

// A create stopped while its reply's bytes arrive (after the first half was read): the
// create returns operation_canceled at once, and the object is still dropped once the
// rest arrives (before, the stop closed the connection in the middle of the reply, and the
// ident in it was lost); also when that reply is malformed but names the object.
TEST_CASE("manager_client: a create stopped in the middle of its reply leaves no object on the server",
          "[manager]") {
  const bool is_malformed = GENERATE(false, true);
  INFO("malformed " << is_malformed);
  shared_server s;
  serve_fronted(
      s,
      [is_malformed](front& f) {
        f.split = true;
        if (is_malformed) {
          f.rewrite = [](const pickle::value& reply) { return malformed(reply, 1); };
        }
      },
      [](shared_server& s, front& f, manager_client& c) -> task<void> {
        std::stop_source stop;
        auto made = corio::spawn(c.create("Shared", {}, {}, nullptr, stop.get_token()));
        auto partly = co_await within(10s, [&f] { return f.partly_read.load(std::memory_order_relaxed); });
        REQUIRE(partly);
        stop.request_stop();
        auto r = co_await made;
        REQUIRE_FALSE(r);
        CHECK(r.error() == std::errc::operation_canceled);
        CHECK(s.server.number_of_objects() == 1);  // the rest of the reply is held back
        f.send_rest.store(true, std::memory_order_relaxed);
        auto none = co_await within(5s, [&s] { return s.server.number_of_objects() == 0; });
        CHECK(none);
      });
}
