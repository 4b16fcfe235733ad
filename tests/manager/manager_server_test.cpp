// Tests for ipc/manager_server.hpp, ipc/manager_queue.hpp, ipc/manager_object.hpp and
// ipc/manager_client.hpp: the managers protocol (create, calls, reference counts), its
// errors for bad input (wrong key, unknown typeid/ident/method, methods outside exposed,
// wrong arguments, forbidden classes, a throwing method), queue semantics, and the faults:
// a client that leaves while blocked in get, a server stopped with clients waiting, a
// connection that never sends, many clients at once, 2,000 clients waiting at once; the
// server requests shutdown, get_methods and debug_info, a reply that cannot be pickled; a
// reply far larger than its request (Python's client, every Python 3 found), one above a
// send limit set lower, and a call that waits longer than the connection's idle_timeout
// (an idle_timeout under a millisecond is refused; the wait does not wake per timeout; a
// request that does not decode while it waits is answered with the decoder's reason);
// the client's cleanup: a create or release stopped half-way still drops its reference,
// and a call ended by idle_timeout leaves no reply to answer the next call; stats()'s
// connections: a held connection in use, the next one queued at the limit.
#include <catch2/catch.hpp>

#include "../ipc/pythons.hpp"
#include "helpers.hpp"
#include "manager_helpers.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <chrono>
#include <functional>
#include <span>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include <corio/corio.hpp>
#include <corio/ipc/client.hpp>
#include <corio/ipc/manager_client.hpp>
#include <corio/ipc/manager_queue.hpp>
#include <corio/ipc/manager_server.hpp>
#include <corio/ipc/process/command.hpp>
#include <corio/ipc/tcp.hpp>

using corio_test::within;
using namespace std::chrono_literals;
using corio::task;
using corio::ipc::call_args;
using corio::ipc::call_outcome;
using corio::ipc::managed_object;
using corio::ipc::managed_queue;
using corio::ipc::manager_client;
using corio::ipc::manager_options;
using corio::ipc::manager_proxy;
using corio::ipc::manager_reply;
using corio::ipc::manager_server;
using corio::ipc::socket_address;
namespace pickle = corio::ipc::pickle;
using items = pickle::value::items_type;

namespace {

using made = std::variant<std::shared_ptr<managed_object>, call_outcome>;

// A server on a free loopback port with the typeids the tests use:
//   Queue(maxsize=0)  a new managed_queue per create
//   Shared            always the same queue (`shared`)
//   Echo              echo(x) -> x, boom() throws, deep() -> a list nested deeper than
//                     pickling allows
struct fixture {
  std::shared_ptr<managed_queue> shared = std::make_shared<managed_queue>();
  manager_server server;

  explicit fixture(manager_options o = {}) : server(corio_test::bind_loopback_server(std::move(o))) {
    server.register_type("Queue", [](const call_args& a) -> made {
      auto b = a.bind("Queue", {{"maxsize", pickle::value(0)}});
      if (auto* e = std::get_if<call_outcome>(&b)) {
        return std::move(*e);
      }
      const pickle::value& size = std::get<std::vector<pickle::value>>(b)[0];
      if (size == pickle::value("empty")) {  // an exception whose str() is empty
        return call_outcome::raise("ValueError", "");
      }
      if (size == pickle::value("key")) {  // KeyError(''): str() gives repr(''), "''"
        return call_outcome::raise("KeyError", "");
      }
      auto n = size.as<std::size_t>();
      if (!n) {
        return call_outcome::raise("TypeError", "maxsize must be a non-negative int");
      }
      return std::make_shared<managed_queue>(*n);
    });
    server.register_object("Shared", shared);
    server.register_type("Echo", [](const call_args&) -> made {
      auto o = std::make_shared<corio::ipc::exposed_object>("Echo");
      o->def("echo", [](const call_args& a) {
        auto b = a.bind("echo", {{"x", std::nullopt}});
        if (auto* e = std::get_if<call_outcome>(&b)) {
          return std::move(*e);
        }
        return call_outcome::returned(std::get<std::vector<pickle::value>>(b)[0]);
      });
      o->def("boom", [](const call_args&) -> call_outcome { throw std::runtime_error("the job failed"); });
      o->def("deep", [](const call_args&) {
        pickle::value v = pickle::value::list_of(1);
        for (int i = 0; i < 1100; ++i) {  // dump_options::max_depth is 1000
          v = pickle::value::list_of(std::move(v));
        }
        return call_outcome::returned(std::move(v));
      });
      return o;
    });
  }

  socket_address address() const { return server.address().value(); }
};

// Runs body(fixture, client) with the server serving; stops it afterwards.
void run(fixture& f, std::function<task<void>(fixture&, manager_client&)> body, unsigned workers = 2) {
  corio_test::serve_with_client(f, std::move(body), workers);
}

std::string text(const manager_reply& r) { return r.value.is_str() ? *r.value.if_str() : r.value.repr(); }

// The message of an exception object (its first constructor argument).
std::string message(const manager_reply& r) {
  const pickle::object* o = r.value.if_object();
  if (o == nullptr || o->args.empty() || !o->args[0].is_str()) {
    return "";
  }
  return *o->args[0].if_str();
}

task<void> until(std::function<bool()> condition) {
  while (!condition()) {
    (void)co_await corio::sleep_for(1ms);
  }
}

// One of many clients: create, put, get, release; counts a full success in `ok`.
task<void> one_client(manager_client c, int i, std::atomic<int>& ok) {
  auto q = co_await c.create("Queue");
  if (!q) {
    co_return;
  }
  auto put = co_await q->call("put", pickle::value::items_of(i));
  auto got = co_await q->call("get");
  auto released = co_await q->release();  // (not inside the &&: g++ 12 fails on a co_await there)
  if (put && put->ok() && got && got->value == pickle::value(i) && released) {
    ok.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after every client was joined
  }
}

}  // namespace

TEST_CASE("manager_server: create gives (ident, exposed), calls reach the object, reference counts drop it at zero",
          "[manager]") {
  fixture f;
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto q = co_await c.create("Queue");
    REQUIRE(q);
    CHECK(q->exposed() == std::vector<std::string>{"empty", "full", "get", "get_nowait", "put", "put_nowait", "qsize"});
    CHECK(f.server.number_of_objects() == 1);
    auto put = co_await q->call("put", pickle::value::items_of(pickle::value("job")));
    REQUIRE(put);
    CHECK(put->ok());
    auto size = co_await q->call("qsize");
    REQUIRE(size);
    CHECK(size->value == pickle::value(1));
    auto got = co_await q->call("get");
    REQUIRE(got);
    CHECK(got->value == pickle::value("job"));
    // Another reference (Python's incref for a second proxy), then both dropped.
    auto inc = co_await c.request("incref", pickle::value::items_of(pickle::value(q->ident())));
    REQUIRE(inc);
    CHECK(inc->ok());
    auto dec = co_await c.request("decref", pickle::value::items_of(pickle::value(q->ident())));
    REQUIRE(dec);
    CHECK(dec->ok());
    CHECK(f.server.number_of_objects() == 1);
    std::string ident = q->ident();
    co_await corio_test::require_released(*q);
    CHECK(f.server.number_of_objects() == 0);
    auto again = co_await c.request("decref", pickle::value::items_of(pickle::value(ident)));
    REQUIRE(again);
    CHECK(again->what == manager_reply::kind::traceback);
    CHECK(text(*again).find("KeyError") != std::string::npos);
    auto n = co_await c.request("number_of_objects");
    REQUIRE(n);
    CHECK(n->value == pickle::value(0));
  });
}

TEST_CASE("manager_server: the same object created twice has one ident and two references", "[manager]") {
  fixture f;
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto a = co_await c.create("Shared");
    auto b = co_await c.create("Shared");
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->ident() == b->ident());
    co_await corio_test::require_released(*a);
    CHECK(f.server.number_of_objects() == 1);
    auto put = co_await b->call("put_nowait", pickle::value::items_of(pickle::value(7)));
    REQUIRE(put);
    CHECK(put->ok());
    CHECK(f.shared->try_get().value() == pickle::value(7));
    co_await corio_test::require_released(*b);
    CHECK(f.server.number_of_objects() == 0);
  });
}

TEST_CASE("manager_server: a wrong authkey is refused and the server goes on", "[manager]") {
  fixture f;
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto wrong = co_await manager_client::connect(f.address(), "not the password");
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error() == corio::errc::authentication_failed);
    auto ok = co_await c.request("dummy");
    REQUIRE(ok);
    CHECK(ok->ok());
  });
}

TEST_CASE("manager_server: an unknown typeid, request, ident or unexposed method is a traceback, and the "
          "connection goes on",
          "[manager]") {
  fixture f;
  run(f, [](fixture&, manager_client& c) -> task<void> {
    manager_reply refusal;
    auto none = co_await c.create("NoSuchType", items(), pickle::dict(), &refusal);
    REQUIRE_FALSE(none);
    CHECK(none.error() == std::errc::invalid_argument);
    CHECK(refusal.what == manager_reply::kind::traceback);
    CHECK(text(refusal).find("KeyError: 'NoSuchType'") != std::string::npos);

    auto bogus = co_await c.request("os.system", pickle::value::items_of(pickle::value("true")));
    REQUIRE(bogus);
    CHECK(bogus->what == manager_reply::kind::traceback);
    CHECK(text(*bogus).find("unrecognized") != std::string::npos);

    auto q = co_await c.create("Queue");
    REQUIRE(q);
    auto hidden = co_await q->call("__init__");
    REQUIRE(hidden);
    CHECK(hidden->what == manager_reply::kind::traceback);
    CHECK(text(*hidden).find("is not in exposed") != std::string::npos);
    // The same connection still serves (the proxy has only one).
    auto size = co_await q->call("qsize");
    REQUIRE(size);
    CHECK(size->value == pickle::value(0));
    auto repr = co_await q->call("__repr__");
    REQUIRE(repr);
    CHECK(repr->value == pickle::value("<queue.Queue object>"));
    co_await corio_test::require_released(*q);
  });
}

TEST_CASE("manager_server: wrong arguments raise Python's TypeError for that call only", "[manager]") {
  fixture f;
  run(f, [](fixture&, manager_client& c) -> task<void> {
    auto q = co_await c.create("Queue");
    REQUIRE(q);
    auto none = co_await q->call("put");
    REQUIRE(none);
    CHECK(none->raised("builtins", "TypeError"));
    CHECK(message(*none) == "put() missing 1 required positional argument: 'item'");
    auto many = co_await q->call("get", pickle::value::items_of(true, pickle::value(), 3));
    REQUIRE(many);
    CHECK(many->raised("builtins", "TypeError"));
    CHECK(message(*many) == "get() takes from 0 to 2 positional arguments but 3 were given");
    pickle::dict kw;
    kw.insert_or_assign("blocking", false);
    auto unknown = co_await q->call("get", items(), kw);
    REQUIRE(unknown);
    CHECK(message(*unknown) == "get() got an unexpected keyword argument 'blocking'");
    pickle::dict twice;
    twice.insert_or_assign("item", 1);
    auto dup = co_await q->call("put", pickle::value::items_of(2), twice);
    REQUIRE(dup);
    CHECK(message(*dup) == "put() got multiple values for argument 'item'");
    auto bad_create = co_await c.create("Queue", pickle::value::items_of(pickle::value("big")));
    REQUIRE_FALSE(bad_create);
    // As Python's server answers a failed create (its factory's TypeError included): a
    // traceback, so that the client raises RemoteError (an '#ERROR' made it raise TypeError).
    auto raw_create = co_await c.request("create", pickle::value::items_of("Queue", "big"));
    REQUIRE(raw_create);
    CHECK(raw_create->what == manager_reply::kind::traceback);
    CHECK(text(*raw_create).find("\nTypeError: maxsize must be a non-negative int\n") != std::string::npos);
    // Python prints an exception whose str() is empty as its type alone; KeyError's str()
    // is the repr of its key.
    auto empty_message = co_await c.request("create", pickle::value::items_of("Queue", "empty"));
    REQUIRE(empty_message);
    CHECK(empty_message->what == manager_reply::kind::traceback);
    CHECK(text(*empty_message) == "Traceback (most recent call last):\nValueError\n");
    auto key_message = co_await c.request("create", pickle::value::items_of("Queue", "key"));
    REQUIRE(key_message);
    CHECK(text(*key_message) == "Traceback (most recent call last):\nKeyError: ''\n");
    auto fine = co_await q->call("empty");
    REQUIRE(fine);
    CHECK(fine->value == pickle::value(true));
    co_await corio_test::require_released(*q);
  });
}

TEST_CASE("manager_server: a request naming a forbidden class is refused and the connection goes on", "[manager]") {
  fixture f;
  run(f, [](fixture& f, manager_client&) -> task<void> {
    auto conn = co_await corio::ipc::connect(f.address(), "password");
    REQUIRE(conn);
    pickle::value accept =
        pickle::value::tuple_of(pickle::value(), "accept_connection", pickle::value::tuple_of("x"), pickle::dict());
    auto s5 = co_await conn->send(accept);
    REQUIRE(s5);
    auto accepted = co_await conn->recv();
    REQUIRE(accepted);
    // The pickle of os.system itself (protocol 2: GLOBAL 'posix system'), as a hostile
    // client would send inside a request.
    std::string evil = "\x80\x02" "cposix\nsystem\n.";
    auto s6 = co_await conn->send_bytes(std::as_bytes(std::span(evil.data(), evil.size())));
    REQUIRE(s6);
    auto refused = co_await conn->recv();
    REQUIRE(refused);
    const auto* r = refused->if_tuple();
    REQUIRE(r);
    CHECK((*r)[0] == pickle::value("#TRACEBACK"));
    INFO((*r)[1].repr());
    CHECK((*r)[1].if_str()->find("posix.system (not on the allow-list)") != std::string::npos);
    // Still in step: a server request is an unknown ident here, answered as such.
    pickle::value call = pickle::value::tuple_of("0", "qsize", pickle::value::tuple_of(), pickle::dict());
    auto s7 = co_await conn->send(call);
    REQUIRE(s7);
    auto next = co_await conn->recv();
    REQUIRE(next);
    INFO(next->repr());
    CHECK((*next->if_tuple())[1].if_str()->find("KeyError: '0'") != std::string::npos);
  });
}

TEST_CASE("managed_queue: queue.Empty, queue.Full and ValueError as Python raises them; a timed get waits",
          "[manager]") {
  fixture f;
  run(f, [](fixture&, manager_client& c) -> task<void> {
    auto q = co_await c.create("Queue", pickle::value::items_of(1));
    REQUIRE(q);
    auto empty = co_await q->call("get_nowait");
    REQUIRE(empty);
    CHECK(empty->raised("queue", "Empty"));
    auto nonblocking = co_await q->call("get", pickle::value::items_of(false));
    REQUIRE(nonblocking);
    CHECK(nonblocking->raised("queue", "Empty"));
    pickle::dict kw;
    kw.insert_or_assign("timeout", 0.02);
    auto timed = co_await q->call("get", items(), kw);
    REQUIRE(timed);
    CHECK(timed->raised("queue", "Empty"));
    pickle::dict negative;
    negative.insert_or_assign("timeout", -1);
    auto bad = co_await q->call("get", items(), negative);
    REQUIRE(bad);
    CHECK(bad->raised("builtins", "ValueError"));
    CHECK(message(*bad) == "'timeout' must be a non-negative number");
    auto r1 = co_await q->call("put", pickle::value::items_of(1));
    REQUIRE(r1->ok());
    auto full = co_await q->call("put_nowait", pickle::value::items_of(2));
    REQUIRE(full);
    CHECK(full->raised("queue", "Full"));
    auto full_timed = co_await q->call("put", pickle::value::items_of(2, true, 0.02));
    REQUIRE(full_timed);
    CHECK(full_timed->raised("queue", "Full"));
    auto r2 = co_await q->call("full");
    CHECK(r2->value == pickle::value(true));
    // A huge timeout means "no timeout": the get is served by the item already there.
    auto forever = co_await q->call("get", pickle::value::items_of(true, 1e300));
    REQUIRE(forever);
    CHECK(forever->value == pickle::value(1));
    co_await corio_test::require_released(*q);
    // As queue.Queue: an unbounded queue's put never looks at its timeout (-1, or not a
    // number), and a bool timeout is the int it is (False: 0 s, an Empty at once).
    auto unbounded = co_await c.create("Queue");
    REQUIRE(unbounded);
    auto negative_put = co_await unbounded->call("put", pickle::value::items_of(1, true, -1));
    REQUIRE(negative_put);
    CHECK(negative_put->ok());
    auto text_put = co_await unbounded->call("put", pickle::value::items_of(2, true, "a"));
    REQUIRE(text_put);
    CHECK(text_put->ok());
    auto size = co_await unbounded->call("qsize");
    REQUIRE(size);
    CHECK(size->value == pickle::value(2));
    (void)co_await unbounded->call("get_nowait");
    (void)co_await unbounded->call("get_nowait");
    auto bool_timeout = co_await unbounded->call("get", pickle::value::items_of(true, false));
    REQUIRE(bool_timeout);
    CHECK(bool_timeout->raised("queue", "Empty"));
    co_await corio_test::require_released(*unbounded);
  });
}

TEST_CASE("manager_server: a blocking get is served by a later put from another client", "[manager]") {
  fixture f;
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto getter = co_await c.create("Shared");
    auto putter = co_await c.create("Shared");
    REQUIRE(getter);
    REQUIRE(putter);
    auto waiting = corio::spawn(getter->call("get"));
    co_await until([&f] { return f.server.stats().waiting == 1; });
    auto r3 = co_await putter->call("put", pickle::value::items_of(pickle::value("late")));
    REQUIRE(r3->ok());
    auto got = co_await waiting;
    REQUIRE(got);
    CHECK(got->value == pickle::value("late"));
    co_await corio_test::require_released(*getter);
    co_await corio_test::require_released(*putter);
  });
}

TEST_CASE("manager_server: a client that leaves while blocked in get takes nothing from the queue", "[manager]") {
  fixture f;
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto leaving = co_await c.create("Shared");
    REQUIRE(leaving);
    std::stop_source leave;
    auto waiting = corio::spawn(leaving->call("get", items(), pickle::dict(), leave.get_token()));
    co_await until([&f] { return f.server.stats().waiting == 1; });
    leave.request_stop();  // closes the proxy's connection, as a killed client's
    auto gone = co_await waiting;
    CHECK_FALSE(gone);
    co_await until([&f] { return f.server.stats().abandoned == 1; });
    auto other = co_await c.create("Shared");
    REQUIRE(other);
    auto r4 = co_await other->call("put", pickle::value::items_of(pickle::value("job")));
    REQUIRE(r4->ok());
    auto got = co_await other->call("get_nowait");
    REQUIRE(got);
    CHECK(got->value == pickle::value("job"));
    co_await corio_test::require_released(*other);
  });
}

TEST_CASE("manager_server: stopping the server answers clients blocked in get with EOFError", "[manager]") {
  fixture f;
  corio::runtime rt(corio_test::workers(2));
  rt.block_on([](fixture& f) -> task<void> {
    auto serving = corio::spawn(f.server.serve());
    auto c = co_await manager_client::connect(f.address(), "password");
    REQUIRE(c);
    std::vector<manager_proxy> proxies;
    std::vector<corio::join_handle<corio::result<manager_reply>>> waits;
    for (int i = 0; i < 3; ++i) {
      auto p = co_await c->create("Shared");
      REQUIRE(p);
      proxies.push_back(std::move(*p));
    }
    for (auto& p : proxies) {
      waits.push_back(corio::spawn(p.call("get")));
    }
    co_await until([&f] { return f.server.stats().waiting == 3; });
    f.server.stop();
    for (auto& w : waits) {
      auto r = co_await w;
      REQUIRE(r);
      CHECK(r->raised("builtins", "EOFError"));
    }
    auto s8 = co_await serving;
    REQUIRE(s8);
    CHECK(f.shared->size() == 0);
  }(f));
}

TEST_CASE("manager_server: a connection that never sends is dropped while others are served", "[manager]") {
  manager_options o;
  o.first_request_timeout = 50ms;
  fixture f(o);
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto silent = co_await corio::ipc::connect(f.address(), "password");  // authenticates, then says nothing
    REQUIRE(silent);
    auto ok = co_await c.request("dummy");
    REQUIRE(ok);
    CHECK(ok->ok());
    auto end = co_await silent->recv();  // the server closes it after first_request_timeout
    REQUIRE_FALSE(end);
    CHECK(end.error() == corio::errc::closed);
  });
}

TEST_CASE("manager_server: a method that throws raises RuntimeError for that call; the object goes on", "[manager]") {
  fixture f;
  run(f, [](fixture&, manager_client& c) -> task<void> {
    auto e = co_await c.create("Echo");
    REQUIRE(e);
    auto boom = co_await e->call("boom");
    REQUIRE(boom);
    CHECK(boom->raised("builtins", "RuntimeError"));
    CHECK(message(*boom) == "the job failed");
    auto echo = co_await e->call("echo", pickle::value::items_of(pickle::value::list_of(1, "two")));
    REQUIRE(echo);
    CHECK(echo->value == pickle::value::list_of(1, "two"));
    co_await corio_test::require_released(*e);
  });
}

TEST_CASE("manager_server: 1,000 clients create, call and release at once", "[manager]") {
  fixture f;
  run(
      f,
      [](fixture& f, manager_client& c) -> task<void> {
        std::atomic<int> ok{0};
        std::vector<corio::join_handle<void>> all;
        for (int i = 0; i < 1000; ++i) {
          all.push_back(corio::spawn(one_client(c, i, ok)));
        }
        for (auto& h : all) {
          co_await h;
        }
        CHECK(ok.load() == 1000);
        CHECK(f.server.number_of_objects() == 0);
      },
      2);
}

TEST_CASE("manager_server: a reply that cannot be pickled is #UNSERIALIZABLE and the proxy goes on", "[manager]") {
  fixture f;
  run(f, [](fixture&, manager_client& c) -> task<void> {
    auto e = co_await c.create("Echo");
    REQUIRE(e);
    auto deep = co_await e->call("deep");
    REQUIRE(deep);
    CHECK(deep->what == manager_reply::kind::unserializable);
    INFO(text(*deep));
    CHECK(text(*deep).find("could not be pickled") != std::string::npos);
    auto echo = co_await e->call("echo", pickle::value::items_of(7));
    REQUIRE(echo);
    CHECK(echo->value == pickle::value(7));
    auto released = co_await e->release();
    REQUIRE(released);
  });
}

TEST_CASE("manager_server: get_methods answers a token's exposed methods; anything else is a traceback",
          "[manager]") {
  fixture f;
  run(f, [](fixture&, manager_client& c) -> task<void> {
    auto q = co_await c.create("Shared");
    REQUIRE(q);
    pickle::object token;  // multiprocessing.managers.Token, as a proxy pickles its _token
    token.module = "multiprocessing.managers";
    token.name = "Token";
    token.new_object = true;
    token.state = pickle::value::tuple_of("Shared", pickle::value::tuple_of("127.0.0.1", 1), q->ident());
    auto methods = co_await c.request("get_methods", pickle::value::items_of(pickle::value(std::move(token))));
    REQUIRE(methods);
    REQUIRE(methods->ok());
    CHECK(methods->value == pickle::value::tuple_of("empty", "full", "get", "get_nowait", "put", "put_nowait", "qsize"));
    auto not_a_token = co_await c.request("get_methods", pickle::value::items_of(q->ident()));
    REQUIRE(not_a_token);
    CHECK(not_a_token->what == manager_reply::kind::traceback);
    CHECK(text(*not_a_token).find("TypeError") != std::string::npos);
    auto released = co_await q->release();
    REQUIRE(released);
  });
}

TEST_CASE("manager_server: debug_info lists each object with its refcount, then the waiting calls", "[manager]") {
  fixture f;
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto q = co_await c.create("Shared");
    REQUIRE(q);
    auto idle = co_await c.request("debug_info");
    REQUIRE(idle);
    REQUIRE(idle->ok());
    std::string listing = text(*idle);
    INFO(listing);
    CHECK(listing.find("  " + q->ident() + ":       refcount=1\n    <queue.Queue object>\n") != std::string::npos);
    CHECK(listing.ends_with("  waiting calls: 0, abandoned: 0"));
    auto waiting = corio::spawn(q->call("get"));
    co_await until([&f] { return f.server.stats().waiting == 1; });
    auto busy = co_await c.request("debug_info");
    REQUIRE(busy);
    CHECK(text(*busy).ends_with("  waiting calls: 1, abandoned: 0"));
    REQUIRE(f.shared->put(pickle::value("served")));
    auto got = co_await waiting;
    REQUIRE(got);
    CHECK(got->value == pickle::value("served"));
    auto released = co_await q->release();
    REQUIRE(released);
  });
}

TEST_CASE("manager_server: debug_info cuts a repr after 75 characters, never inside one", "[manager]") {
  // It cut after 75 bytes: inside a 3-byte character here, and the listing (a str) could
  // not be pickled, so the client got no reply at all.
  fixture f;
  std::string euros;
  for (int i = 0; i < 80; ++i) {
    euros += "\u20ac";
  }
  f.server.register_object("Wide", std::make_shared<corio::ipc::exposed_object>(euros));
  run(f, [](fixture&, manager_client& c) -> task<void> {
    auto w = co_await c.create("Wide");
    REQUIRE(w);
    auto listing = co_await corio::timeout(c.request("debug_info"), 10s);
    REQUIRE(listing);  // (the old code sent no reply: this timed out)
    REQUIRE(listing->ok());
    std::string expected = "<";  // "<" and the first 74 of the 80 euro signs
    for (int i = 0; i < 74; ++i) {
      expected += "\u20ac";
    }
    CHECK(text(*listing).find("    " + expected + "\n") != std::string::npos);
    auto released = co_await w->release();
    REQUIRE(released);
  });
}

TEST_CASE("manager_server: a client's shutdown request ends serve(), unless not allowed or handed to on_shutdown",
          "[manager]") {
  SECTION("allowed (Python's default)") {
    fixture f;
    corio::runtime rt(corio_test::workers(2));
    rt.block_on([](fixture& f) -> task<void> {
      auto serving = corio::spawn(f.server.serve());
      auto c = co_await manager_client::connect(f.address(), "password");
      REQUIRE(c);
      auto bye = co_await c->request("shutdown");
      REQUIRE(bye);
      CHECK(bye->ok());
      auto served = co_await serving;  // ends without anyone calling stop()
      CHECK(served);
    }(f));
  }
  SECTION("refused") {
    manager_options o;
    o.allow_shutdown = false;
    fixture f(o);
    run(f, [](fixture&, manager_client& c) -> task<void> {
      auto bye = co_await c.request("shutdown");
      REQUIRE(bye);
      CHECK(bye->what == manager_reply::kind::traceback);
      CHECK(text(*bye).find("PermissionError") != std::string::npos);
      auto still = co_await c.request("dummy");  // the server goes on
      REQUIRE(still);
      CHECK(still->ok());
    });
  }
  SECTION("handed to on_shutdown") {
    manager_options o;
    std::atomic<int> asked{0};
    o.on_shutdown = [&asked] { asked.fetch_add(1); };
    fixture f(o);
    run(f, [&asked](fixture&, manager_client& c) -> task<void> {
      auto bye = co_await c.request("shutdown");
      REQUIRE(bye);
      CHECK(bye->ok());
      // Called once the reply is sent, perhaps a moment after we read it (bounded wait).
      for (int i = 0; i < 1000 && asked.load() == 0; ++i) {
        (void)co_await corio::sleep_for(10ms);
      }
      CHECK(asked.load() == 1);
      auto still = co_await c.request("dummy");  // serve() goes on: stopping is the owner's
      REQUIRE(still);
      CHECK(still->ok());
    });
  }
}

namespace {

// A byte relay in front of the server, to stop a client at one exact point of its
// exchanges: it forwards every connection it accepts to the server unchanged (the
// handshake included) and, as it accepts connection number `stop_at` (counting from 1),
// requests `stop` before it forwards a byte of it. The client is then inside that
// connection's connect or handshake (it waits for the server's challenge, which only the
// relay can deliver): the stop lands there whatever the timing.
struct relay {
  explicit relay(socket_address target) : target(target) {}

  socket_address address() const { return listener.local_address().value(); }

  corio::ipc::tcp_listener listener = corio::ipc::tcp_listener::bind(socket_address::loopback_v4(0)).value();
  socket_address target;
  std::atomic<int> accepted{0};
  std::atomic<int> stop_at{0};  // 0: never
  std::stop_source stop;
};

// Copies `from` to `to` until either ends, then half-closes `to` (its reader sees the end).
task<void> pump(const corio::ipc::stream_socket& from, const corio::ipc::stream_socket& to, std::stop_token token) {
  std::array<std::byte, 4096> buf{};
  for (;;) {
    auto n = co_await from.read_some(buf, token);
    if (!n || *n == 0) {
      break;
    }
    auto w = co_await to.write_all(std::span<const std::byte>(buf.data(), *n), token);
    if (!w) {
      break;
    }
  }
  (void)to.shutdown(SHUT_WR);
}

task<void> relay_link(corio::ipc::tcp_stream client, socket_address target, std::stop_token token) {
  auto server = co_await corio::ipc::tcp_stream::connect(target, token);
  if (!server) {
    co_return;
  }
  (void)co_await corio::when_all(pump(client, *server, token), pump(*server, client, token));
}

// Accepts and relays until `token` is stopped; returns once every link has ended.
task<void> relay_serve(relay& r, std::stop_token token) {
  std::vector<corio::join_handle<void>> links;
  for (;;) {
    auto c = co_await r.listener.accept(token);
    if (!c) {
      break;
    }
    // relaxed: the counters are only read after the client's call that made this
    // connection returned (which needed the relay's bytes, so it happened after).
    if (r.accepted.fetch_add(1, std::memory_order_relaxed) + 1 == r.stop_at.load(std::memory_order_relaxed)) {
      r.stop.request_stop();
    }
    links.push_back(corio::spawn(relay_link(std::move(*c), r.target, token)));
  }
  for (auto& l : links) {
    co_await l;
  }
}

/// run() with one more client, connected through a relay in front of the server (the
/// relay's connection 1); `body` gets the relay, to stop a later connection.
void run_relayed(fixture& f, const std::function<task<void>(fixture&, relay&, manager_client&)>& body) {
  run(f, [&body](fixture& f, manager_client&) -> task<void> {
    relay r(f.address());
    std::stop_source relay_stop;
    auto relaying = corio::spawn(relay_serve(r, relay_stop.get_token()));
    auto c = co_await manager_client::connect(r.address(), "password");  // connection 1
    CHECK(c);
    if (c) {
      co_await body(f, r, *c);
    }
    relay_stop.request_stop();
    co_await relaying;
  });
}

}  // namespace

TEST_CASE("manager_client: a create stopped during its proxy's connection still drops the server's reference",
          "[manager]") {
  fixture f;
  run_relayed(f, [](fixture& f, relay& r, manager_client& c) -> task<void> {
    // Connection 2 carries create (the server makes the object: reference count 1), 3 the
    // proxy's own (accept_connection): the stop lands on 3, after the create.
    r.stop_at.store(3, std::memory_order_relaxed);
    auto q = co_await c.create("Queue", items(), pickle::dict(), nullptr, r.stop.get_token());
    CHECK_FALSE(q);
    if (!q) {
      CHECK(q.error() == std::errc::operation_canceled);
    }
    // The create's reference was dropped (decref, on connection 4) despite the stop.
    CHECK(r.accepted.load(std::memory_order_relaxed) == 4);
    CHECK(f.server.number_of_objects() == 0);
  });
}

TEST_CASE("manager_client: a release stopped while its decref connects still drops the server's reference",
          "[manager]") {
  fixture f;
  run_relayed(f, [](fixture& f, relay& r, manager_client& c) -> task<void> {
    auto q = co_await c.create("Queue");  // connections 2 and 3
    CHECK(q);
    if (q) {
      CHECK(f.server.number_of_objects() == 1);
      r.stop_at.store(4, std::memory_order_relaxed);  // the decref's connection
      auto released = co_await q->release(r.stop.get_token());
      INFO((released ? std::string("ok") : released.error().message()));
      CHECK(released);  // the decref was sent and answered: the release is done
      CHECK(r.stop.stop_requested());
      CHECK(f.server.number_of_objects() == 0);
    }
  });
}

TEST_CASE("manager_client: a call ended by idle_timeout closes the proxy's connection, so no later call gets its reply",
          "[manager]") {
  fixture f;
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    corio::ipc::client_options o;
    o.auth.authkey = "password";
    o.connection.idle_timeout = 1s;  // ample for create's replies on a loaded machine
    auto impatient = co_await manager_client::connect(f.address(), o);
    REQUIRE(impatient);
    auto getter = co_await impatient->create("Shared");
    REQUIRE(getter);
    auto putter = co_await c.create("Shared");
    REQUIRE(putter);
    auto got = co_await getter->call("get");  // the queue is empty: no reply within 1 s
    REQUIRE_FALSE(got);
    CHECK(got.error() == corio::errc::timed_out);
    // The server still runs that get: had the connection stayed open, its reply would
    // answer the next call. It is closed instead, and the server sees the client leave.
    auto next = co_await getter->call("qsize");
    REQUIRE_FALSE(next);
    CHECK(next.error() == corio::errc::closed);
    CHECK(co_await within(10s, [&f] { return f.server.stats().abandoned == 1; }));
    // So the abandoned get takes nothing: the item stays in the queue.
    auto put = co_await putter->call("put", pickle::value::items_of(pickle::value("job")));
    REQUIRE(put);
    CHECK(put->ok());
    auto size = co_await putter->call("qsize");
    REQUIRE(size);
    CHECK(size->value == pickle::value(1));
    auto job = co_await putter->call("get_nowait");
    REQUIRE(job);
    CHECK(job->value == pickle::value("job"));
    auto released = co_await putter->release();
    REQUIRE(released);
  });
}

namespace {
constexpr int kClients = 2000;

// Raises the soft limit on open files to at least `n` (and the hard one, as root, when it
// is lower); false when that is not allowed.
bool open_files_at_least(rlim_t n) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_cur >= n) {
    return true;
  }
  r.rlim_cur = n;
  r.rlim_max = std::max(r.rlim_max, n);
  return ::setrlimit(RLIMIT_NOFILE, &r) == 0;
}

// One client: a proxy of its own, one blocking get (its value; -1 for a failure), release.
task<std::int64_t> blocked_get(manager_client c) {
  auto p = co_await c.create("Shared");
  if (!p) {
    co_return -1;
  }
  auto got = co_await p->call("get");
  auto released = co_await p->release();
  if (!got || !got->ok() || !released) {
    co_return -1;
  }
  co_return got->value.as<std::int64_t>().value_or(-1);
}
}  // namespace

TEST_CASE("manager_server: 2,000 clients blocked in get at once are each served exactly one put", "[manager]") {
  REQUIRE(open_files_at_least(2 * kClients + 200));  // a connection's two ends, in this process
  fixture f;
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    std::vector<corio::join_handle<std::int64_t>> waits;
    for (int i = 0; i < kClients; ++i) {
      waits.push_back(corio::spawn(blocked_get(c)));
    }
    co_await until([&f] { return f.server.stats().waiting == static_cast<std::uint64_t>(kClients); });
    auto putter = co_await c.create("Shared");
    REQUIRE(putter);
    for (int i = 0; i < kClients; ++i) {
      auto put = co_await putter->call("put", pickle::value::items_of(i));
      REQUIRE(put);
      REQUIRE(put->ok());
    }
    std::vector<std::int64_t> got;
    for (auto& w : waits) {
      got.push_back(co_await w);
    }
    std::sort(got.begin(), got.end());
    std::vector<std::int64_t> wanted(kClients);
    for (int i = 0; i < kClients; ++i) {
      wanted[static_cast<std::size_t>(i)] = i;
    }
    CHECK(got == wanted);
    CHECK(f.shared->size() == 0);
    CHECK(f.server.stats().waiting == 0);
    auto released = co_await putter->release();
    REQUIRE(released);
    CHECK(f.server.number_of_objects() == 0);
  });
}

namespace {

// Python's unmodified manager client: puts a list of eight references to one 1 MB str (its
// pickle memoises the str: about 1 MB on the wire), gets it back (corio's writer has no
// memo: the reply is about 8 MB, above the server's 4 MiB max_message_size); then a
// qsize on the same connection (Python's proxies of one thread share it).
const char* big_reply_script = R"(
import sys
from multiprocessing.managers import BaseManager
class M(BaseManager): pass
M.register('Shared')
m = M(('127.0.0.1', int(sys.argv[1])), authkey=b'password')
m.connect()
q = m.Shared()
big = 'x' * 10**6
q.put([big] * 8)
try:
    got = q.get(True, 60)
    print('got', len(got), all(s == big for s in got))
except Exception as e:
    print('get failed:', type(e).__name__)
print('left', q.qsize())
)";

}  // namespace

TEST_CASE("manager_server: a Python client gets an item whose reply is larger than max_message_size", "[manager]") {
  REQUIRE_FALSE(corio_test::pythons().empty());  // Debian always has /usr/bin/python3
  for (const auto& py : corio_test::pythons()) {
    INFO("python " << py.version << " at " << py.path);
    fixture f;
    run(f, [&py](fixture& f, manager_client&) -> task<void> {
      corio::ipc::command cmd(py.path);
      cmd.arg("-c").arg(big_reply_script).arg(std::to_string(f.address().port()));
      auto out = co_await corio::timeout(cmd.output(), 120s);
      REQUIRE(out);
      INFO(out->err);
      CHECK(out->out == "got 8 True\nleft 0\n");
      CHECK(f.shared->size() == 0);
    });
  }
}

TEST_CASE("manager_server: a call that waits longer than the connection's idle_timeout is answered", "[manager]") {
  manager_options o;
  o.listen.connection.idle_timeout = 1s;  // a silent client's connection is dropped after this
  fixture f(o);
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto q = co_await c.create("Shared");
    REQUIRE(q);
    // get(True, 3): the server owes the reply for several idle timeouts, then queue.Empty.
    auto empty = co_await q->call("get", pickle::value::items_of(true, 3.0));
    REQUIRE(empty);
    CHECK(empty->raised("queue", "Empty"));
    // A blocking get served by a put that comes after more than an idle timeout.
    auto waiting = corio::spawn(q->call("get"));
    co_await until([&f] { return f.server.stats().waiting == 1; });
    (void)co_await corio::sleep_for(2500ms);
    auto putter = co_await c.create("Shared");  // made now: it would idle out during the sleep
    REQUIRE(putter);
    auto put = co_await putter->call("put", pickle::value::items_of(pickle::value("late")));
    REQUIRE(put);
    REQUIRE(put->ok());
    auto got = co_await waiting;
    REQUIRE(got);
    CHECK(got->value == pickle::value("late"));
    CHECK(f.server.stats().abandoned == 0);
    // The proxy's connection is still usable after both waits.
    auto size = co_await q->call("qsize");
    REQUIRE(size);
    CHECK(size->value == pickle::value(0));
  });
}

// An idle_timeout under a millisecond drops a client between two of its requests unless
// the next is already there, and a waiting call's watch of the connection, which waits it
// out again and again, then paused a millisecond each time not to spin: bind() refuses it
// (before, it served, and a waiting call woke a thousand times a second).
TEST_CASE("manager_server: bind refuses an idle_timeout under a millisecond and opens nothing", "[manager]") {
  const std::chrono::nanoseconds idle = GENERATE(0ns, 1ns, 999us, -1s);
  INFO("idle_timeout " << idle.count() << " ns");
  const std::size_t fds_before = corio_test::open_fd_count();
  manager_options o;
  o.listen.connection.idle_timeout = idle;
  auto s = manager_server::bind(socket_address::loopback_v4(0), o);
  REQUIRE_FALSE(s);
  CHECK(s.error() == std::errc::invalid_argument);
  CHECK(corio_test::open_fd_count() == fds_before);
  o.listen.connection.idle_timeout = 1ms;  // the least it takes
  auto least = manager_server::bind(socket_address::loopback_v4(0), o);
  CHECK(least);
}

// The times the runtime's workers slept (each is woken once per sleep).
std::uint64_t sleeps(const corio::runtime& rt) {
  std::uint64_t n = 0;
  for (const auto& w : rt.metrics().workers) {
    n += w.parks;
  }
  return n;
}

// Before, the watch of a waiting call's connection received under idle_timeout: the
// worker woke at every timeout (here 30 times in the 3 s), to receive again.
TEST_CASE("manager_server: a call waiting longer than many idle_timeouts does not wake the server per timeout",
          "[manager]") {
  manager_options o;
  // The proxy's get, its second request (after accept_connection), comes well within it.
  o.listen.connection.idle_timeout = 100ms;
  fixture f(o);
  corio::runtime rt(corio_test::workers(1));
  std::uint64_t woke = 0;
  rt.block_on([](fixture& f, corio::runtime& rt, std::uint64_t& woke) -> task<void> {
    auto serving = corio::spawn(f.server.serve());
    auto client = co_await manager_client::connect(f.address(), "password");
    REQUIRE(client);
    auto q = co_await client->create("Shared");
    REQUIRE(q);
    auto waiting = corio::spawn(q->call("get"));
    co_await until([&f] { return f.server.stats().waiting == 1; });
    const std::uint64_t before = sleeps(rt);
    (void)co_await corio::sleep_for(3s);
    woke = sleeps(rt) - before;
    CHECK(f.server.stats().waiting == 1);  // still waiting: not dropped by idle_timeout
    f.server.stop();
    auto got = co_await waiting;  // the server's EOFError
    REQUIRE(got);
    CHECK(got->raised("builtins", "EOFError"));
    auto r = co_await serving;
    REQUIRE(r);
  }(f, rt, woke));
  CHECK(woke < 10);  // the sleep's own wake-up, and a few of the runtime's own
}

TEST_CASE("manager_server: a reply above a send limit set lower is #UNSERIALIZABLE; the value is dropped and the "
          "proxy goes on",
          "[manager]") {
  manager_options o;
  o.listen.connection.max_send_size = 64 * 1024;
  fixture f(o);
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto q = co_await c.create("Shared");
    REQUIRE(q);
    auto put = co_await q->call("put", pickle::value::items_of(std::string(100000, 'x')));
    REQUIRE(put);
    REQUIRE(put->ok());
    auto got = co_await q->call("get");
    REQUIRE(got);
    CHECK(got->what == manager_reply::kind::unserializable);
    INFO(text(*got));
    CHECK(text(*got).find("send limit of 65536 bytes") != std::string::npos);
    // The value is not put back (every later get would fail the same way).
    CHECK(f.shared->size() == 0);
    auto small = co_await q->call("put", pickle::value::items_of(7));
    REQUIRE(small);
    auto again = co_await q->call("get");
    REQUIRE(again);
    CHECK(again->value == pickle::value(7));
  });
}

// A protocol 4 pickle whose first opcode, 0xff, is none.
constexpr std::array<std::byte, 3> undecodable{std::byte{0x80}, std::byte{0x04}, std::byte{0xff}};

// A request as a manager client sends it: (ident, method, args, {}).
static pickle::value request(pickle::value ident, std::string method, items args) {
  return pickle::value::tuple_of(std::move(ident), pickle::value(std::move(method)),
                                 pickle::value::make_tuple(std::move(args)), pickle::value(pickle::dict()));
}

// While a call waits, watch_peer receives the client's next message; one that does not
// decode is answered, after the call's reply, with the decoder's reason. The watch turns
// the idle timer off and back on with set_idle_timeout: set_options, which it used
// before, makes a new decoder, so the reply named no reason ("UnpicklingError: ").
TEST_CASE("manager_server: a request that does not decode while a call waits is answered with the decoder's reason",
          "[manager]") {
  fixture f;
  run(f, [](fixture& f, manager_client& c) -> task<void> {
    auto q = co_await c.create("Shared");
    REQUIRE(q);
    auto conn = co_await corio::ipc::connect(f.address(), "password");
    REQUIRE(conn);
    auto name = pickle::value::items_of(pickle::value("corio"));
    auto sent = co_await conn->send(request(pickle::value(), "accept_connection", std::move(name)));
    REQUIRE(sent);
    auto accepted = co_await conn->recv();
    REQUIRE(accepted);
    REQUIRE(*accepted == pickle::value::tuple_of(pickle::value("#RETURN"), pickle::value()));
    // get(True, 1.0): the server owes the reply for a second (queue.Empty after it). The
    // message that follows is read by the watch within that second (else by the loop
    // after it, which also names the reason: the test would pass without showing much).
    sent = co_await conn->send(request(pickle::value(q->ident()), "get", pickle::value::items_of(true, 1.0)));
    REQUIRE(sent);
    bool waits = co_await within(10s, [&f] { return f.server.stats().waiting == 1; });
    REQUIRE(waits);
    sent = co_await conn->send_bytes(undecodable);
    REQUIRE(sent);
    auto empty = co_await conn->recv();
    REQUIRE(empty);
    INFO(empty->repr(300));
    const pickle::value* kind = empty->at(0);
    REQUIRE(kind != nullptr);
    CHECK(*kind == pickle::value("#ERROR"));  // queue.Empty
    auto refused = co_await conn->recv();
    REQUIRE(refused);
    INFO(refused->repr(300));
    kind = refused->at(0);
    const pickle::value* tb = refused->at(1);
    REQUIRE(kind != nullptr);
    REQUIRE(tb != nullptr);
    REQUIRE(tb->is_str());
    CHECK(*kind == pickle::value("#TRACEBACK"));
    const std::string& t = *tb->if_str();
    const std::size_t at = t.find("UnpicklingError: ");
    REQUIRE(at != std::string::npos);
    const std::string reason = t.substr(at + 17);
    CHECK(reason.find_first_not_of(" \n") != std::string::npos);  // not empty
    // The connection goes on.
    sent = co_await conn->send(request(pickle::value(q->ident()), "qsize", items()));
    REQUIRE(sent);
    auto size = co_await conn->recv();
    REQUIRE(size);
    CHECK(*size == pickle::value::tuple_of(pickle::value("#RETURN"), 0));
  });
}

TEST_CASE("manager_server: stats().connections shows a held connection and the next one queued at the limit",
          "[manager]") {
  manager_options o;
  o.listen.max_connections = 1;
  fixture f(o);
  struct {
    bool seen = false;
    corio::ipc::listener_stats held, after;
    bool second_ok = false;
  } r;
  run(f, [&r](fixture& f, manager_client&) -> task<void> {
    // An authenticated connection the server keeps (waiting for its first request).
    auto held = co_await corio::ipc::connect(f.address(), "password");
    if (!held) {
      co_return;
    }
    auto second = corio::spawn(manager_client::connect(f.address(), "password"));  // waits for the slot
    r.seen = co_await within(10s, [&f] {
      const auto c = f.server.stats().connections;
      return c.in_use == 1 && c.queued == 1 && c.limit_waits >= 1;
    });
    r.held = f.server.stats().connections;
    held->close();
    r.second_ok = (co_await second).has_value();
    (void)co_await within(10s, [&f] { return f.server.stats().connections.in_use == 0; });
    r.after = f.server.stats().connections;
  });
  REQUIRE(r.seen);
  CHECK(r.held.limit == 1);
  CHECK(r.held.authenticated >= 2);  // run()'s client, then the held one
  CHECK(r.second_ok);
  CHECK(r.after.in_use == 0);
  CHECK(r.after.queued == 0);
  CHECK(r.after.accepted == r.held.accepted + 1);
  CHECK(f.server.stats().connections.limit == 0);  // serve() returned
}
