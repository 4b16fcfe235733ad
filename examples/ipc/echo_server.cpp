// echo_server: a TCP echo server, one task per connection.
//   echo_server [--port N] [--workers N]   serve until Ctrl-C or SIGTERM, then stop accepting and
//                                          exit 0 (port 0: pick one, printed; --help)
//   echo_server --self-test                serve, run 20 clients and one 1 MiB echo against itself, exit
//   echo_server --idle-test N              hold N idle connections (from a forked client process)
//                                          and print the server's memory per idle connection,
//                                          then after they closed; with N >= 1000 exit 1 above
//                                          16 KiB each (below 1000 the ~2 MiB of start-up
//                                          memory dominates: no verdict); needs
//                                          --max-connections >= N, and exits 1 if the hard
//                                          limit on descriptors is below what N need
//   --max-connections N                    serve at most N at once (a task_group bounds them;
//                                          default 100,000, or fewer if the descriptor
//                                          limit allows fewer; 32 in --self-test); more
//                                          wait to be accepted
//   --provided-buffers [--rx-buffer BYTES] [--rx-count N]
//       read through stream_receiver (multishot recv into a provided-buffer ring,
//       ipc/receiver.hpp; default 4 buffers of 16 KiB per connection) instead of
//       read_some into a buffer of its own
// Descriptors: each connection holds one (two in --self-test, whose clients are in the
// same process). At start, with the runtime and the listener open, the soft RLIMIT_NOFILE
// is raised to what --max-connections (or --idle-test) needs: the descriptors open then,
// the connections, and 64 spare ones (the connection accepted past the limit, waiting for
// a place, among them). If the hard limit is lower, the number served is lowered to what
// it allows: silently for the default, with a message on stderr for a --max-connections
// given; the server refuses to start only if not one connection fits
// (example::fit_descriptor_limit, examples/common/descriptor_limit.hpp, as http_hello);
// the number served is printed on the "listening on" line. --idle-test, which forks its
// client before the runtime starts, counts before the fork and again once the runtime has
// started, and exits 1 if N do not fit.
// Memory: a connection's read buffer starts at 2 KiB (not zero-filled) and doubles while
// reads fill it, up to 64 KiB, so an idle connection holds 2 KiB of buffer plus its task
// frame; `--idle-test` measures it.
#include "../common/args.hpp"
#include "../common/descriptor_limit.hpp"
#include "../common/main_guard.hpp"
#include "../common/shutdown.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/pipe.hpp>
#include <corio/ipc/receiver.hpp>
#include <corio/ipc/tcp.hpp>

#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::socket_address;
using corio::ipc::tcp_listener;
using corio::ipc::tcp_stream;

namespace {

constexpr std::size_t kFirstBuffer = 2 * 1024;
constexpr std::size_t kLargestBuffer = 64 * 1024;

// Connections being served, and how many of them have started their first read (for
// --idle-test). relaxed: counters read to decide when to measure; they publish nothing.
std::atomic<int> g_live{0};
std::atomic<int> g_reading{0};
// At most this many connections are served at once (--max-connections; 0 until main()
// sets the default).
std::size_t g_max_connections = 0;

// Counts a connection task in g_live while it exists, and in g_reading once it started
// its first read; destroyed however the task ends (returns, or is aborted in a read).
class connection_count {
 public:
  connection_count() { g_live.fetch_add(1, std::memory_order_relaxed); }
  connection_count(const connection_count&) = delete;
  connection_count& operator=(const connection_count&) = delete;
  ~connection_count() {
    if (m_reading) {
      g_reading.fetch_sub(1, std::memory_order_relaxed);
    }
    g_live.fetch_sub(1, std::memory_order_relaxed);
  }
  void reading() {
    if (!std::exchange(m_reading, true)) {
      g_reading.fetch_add(1, std::memory_order_relaxed);
    }
  }

 private:
  bool m_reading = false;
};

task<void> serve_connection(tcp_stream s) {
  connection_count count;
  (void)s.set_nodelay(true);
  // Small, and not zero-filled: an idle connection costs little; doubled while full reads
  // show that more is coming.
  std::size_t size = kFirstBuffer;
  auto buf = std::make_unique_for_overwrite<std::byte[]>(size);
  for (;;) {
    count.reading();
    auto n = co_await s.read_some(std::span(buf.get(), size));
    if (!n || *n == 0) {
      break;  // error or end of stream: the destructor closes the socket
    }
    if (!co_await s.write_all(std::span(buf.get(), *n))) {
      break;
    }
    if (*n == size && size < kLargestBuffer) {
      size *= 2;
      buf = std::make_unique_for_overwrite<std::byte[]>(size);
    }
  }
}

bool g_provided = false;
corio::ipc::receive_options g_rx{.buffer_size = 16 * 1024, .buffer_count = 4};

task<void> serve_connection_rx(tcp_stream s) {
  connection_count count;
  (void)s.set_nodelay(true);
  auto rx = s.receiver(g_rx);
  if (!rx) {
    std::fprintf(stderr, "echo_server: receiver: %s\n", rx.error().message().c_str());
    co_return;
  }
  for (;;) {
    count.reading();
    auto b = co_await rx->receive();
    if (!b || b->empty()) {
      co_return;  // error or end of stream; rx goes before s (declared after it)
    }
    if (!co_await s.write_all(b->data())) {
      co_return;
    }
    // b goes back to the receiver's ring here.
  }
}

// The connections live in one task group, in its structured scope (with_task_group): a
// finished one is dropped at the next accept (keep_results = false), so the group holds
// only live connections; past --max-connections the loop waits for one to end before
// accepting more; when the loop ends (Ctrl-C, shutdown) it aborts the connections still
// open, and the scope returns only once every one has ended. A connection that threw
// (out of memory, say) is reported on stderr when dropped, and the first is rethrown
// here at the end: serve_until_signal reports it ("serving failed", exit status 1).
task<void> accept_loop(const tcp_listener& l, std::stop_token stop = {}) {
  co_await corio::with_task_group<void>(
      {.max_running = g_max_connections, .keep_results = false},
      [&l, &stop](corio::task_group<void>& connections) -> task<void> {
        for (;;) {
          auto s = co_await l.accept(stop);
          if (!s) {
            if (s.error() == std::errc::operation_canceled) {
              break;
            }
            // EMFILE and friends: back off instead of spinning; existing connections go on.
            (void)co_await corio::sleep_for(10ms);
            continue;
          }
          // Waits while --max-connections are open; `stop` (Ctrl-C) ends that wait too.
          auto body = g_provided ? serve_connection_rx(std::move(*s)) : serve_connection(std::move(*s));
          auto spawned = co_await connections.spawn(stop, std::move(body));
          if (!spawned) {
            break;
          }
        }
        connections.abort_all();
      });
}

task<bool> one_client(socket_address addr, int id) {
  auto c = co_await tcp_stream::connect(addr, 2s);
  if (!c) {
    co_return false;
  }
  std::string msg = "hello from client " + std::to_string(id);
  std::string back(msg.size(), '\0');
  bool ok = co_await c->write_all(std::as_bytes(std::span(msg))) &&
            co_await c->read_exact(std::as_writable_bytes(std::span(back)));
  co_return ok && back == msg;
}

// 1 MiB through the echo in one write while a second task reads it back: the server's
// buffer grows on the way.
task<bool> bulk_client(socket_address addr) {
  auto c = co_await tcp_stream::connect(addr, 2s);
  if (!c) {
    co_return false;
  }
  std::vector<std::byte> out(1 << 20);
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>(i * 31 + i / 4096);
  }
  auto reader = corio::spawn([](const tcp_stream& c, std::size_t n) -> task<std::vector<std::byte>> {
    std::vector<std::byte> back(n);
    auto r = co_await c.read_exact(back);
    co_return r ? back : std::vector<std::byte>();
  }(*c, out.size()));
  bool wrote = static_cast<bool>(co_await c->write_all(out));
  auto back = co_await reader;
  co_return wrote && back == out;
}

task<int> self_test(const tcp_listener& l) {
  auto addr = l.local_address().value();
  auto server = corio::spawn(accept_loop(l));  // destroyed by the runtime's shutdown
  corio::task_group<bool> clients;
  for (int i = 0; i < 20; ++i) {
    (void)co_await clients.spawn(one_client(addr, i));
  }
  std::vector<bool> echoed = co_await clients.join_all();  // in completion order
  auto ok = static_cast<int>(std::count(echoed.begin(), echoed.end(), true));
  bool bulk = co_await bulk_client(addr);
  std::printf("self-test: %d/20 clients echoed correctly; 1 MiB echoed %s\n", ok, bulk ? "intact" : "WRONG");
  co_return ok == 20 && bulk ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// --idle-test: memory per idle connection

long rss_kib() {
  long kib = -1;
  if (std::FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1) {
        break;
      }
    }
    std::fclose(f);
  }
  return kib;
}

// The forked client: on 'c' opens n connections (plain blocking sockets), reports 'k'
// (or 'e'), and on the next byte exits, which closes them all.
[[noreturn]] void idle_clients(int n, socket_address addr, int commands, int reports) {
  char cmd = 0;
  if (::read(commands, &cmd, 1) != 1) {
    ::_exit(1);
  }
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, addr.native(), addr.size()) != 0) {
      std::fprintf(stderr, "idle client %d: %s\n", i, std::strerror(errno));
      (void)!::write(reports, "e", 1);
      ::_exit(1);
    }
    fds.push_back(fd);
  }
  (void)!::write(reports, "k", 1);
  (void)!::read(commands, &cmd, 1);
  ::_exit(0);
}

task<int> measure_idle(const tcp_listener& l, int n, corio::ipc::pipe_writer commands, corio::ipc::pipe_reader reports) {
  (void)corio::spawn(accept_loop(l));  // destroyed by the runtime's shutdown
  const long base = rss_kib();
  (void)co_await commands.write_all(std::as_bytes(std::span("c", 1)));
  char report = 0;
  auto got = co_await reports.read_exact(std::as_writable_bytes(std::span(&report, 1)));
  if (!got || report != 'k') {
    std::fprintf(stderr, "echo_server: the client process could not open %d connections\n", n);
    co_return 1;
  }
  // Every connection waits in a read; one that ended before (a receiver refused, say)
  // would make this wait for ever, so it is bounded.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (g_reading.load(std::memory_order_relaxed) < n) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "echo_server: only %d of %d connections reached a read in 30 s\n",
                   g_reading.load(std::memory_order_relaxed), n);
      (void)co_await commands.write_all(std::as_bytes(std::span("q", 1)));
      co_return 1;
    }
    (void)co_await corio::sleep_for(10ms);
  }
  const long held = rss_kib();
  (void)co_await commands.write_all(std::as_bytes(std::span("q", 1)));
  while (g_live.load(std::memory_order_relaxed) > 0) {  // every connection task has ended
    (void)co_await corio::sleep_for(10ms);
  }
  const long after = rss_kib();
  ::malloc_trim(0);  // glibc: give free heap pages back, to show what stays allocated
  const long trimmed = rss_kib();
  const double per = static_cast<double>(held - base) * 1024.0 / n;
  std::printf("%d idle connections: +%ld KiB resident, %.0f bytes per connection\n", n, held - base, per);
  std::printf("after they closed: +%ld KiB above the start; after malloc_trim(0): +%ld KiB (what stays is mostly "
              "the frame allocator's reserve of free frames, up to 4 MiB per worker)\n",
              after - base, trimmed - base);
  // A 64 KiB buffer per connection would be 65,536 bytes each. Below 1,000 connections the
  // ~2 MiB of start-up memory (first frames, the runtime's threads) outweighs them: no verdict.
  if (n < 1000) {
    std::printf("(no pass/fail verdict below 1000 connections)\n");
    co_return 0;
  }
  co_return per < 16 * 1024 ? 0 : 1;
}

// Whether the descriptor limit lets this process hold n connections beside what it has
// open now (the soft limit raised if needed); if not, says so.
bool idle_connections_fit(int n) {
  if (example::fit_descriptor_limit("echo_server", static_cast<unsigned>(n), 1, example::chosen_by::user) <
      static_cast<unsigned>(n)) {
    std::fprintf(stderr, "echo_server: --idle-test %d needs all %d connections at once\n", n, n);
    return false;
  }
  return true;
}

int idle_test(int n, unsigned workers) {
  auto l = tcp_listener::bind(socket_address::loopback_v4(0), {.backlog = n});
  auto commands = corio::ipc::pipe();
  auto reports = corio::ipc::pipe();
  if (!l || !commands || !reports) {
    std::fprintf(stderr, "echo_server: listener or pipes failed\n");
    return 1;
  }
  // Before the fork, for the client: it holds the other ends under the limit it inherits.
  if (!idle_connections_fit(n)) {
    return 1;
  }
  // Fork while this process has one thread; the child uses plain system calls only.
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    return 1;
  }
  if (pid == 0) {
    // Dies with us: a parent that ends without a word (a crash, kill -9) must not leave
    // the client waiting for a command for ever (it holds its own copies of both pipes).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
      ::_exit(1);  // the server died before the prctl
    }
    idle_clients(n, l->local_address().value(), commands->reader.fd(), reports->writer.fd());
  }
  commands->reader.close();
  reports->writer.close();
  int rc = 1;
  {
    corio::runtime rt(example::with_workers(workers));
    // Again for the server, counted with the runtime's descriptors open now (about one a
    // worker: more than the spare ones with many workers).
    if (idle_connections_fit(n)) {
      rc = rt.block_on(measure_idle(*l, n, std::move(commands->writer), std::move(reports->reader)));
    } else {
      ::kill(pid, SIGKILL);  // the client waits for a command that will not come
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return rc;
}

int example_main(int argc, char** argv) {
  std::uint16_t port = 7000;
  unsigned workers = 0;
  bool test = false;
  example::args args("echo_server", "a TCP echo server, one task per connection");
  args.port(port).workers(workers);
  args.flag("--self-test", test, "serve on any free port, run 20 clients against it, exit");
  args.flag("--provided-buffers", g_provided, "read through stream_receiver (provided-buffer ring)");
  args.option<std::size_t>("--rx-buffer", g_rx.buffer_size, 1, 1 << 20, "BYTES",
                           "receiver buffer size, 1..1048576 (default 16384)");
  args.option<std::size_t>("--rx-count", g_rx.buffer_count, 1, 32768, "N", "receiver buffers, 1..32768 (default 4)");
  args.option<std::size_t>("--max-connections", g_max_connections, 1, 1000000, "N",
                           "serve at most N connections at once, 1..1000000; more wait to be accepted (default "
                           "100000, or as many as the hard limit on open descriptors allows if fewer; 32 in "
                           "--self-test). The soft limit on open descriptors is raised to what N needs; if the "
                           "hard limit allows fewer, N is lowered to fit, with a message");
  int idle = 0;
  args.option("--idle-test", idle, 1, 100000, "N",
              "measure the memory of N idle connections, 1..100000 (exit 1 above 16 KiB each, N >= 1000 only; "
              "raises the soft limit on open descriptors to what N need, exit 1 if the hard limit is lower)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  // Only a number the user gave is worth a message when the descriptor limit lowers it.
  const auto chosen = g_max_connections != 0 ? example::chosen_by::user : example::chosen_by::default_value;
  if (g_max_connections == 0) {
    // The self-test opens 21 connections: it need not raise the descriptor limit for more.
    g_max_connections = test ? 32 : 100000;
  }
  if (idle != 0 && g_max_connections < static_cast<std::size_t>(idle)) {
    // Only --max-connections would reach a read: the test would wait for ever.
    return args.fail("--idle-test N needs --max-connections >= N");
  }
  if (idle != 0) {
    return idle_test(idle, workers);
  }
  if (test) {
    port = 0;
  }
  // Before the runtime: its threads inherit the blocked SIGINT and SIGTERM.
  std::optional<corio::signal_stream> signals;
  if (!test) {
    signals.emplace(example::shutdown_signals("echo_server"));
  }
  corio::runtime rt(example::with_workers(workers));
  auto l = tcp_listener::bind(socket_address::loopback_v4(port));
  if (!l) {
    std::fprintf(stderr, "echo_server: bind: %s\n", l.error().message().c_str());
    return 1;
  }
  // Counted with the runtime and the listener open: their descriptors are part of the need.
  g_max_connections =
      example::fit_descriptor_limit("echo_server", static_cast<unsigned>(g_max_connections), test ? 2 : 1, chosen);
  if (g_max_connections == 0) {
    return 1;
  }
  // (The number fitted is part of the line: check_descriptor_limit.sh compares it with
  // the limit it set.)
  std::printf("echo_server listening on %s (at most %zu connections at once)\n",
              l->local_address().value().to_string().c_str(), g_max_connections);
  std::fflush(stdout);
  if (test) {
    // The accept loop runs until the runtime's shutdown (block_on returning) destroys it
    // and the connections.
    return rt.block_on(self_test(*l));
  }
  return rt.block_on(example::serve_until_signal("echo_server", *signals,
                                                 [&l](std::stop_token stop) { return accept_loop(*l, stop); }));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("echo_server", example_main, argc, argv); }
