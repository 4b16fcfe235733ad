// Tests for ipc/manager_client.hpp against ipc::manager_server: several tasks sharing one
// proxy while it is released (calls queued behind a blocking call, then a release: each
// finds the proxy's connection or errc::closed, and the reference is dropped once).
#include <catch2/catch.hpp>

#include "helpers.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <corio/corio.hpp>
#include <corio/ipc/manager_client.hpp>
#include <corio/ipc/manager_queue.hpp>
#include <corio/ipc/manager_server.hpp>

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
  manager_server server = bind();

  shared_server() { server.register_object("Shared", shared); }
  static manager_server bind() {
    corio::ipc::manager_options o;
    o.listen.auth.authkey = "password";
    auto s = manager_server::bind(socket_address::loopback_v4(0), std::move(o));
    REQUIRE(s);
    return std::move(*s);
  }
};

// Runs body(server, client) with the server serving, on `workers` workers; stops it after.
void serve(shared_server& s, std::function<task<void>(shared_server&, manager_client&)> body, unsigned workers) {
  corio::runtime rt(corio_test::workers(workers));
  rt.block_on([](shared_server& s, std::function<task<void>(shared_server&, manager_client&)>& body) -> task<void> {
    auto serving = corio::spawn(s.server.serve());
    auto client = co_await manager_client::connect(s.server.address().value(), "password");
    REQUIRE(client);
    co_await body(s, *client);
    s.server.stop();
    auto r = co_await serving;
    REQUIRE(r);
  }(s, body));
}

// Waits until condition() holds (true) or `limit` passed (false).
task<bool> within(std::chrono::seconds limit, std::function<bool()> condition) {
  auto deadline = corio::clock::now() + limit;
  while (!condition()) {
    if (corio::clock::now() >= deadline) {
      co_return false;
    }
    (void)co_await corio::sleep_for(1ms);
  }
  co_return true;
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
        auto dropped = co_await putter->release();
        INFO((dropped ? std::string("ok") : dropped.error().message()));
        CHECK(dropped);
        CHECK(s.server.number_of_objects() == 0);
      },
      1);
}
