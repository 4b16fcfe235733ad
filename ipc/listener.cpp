// ipc::listener: accept + Python's handshake, and serve() with a task per connection, a
// connection limit and a stop that drains every handler (ipc/listener.hpp).
#include <corio/ipc/listener.hpp>

#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>
#include <corio/sync/event.hpp>
#include <corio/runtime/when_any.hpp>
#include <corio/sync/semaphore.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <memory>
#include <utility>

namespace corio::ipc {

namespace {

// Accept errors that leave the pending connection queued (out of descriptors or memory):
// back off and accept again.
bool is_resource_shortage(const std::error_code& ec) noexcept {
  return ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system ||
         ec == std::errc::no_buffer_space || ec == std::errc::not_enough_memory;
}

// Keepalive of accepted TCP connections (listener.hpp): silent for this long, then this
// many probes this far apart, and a peer that answers none is gone (~2 minutes).
constexpr int keepalive_idle_s = 60;
constexpr int keepalive_interval_s = 10;
constexpr int keepalive_probes = 6;

// Accept errors after which the listener cannot accept any more.
bool is_fatal_accept_error(const std::error_code& ec) noexcept {
  return ec == std::errc::bad_file_descriptor || ec == std::errc::invalid_argument ||
         ec == std::errc::not_a_socket || ec == errc::closed || ec == errc::shut_down ||
         ec == errc::no_runtime;
}

// Finishes when `stop` is requested, or when its own inherited token is stopped because
// the handler beside it in when_any finished first: a wait on an event nobody sets, so a
// connection costs no timer (a sleep here armed one per connection).
task<void> wait_for_stop(std::stop_token stop) {
  event never;
  (void)co_await never.wait(std::move(stop));
}

}  // namespace

listener::listener(listener&&) noexcept = default;
listener& listener::operator=(listener&&) noexcept = default;
listener::~listener() = default;

result<listener> listener::bind(const socket_address& addr, listener_options options) {
  listener l;
  l.m_options = std::move(options);
  if (addr.is_unix()) {
    auto u = unix_listener::bind(addr, l.m_options.backlog);
    if (!u) {
      return unexpected(u.error());
    }
    l.m_unix = std::move(*u);
  } else {
    tcp_listen_options o;
    o.backlog = l.m_options.backlog;
    // Keepalive probes: a client that vanishes without FIN or RST (powered off, cable
    // pulled, a NAT forgetting it) while the server owes it a reply (a manager's blocking
    // get) is otherwise noticed only when a reply is sent, or never. tcp_listener sets
    // them on the listening socket before listen(2), so every accepted connection has
    // them (set after listen, a connection whose handshake completed in between went
    // without); SO_KEEPALIVE must take (else bind fails), the timings are best effort.
    o.keepalive = {.enabled = true,
                   .idle_s = keepalive_idle_s,
                   .interval_s = keepalive_interval_s,
                   .probes = keepalive_probes};
    auto t = tcp_listener::bind(addr, o);
    if (!t) {
      return unexpected(t.error());
    }
    l.m_tcp = std::move(*t);
  }
  return l;
}

result<socket_address> listener::address() const {
  return m_tcp.is_open() ? m_tcp.local_address() : m_unix.local_address();
}

namespace {

// Connections in the accept queue of listening TCP socket `fd`: for a socket in LISTEN
// state Linux gives the queue's length as TCP_INFO's tcpi_unacked. 0 if it cannot be read.
std::uint64_t accept_queue_length(int fd) noexcept {
  if (fd < 0) {
    return 0;
  }
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) {
    return 0;
  }
  return info.tcpi_unacked;
}

}  // namespace

listener_stats listener::stats() const noexcept {
  // relaxed: independent counts and levels, each read for itself (listener.hpp).
  const counters& c = *m_counters;
  listener_stats s;
  s.accepted = c.accepted.load(std::memory_order_relaxed);
  s.authenticated = c.authenticated.load(std::memory_order_relaxed);
  s.failed = c.failed.load(std::memory_order_relaxed);
  s.in_use = c.in_use.load(std::memory_order_relaxed);
  s.limit = c.limit.load(std::memory_order_relaxed);
  s.limit_waits = c.limit_waits.load(std::memory_order_relaxed);
  s.shortages = c.shortages.load(std::memory_order_relaxed);
  s.queued = accept_queue_length(m_tcp.fd());  // a Unix listener: m_tcp is closed, 0
  return s;
}

void listener::close() noexcept {
  m_tcp = tcp_listener();
  m_unix = unix_listener();
}

task<result<connection>> listener::accept_unauthenticated(std::stop_token token) {
  if (m_tcp.is_open()) {
    auto s = co_await m_tcp.accept(std::move(token));
    if (!s) {
      if (is_resource_shortage(s.error())) {
        m_counters->shortages.fetch_add(1, std::memory_order_relaxed);
      }
      co_return unexpected(s.error());
    }
    (void)s->set_nodelay(true);  // small request/response messages: no Nagle delay
    m_counters->accepted.fetch_add(1, std::memory_order_relaxed);
    co_return connection(std::move(*s), m_options.connection);
  }
  if (!m_unix.is_open()) {
    co_return unexpected(make_error_code(errc::closed));
  }
  auto s = co_await m_unix.accept(std::move(token));
  if (!s) {
    if (is_resource_shortage(s.error())) {
      m_counters->shortages.fetch_add(1, std::memory_order_relaxed);
    }
    co_return unexpected(s.error());
  }
  m_counters->accepted.fetch_add(1, std::memory_order_relaxed);
  co_return connection(std::move(*s), m_options.connection);
}

task<result<void>> listener::authenticate(connection& conn, std::stop_token token) {
  auto r = co_await authenticate_server(conn, m_options.auth, std::move(token));
  (r ? m_counters->authenticated : m_counters->failed).fetch_add(1, std::memory_order_relaxed);
  co_return r;
}

task<result<connection>> listener::accept(std::stop_token token) {
  auto c = co_await accept_unauthenticated(token);
  if (!c) {
    co_return c;
  }
  if (auto r = co_await authenticate(*c, std::move(token)); !r) {
    co_return unexpected(r.error());
  }
  co_return c;
}

namespace {

// A count of the listener's (listener_stats), shared so that it outlives the listener.
using shared_count = std::shared_ptr<std::atomic<std::uint64_t>>;

// What serve() shares with its connection tasks. Shared ownership: if the runtime shuts
// down and destroys the tasks in any order, a task's permit still finds its semaphore,
// and its end still finds the count of connections in use.
struct serve_state {
  semaphore slots;
  listener::handler handler;
  shared_count in_use;
  serve_state(std::size_t n, listener::handler h, shared_count used)
      : slots(n), handler(std::move(h)), in_use(std::move(used)) {}
};

// One connection slot, counted in use from its accept to its task's end: the count drops
// before the permit goes back (so in_use never exceeds the limit), and both before the
// state can go. relaxed: a count for stats(), it orders nothing.
struct slot {
  std::shared_ptr<serve_state> state;
  semaphore_permit permit;
  slot(std::shared_ptr<serve_state> s, semaphore_permit p) noexcept : state(std::move(s)), permit(std::move(p)) {
    state->in_use->fetch_add(1, std::memory_order_relaxed);
  }
  slot(slot&&) noexcept = default;
  slot& operator=(slot&&) = delete;
  ~slot() {
    if (state) {  // (empty once moved from)
      state->in_use->fetch_sub(1, std::memory_order_relaxed);
    }
    permit.release();
  }
};

// Shows serve()'s limit in stats() while serve() runs, 0 again when it ends (or its frame
// is destroyed at a runtime's shutdown). relaxed: a level for stats(), it orders nothing.
class limit_shown {
 public:
  limit_shown(shared_count limit, std::size_t total) noexcept : m_limit(std::move(limit)) {
    m_limit->store(total, std::memory_order_relaxed);
  }
  limit_shown(const limit_shown&) = delete;
  limit_shown& operator=(const limit_shown&) = delete;
  ~limit_shown() { m_limit->store(0, std::memory_order_relaxed); }

 private:
  shared_count m_limit;
};

task<void> run_handler(std::shared_ptr<serve_state> state, connection conn, std::stop_token stop) {
  co_await state->handler(std::move(conn), std::move(stop));
}

task<void> serve_one(listener* self, connection conn, slot held, std::stop_token stop) {
  auto r = co_await self->authenticate(conn, stop);
  if (!r) {
    co_return;
  }
  // The handler runs beside a wait for `stop`: when serve() stops, when_any cancels the
  // handler through the token its waits inherit.
  (void)co_await when_any(run_handler(held.state, std::move(conn), stop), wait_for_stop(stop));
}

}  // namespace

task<result<void>> listener::serve(handler h, std::stop_token token) {
  const std::size_t total = m_options.max_connections == 0 ? 1 : m_options.max_connections;
  // (aliasing shared_ptrs: each owns the counters, points at one count)
  auto state = std::make_shared<serve_state>(total, std::move(h), shared_count(m_counters, &m_counters->in_use));
  const limit_shown shown(shared_count(m_counters, &m_counters->limit), total);
  std::stop_source children;
  result<void> outcome;
  for (;;) {
    // A slot for the next connection: at once when one is free, else (every slot in use:
    // a limit wait, counted; relaxed, a count for stats()) once a connection ends.
    result<semaphore_permit> permit = semaphore_permit();
    if (state->slots.try_acquire(1)) {
      permit = semaphore_permit(state->slots, 1);
    } else {
      m_counters->limit_waits.fetch_add(1, std::memory_order_relaxed);
      permit = co_await state->slots.acquire(1, token);
    }
    if (!permit) {
      break;  // stopped
    }
    auto c = co_await accept_unauthenticated(token);
    if (!c) {
      const std::error_code& ec = c.error();
      if (ec == std::errc::operation_canceled) {
        break;
      }
      if (is_fatal_accept_error(ec)) {
        outcome = unexpected(ec);
        break;
      }
      if (is_resource_shortage(ec)) {
        // The connection stays in the backlog; a handler closing frees a descriptor.
        (void)co_await sleep_for(std::chrono::milliseconds(10), token);
      }
      continue;  // ECONNABORTED, EPERM, ...: that one connection failed
    }
    (void)spawn(serve_one(this, std::move(*c), slot(state, std::move(*permit)), children.get_token()));
  }
  // Stop every handler and wait until each has given its slot back.
  children.request_stop();
  auto all = co_await state->slots.acquire(total);
  (void)all;
  co_return outcome;
}

}  // namespace corio::ipc
