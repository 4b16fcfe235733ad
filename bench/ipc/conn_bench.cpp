// conn_bench: round trips of small pickled messages over Python's multiprocessing.connection
// protocol, the corio side of bench/ipc/conn.sh (the Python side is conn_peer.py).
//
//   conn_bench server [--port N] [--workers N] [--batch B]
//       An ipc::listener (authkey b'password') serving each connection in its own task:
//       recv → pickle loads → pickle dumps → send, as Python's conn.send(conn.recv()).
//       With --batch B (B >= 1): recv_some (up to B messages already buffered) → send_many
//       of them all, one sendmsg per batch. Prints "port N", then serves until killed.
//   conn_bench client --port N [--connections C] [--depth D] [--seconds S] [--workers N] [--batch 1]
//       C authenticated connections; on each, D messages in flight: send the pickle of
//       'foo1' (encoded per message), receive and decode the reply, send the next. With
//       --batch 1: send_many of D messages, then recv_some (up to D) of the replies and
//       send_many of as many new ones. Prints "round_trips N seconds S rps X".
#include <corio/corio.hpp>
#include <corio/ipc/client.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/pickle.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::connection;
using corio::ipc::socket_address;
namespace pickle = corio::ipc::pickle;

namespace {

struct options {
  bool server = false;
  std::uint16_t port = 0;
  unsigned workers = 1;
  int connections = 1;
  int depth = 1;
  double seconds = 5;
  int batch = 0;  // server: most messages per recv_some; client: nonzero = batched
};

task<void> echo(connection conn, std::stop_token) {
  for (;;) {
    auto v = co_await conn.recv();
    if (!v || !co_await conn.send(*v)) {
      break;
    }
  }
}

// The batched echo: every reply of what one recv_some returned leaves in one sendmsg.
task<void> echo_batched(connection conn, std::size_t max) {
  std::vector<pickle::value> got;
  for (;;) {
    auto n = co_await conn.recv_some(got, max);
    if (!n || !co_await conn.send_many(got)) {
      break;
    }
  }
}

task<int> run_server(const options& o) {
  corio::ipc::listener_options lo;
  lo.auth.authkey = "password";
  auto l = corio::ipc::listener::bind(socket_address::loopback_v4(o.port), lo);
  if (!l) {
    std::fprintf(stderr, "conn_bench: bind: %s\n", l.error().message().c_str());
    co_return 1;
  }
  std::printf("port %u\n", static_cast<unsigned>(l->address()->port()));
  std::fflush(stdout);
  corio::ipc::listener::handler h = echo;
  if (o.batch > 0) {
    h = [max = static_cast<std::size_t>(o.batch)](connection conn, std::stop_token) {
      return echo_batched(std::move(conn), max);
    };
  }
  auto r = co_await l->serve(h);
  co_return r ? 0 : 1;
}

struct tally {
  std::atomic<bool> stop{false};
  std::atomic<long> round_trips{0};
  std::atomic<int> failures{0};
};

task<void> one_client(socket_address addr, int depth, tally& t) {
  auto c = co_await corio::ipc::connect(addr, "password");
  if (!c) {
    t.failures.fetch_add(1);
    co_return;
  }
  const pickle::value msg("foo1");
  int in_flight = 0;
  for (; in_flight < depth; ++in_flight) {
    if (!co_await c->send(msg)) {
      t.failures.fetch_add(1);
      co_return;
    }
  }
  long done = 0;
  // relaxed: a flag polled once per round trip; the count is read after every task ended.
  while (in_flight > 0) {
    if (!co_await c->recv()) {
      t.failures.fetch_add(1);
      break;
    }
    --in_flight;
    ++done;
    if (!t.stop.load(std::memory_order_relaxed)) {
      if (!co_await c->send(msg)) {
        t.failures.fetch_add(1);
        break;
      }
      ++in_flight;
    }
  }
  t.round_trips.fetch_add(done, std::memory_order_relaxed);
}

// D messages in flight, sent and received in batches: each recv_some's replies are
// answered by one send_many of as many new messages.
task<void> one_client_batched(socket_address addr, int depth, tally& t) {
  auto c = co_await corio::ipc::connect(addr, "password");
  if (!c) {
    t.failures.fetch_add(1);
    co_return;
  }
  const std::vector<pickle::value> msgs(static_cast<std::size_t>(depth), pickle::value("foo1"));
  if (!co_await c->send_many(msgs)) {
    t.failures.fetch_add(1);
    co_return;
  }
  std::size_t in_flight = msgs.size();
  long done = 0;
  std::vector<pickle::value> got;
  while (in_flight > 0) {
    auto n = co_await c->recv_some(got, in_flight);
    if (!n) {
      t.failures.fetch_add(1);
      break;
    }
    in_flight -= *n;
    done += static_cast<long>(*n);
    // relaxed: as in one_client.
    if (!t.stop.load(std::memory_order_relaxed)) {
      if (!co_await c->send_many(std::span(msgs).first(*n))) {
        t.failures.fetch_add(1);
        break;
      }
      in_flight += *n;
    }
  }
  t.round_trips.fetch_add(done, std::memory_order_relaxed);
}

task<int> run_client(const options& o) {
  tally t;
  auto addr = socket_address::loopback_v4(o.port);
  std::vector<task<void>> clients;
  for (int i = 0; i < o.connections; ++i) {
    clients.push_back(o.batch > 0 ? one_client_batched(addr, o.depth, t) : one_client(addr, o.depth, t));
  }
  auto timer = [](tally& t, double seconds) -> task<void> {
    (void)co_await corio::sleep_for(std::chrono::duration<double>(seconds));
    t.stop.store(true, std::memory_order_relaxed);
  };
  auto start = std::chrono::steady_clock::now();
  co_await corio::when_all(corio::when_all(std::move(clients)), timer(t, o.seconds));
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  long n = t.round_trips.load();
  std::printf("round_trips %ld seconds %.3f rps %.0f failures %d\n", n, elapsed, static_cast<double>(n) / elapsed,
              t.failures.load());
  co_return t.failures.load() == 0 ? 0 : 1;
}

bool parse(int argc, char** argv, options& o) {
  if (argc < 2) {
    return false;
  }
  if (std::strcmp(argv[1], "server") == 0) {
    o.server = true;
  } else if (std::strcmp(argv[1], "client") != 0) {
    return false;
  }
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    long v = std::strtol(argv[i + 1], nullptr, 10);
    if (k == "--port" && v >= 0 && v <= 65535) {
      o.port = static_cast<std::uint16_t>(v);
    } else if (k == "--workers" && v >= 1 && v <= 64) {
      o.workers = static_cast<unsigned>(v);
    } else if (k == "--connections" && v >= 1 && v <= 100000) {
      o.connections = static_cast<int>(v);
    } else if (k == "--depth" && v >= 1 && v <= 1024) {
      o.depth = static_cast<int>(v);
    } else if (k == "--batch" && v >= 0 && v <= 1024) {
      o.batch = static_cast<int>(v);
    } else if (k == "--seconds") {
      o.seconds = std::strtod(argv[i + 1], nullptr);
    } else {
      return false;
    }
  }
  return o.server || o.port != 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  if (!parse(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: conn_bench server [--port N] [--workers N] [--batch B]\n"
                 "       conn_bench client --port N [--connections C] [--depth D] [--seconds S] [--workers N]"
                 " [--batch 1]\n");
    return 2;
  }
  corio::runtime_config cfg;
  cfg.workers = o.workers;
  corio::runtime rt(cfg);
  return rt.block_on(o.server ? run_server(o) : run_client(o));
}
