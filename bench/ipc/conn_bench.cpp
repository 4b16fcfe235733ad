// conn_bench: round trips of small pickled messages over Python's multiprocessing.connection
// protocol, the corio side of bench/ipc/conn.sh (the Python side is conn_peer.py).
//
//   conn_bench server [--port N] [--workers N]
//       An ipc::listener (authkey b'password') serving each connection in its own task:
//       recv → pickle loads → pickle dumps → send, as Python's conn.send(conn.recv()).
//       Prints "port N", then serves until killed.
//   conn_bench client --port N [--connections C] [--depth D] [--seconds S] [--workers N]
//       C authenticated connections; on each, D messages in flight: send the pickle of
//       'foo1' (encoded per message), receive and decode the reply, send the next. Prints
//       "round_trips N seconds S rps X".
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
};

task<void> echo(connection conn, std::stop_token) {
  for (;;) {
    auto v = co_await conn.recv();
    if (!v || !co_await conn.send(*v)) {
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
  auto r = co_await l->serve(echo);
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

task<int> run_client(const options& o) {
  tally t;
  auto addr = socket_address::loopback_v4(o.port);
  std::vector<task<void>> clients;
  for (int i = 0; i < o.connections; ++i) {
    clients.push_back(one_client(addr, o.depth, t));
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
                 "usage: conn_bench server [--port N] [--workers N]\n"
                 "       conn_bench client --port N [--connections C] [--depth D] [--seconds S] [--workers N]\n");
    return 2;
  }
  corio::runtime_config cfg;
  cfg.workers = o.workers;
  corio::runtime rt(cfg);
  return rt.block_on(o.server ? run_server(o) : run_client(o));
}
