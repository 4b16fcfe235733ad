// http_hello's connections (server.hpp): the watchdog that enforces a connection's
// deadlines, the request loop of a connection (reads, answers, bodies skipped), the places
// among --max-connections, the 503 past them, and the accept loop.
#include "server.hpp"

#include "request.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::tcp_listener;
using corio::ipc::tcp_stream;
using steady = std::chrono::steady_clock;

namespace http_hello {
namespace {

// ---------------------------------------------------------------------------------------
// Timeouts: one watchdog per connection

// Watchdogs still running when their connection's frame ended (see watchdog::running):
// must stay 0; the self-test checks it. relaxed: a count, read once every connection ended.
std::atomic<int> g_watchdogs_outlived{0};

// The connection stores the deadline of what it waits for; the watchdog task sleeps
// until that deadline and, if it has not moved meanwhile, shuts the socket down (a read
// then sees end of stream, a write EPIPE), so the connection task ends. A deadline moved
// later costs the connection one atomic store (the watchdog, woken at the old one, sleeps
// again); one moved earlier (a head begun, its header timeout shorter than the idle time
// left) also wakes the watchdog, which then sleeps until the new one.
struct watchdog {
  // Nanoseconds on the steady clock, written by the connection task only. relaxed: only
  // the value matters (a deadline moved earlier is published by `moved_earlier`); a
  // deadline moved later at the very moment the old one passes may be missed, and then
  // the connection (idle until that moment) is closed, which is what the deadline said.
  std::atomic<std::int64_t> deadline{0};
  // Set when the deadline moves earlier: the watchdog, asleep until the old one, wakes
  // and re-reads it. Auto-reset: each set wakes it once; a set while it is awake (between
  // its read of the deadline and its wait) stays set, so its next wait returns at once.
  corio::event moved_earlier{corio::event_reset::automatic};
  // relaxed: read by the connection task after its read returned, which the shutdown
  // caused; it only chooses what to log.
  std::atomic<bool> fired{false};
  // True while the watchdog task runs: set before it is spawned, cleared by the task as
  // its last access to the connection's state, or by stop_watchdog once the join says
  // the runtime's shutdown destroyed it (or never started it). release (the task's
  // clear) / acquire (below): a watchdog that ended is seen as ended.
  std::atomic<bool> running{false};

  watchdog() = default;
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;
  ~watchdog() {
    if (running.load(std::memory_order_acquire)) {
      g_watchdogs_outlived.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void expire_in(std::chrono::milliseconds d) { expire_at(steady::now() + d); }
  void expire_at(steady::time_point t) {
    std::int64_t next = t.time_since_epoch().count();
    std::int64_t old = deadline.load(std::memory_order_relaxed);  // our own last store
    deadline.store(next, std::memory_order_relaxed);
    if (next < old) {
      moved_earlier.set();  // release: the woken watchdog reads `next` (or a later one)
    }
  }
};

task<void> enforce(const tcp_stream& s, watchdog& dog, std::stop_token stop) {
  for (;;) {
    steady::time_point d{steady::duration(dog.deadline.load(std::memory_order_relaxed))};
    if (steady::now() >= d) {
      dog.fired.store(true, std::memory_order_relaxed);
      (void)s.shutdown(SHUT_RDWR);
      dog.running.store(false, std::memory_order_release);
      co_return;
    }
    // Until the deadline, or until it moves earlier: either way, read it again. (timeout_at
    // returns a wait granted as the deadline passed, so no set of the event is lost.)
    auto woken = co_await corio::timeout_at(dog.moved_earlier.wait(stop), d);
    if (!woken && woken.error() != std::errc::timed_out) {
      dog.running.store(false, std::memory_order_release);
      co_return;  // the connection ended first
    }
  }
}

// After a refusal: stop sending, then read and drop what the client still sends for a
// moment, so that closing does not reset the connection before the reply is read.
task<void> linger_close(const tcp_stream& s, watchdog& dog, const server_config& config) {
  (void)s.shutdown(SHUT_WR);
  dog.expire_in(std::min(config.idle_timeout, std::chrono::milliseconds(2000)));
  std::array<std::byte, 4096> sink{};
  for (std::size_t total = 0; total < (1u << 20);) {
    auto n = co_await s.read_some(sink);
    if (!n || *n == 0) {
      break;
    }
    total += *n;
  }
}

// ---------------------------------------------------------------------------------------
// Connections

task<void> handle_requests(const tcp_stream& s, watchdog& dog, const server_config& config) {
  std::string in;
  std::string out;
  std::uint64_t skip = 0;                 // Content-Length body bytes still to drop
  std::optional<chunked_skipper> chunks;  // a chunked body being dropped
  std::optional<steady::time_point> head_since;
  dog.expire_in(config.idle_timeout);
  for (;;) {
    // Read straight into the unparsed bytes (no separate buffer per connection).
    std::size_t old = in.size();
    in.resize(old + 4096);
    auto n = co_await s.read_some(std::as_writable_bytes(std::span(in).subspan(old)));
    in.resize(old + (n ? *n : 0));
    if (!n || *n == 0) {
      co_return;  // end, error, or cut off by the watchdog
    }
    out.clear();
    std::size_t consumed = 0;
    bool close = false;
    for (;;) {
      if (skip > 0) {  // a Content-Length body: drop it as it arrives
        std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(skip, in.size() - consumed));
        consumed += take;
        skip -= take;
        if (skip > 0) {
          break;
        }
      }
      if (chunks) {
        std::size_t used = 0;
        auto st = chunks->feed(std::string_view(in).substr(consumed), used);
        consumed += used;
        if (st == chunked_skipper::status::bad) {
          refuse(out, 400);
          close = true;
          break;
        }
        if (st == chunked_skipper::status::more) {
          break;
        }
        chunks.reset();
      }
      std::string_view rest = std::string_view(in).substr(consumed);
      auto req = parse_head(rest);
      if (!req) {
        break;  // incomplete
      }
      if (req->error != 0) {
        refuse(out, req->error);
        close = true;
        break;
      }
      if (head_since && steady::now() - *head_since > config.header_timeout) {
        co_return;  // finished too late: closed unanswered, as the watchdog would have (it may lag)
      }
      respond(rest, out, req->close);
      consumed += req->head_size;
      head_since.reset();
      if (req->body == body_kind::length) {
        skip = req->length;
      } else if (req->body == body_kind::chunked) {
        chunks.emplace();
      }
      if (req->close) {
        close = true;
        break;
      }
    }
    in.erase(0, consumed);
    if (!out.empty()) {
      dog.expire_in(config.idle_timeout);
      if (!co_await s.write_all(std::as_bytes(std::span(out)))) {
        co_return;
      }
    }
    if (close) {
      co_await linger_close(s, dog, config);
      co_return;
    }
    // What the next read waits for, and how long it may take.
    if (skip > 0 || chunks) {
      dog.expire_in(config.idle_timeout);  // the rest of a body: per read
    } else if (in.empty()) {
      head_since.reset();
      dog.expire_in(config.idle_timeout);  // the next request
    } else {
      if (!head_since) {
        head_since = steady::now();  // the first bytes of a head: it has header_timeout in all
      }
      dog.expire_at(*head_since + config.header_timeout);
    }
  }
}

// A place among --max-connections, held by a connection task from its accept to its end.
// It is a parameter of the task, so its destructor gives the place back however the task
// ends: finished, aborted (also before it first ran, when its body never runs), or
// destroyed by the runtime's shutdown.
class connection_slot {
 public:
  // A place, or nullopt when --max-connections are taken.
  static std::optional<connection_slot> take(server& srv) {
    if (srv.connections.fetch_add(1, std::memory_order_relaxed) >= srv.config.max_connections) {
      srv.connections.fetch_sub(1, std::memory_order_relaxed);
      return std::nullopt;
    }
    return connection_slot(srv);
  }
  connection_slot(connection_slot&& o) noexcept : m_srv(std::exchange(o.m_srv, nullptr)) {}
  connection_slot(const connection_slot&) = delete;
  connection_slot& operator=(const connection_slot&) = delete;
  connection_slot& operator=(connection_slot&&) = delete;
  ~connection_slot() {
    if (m_srv != nullptr) {
      m_srv->connections.fetch_sub(1, std::memory_order_relaxed);
    }
  }

 private:
  explicit connection_slot(server& srv) noexcept : m_srv(&srv) {}
  server* m_srv;
};

// Stops a connection's watchdog and waits for it to end; awaited shielded (with_watchdog).
// The join yields the runtime's outcomes as a result instead of throwing them:
// errc::shut_down (the runtime refused to start the watchdog, or destroyed it) means it
// will never run again, so it is marked ended here; a cancelled join (possible only if
// this were not shielded) leaves it running. The watchdog's own exception (it throws
// none) would be rethrown.
task<void> stop_watchdog(std::stop_source& stop, corio::join_handle<void>& guard, watchdog& dog) {
  stop.request_stop();
  auto ended = co_await guard.join();
  if (!ended && ended.error() == corio::errc::shut_down) {
    dog.running.store(false, std::memory_order_relaxed);  // its frame is gone: nothing to publish
  }
}

// Runs `body` (which uses `s` and `dog`) beside a watchdog task over them, then stops the
// watchdog and joins it on every path: body done, body failed (rethrown after the join),
// or the connection task aborted. The join is shielded: an abort ends the task's waits as
// cancelled, and this one must not end before the watchdog, which refers to `s` and `dog`
// on the connection's frame. Its frame is made before the watchdog is spawned, so that
// once the watchdog runs nothing can throw before the join; if the join fails too, the
// body's exception is the one rethrown.
task<void> with_watchdog(const tcp_stream& s, watchdog& dog, task<void> body) {
  std::stop_source stop;
  corio::join_handle<void> guard;
  auto stopper = corio::shield(stop_watchdog(stop, guard, dog));
  auto enforcer = enforce(s, dog, stop.get_token());
  dog.running.store(true, std::memory_order_relaxed);  // published by the spawn
  try {
    guard = corio::spawn(std::move(enforcer));
  } catch (...) {
    dog.running.store(false, std::memory_order_relaxed);  // not spawned: it never runs
    throw;
  }
  std::exception_ptr error;
  try {
    co_await std::move(body);
  } catch (...) {
    error = std::current_exception();
  }
  try {
    co_await std::move(stopper);
  } catch (...) {
    if (!error) {
      error = std::current_exception();
    }
  }
  if (error) {
    std::rethrow_exception(error);
  }
}

// `config` is the server's: it outlives the accept loop's group, which waits for this task.
task<void> serve_connection(tcp_stream s, const server_config& config, connection_slot slot) {
  (void)s.set_nodelay(true);
  watchdog dog;
  dog.expire_in(config.idle_timeout);
  co_await with_watchdog(s, dog, handle_requests(s, dog, config));
  (void)slot;  // the place is given back when this frame ends, however it ends
}

// Past the connection limit: a 503, then close (lingering briefly, bounded by a watchdog).
task<void> refuse_503(const tcp_stream& s, watchdog& dog, const server_config& config) {
  std::string out;
  refuse(out, 503);
  if (co_await s.write_all(std::as_bytes(std::span(out)))) {
    co_await linger_close(s, dog, config);
  }
}

task<void> turn_away(tcp_stream s, server_config config) {
  watchdog dog;
  dog.expire_in(std::min(config.idle_timeout, std::chrono::milliseconds(2000)));
  co_await with_watchdog(s, dog, refuse_503(s, dog, config));
}

}  // namespace

task<void> accept_loop(const tcp_listener& l, server& srv, std::stop_token stop) {
  co_await corio::with_task_group<void>(
      {.keep_results = false}, [&l, &srv, &stop](corio::task_group<void>& connections) -> task<void> {
        for (;;) {
          auto s = co_await l.accept(stop);
          if (!s) {
            if (s.error() == std::errc::operation_canceled) {
              break;
            }
            (void)co_await corio::sleep_for(10ms);  // EMFILE: back off, do not spin
            continue;
          }
          // The group is unbounded and never cancels on error: try_spawn always spawns.
          if (auto slot = connection_slot::take(srv)) {
            (void)connections.try_spawn(serve_connection(std::move(*s), srv.config, std::move(*slot)));
          } else {
            (void)connections.try_spawn(turn_away(std::move(*s), srv.config));
          }
        }
        connections.abort_all();
      });
}

int watchdogs_outlived() {
  return g_watchdogs_outlived.load(std::memory_order_relaxed);
}

}  // namespace http_hello
