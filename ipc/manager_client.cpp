// Holds manager_client and manager_proxy: server requests on connections of their own,
// create (+ accept_connection for the proxy's connection), method calls serialised on
// the proxy's connection (the object of a '#PROXY' reply dropped again), and release
// (decref), whose decrefs a stop cannot cancel.
#include <corio/ipc/manager_client.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <corio/runtime/shield.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/timeout.hpp>

namespace corio::ipc {

struct manager_proxy::channel {
  connection conn;
  corio::mutex lock;  // one request and its reply at a time on `conn`
  // Set by release() (under `lock`, as are all its reads: the mutex's acquire/release
  // orders it): the reference is dropped, later calls and releases fail with closed.
  // m_channel itself is never reset by release(): calls of other tasks, possibly on
  // other threads, read it while a release runs (a reset would race with those reads,
  // and a call already waiting for the lock would find it null).
  bool released = false;
};

namespace {

pickle::value make_request(pickle::value ident, std::string method, pickle::value::items_type args,
                           pickle::dict kwds) {
  return pickle::value::tuple_of(std::move(ident), std::move(method), pickle::value::make_tuple(std::move(args)),
                                 pickle::value(std::move(kwds)));
}

// The ident in a '#PROXY' reply's value (exposed, managers.Token): Python's server sends
// it for a method in method_to_typeid, having made the object with one reference for the
// client (Python's proxy drops it with a decref once it holds its own). Null otherwise.
const std::string* proxied_ident(const pickle::value& v) {
  auto* items = v.if_tuple();
  if (items == nullptr || items->size() != 2 || (*items)[0] != pickle::value("#PROXY")) {
    return nullptr;
  }
  const pickle::value* token = (*items)[1].at(1);
  const pickle::object* o = token != nullptr ? token->if_object() : nullptr;
  const pickle::value* id = o != nullptr && o->is("multiprocessing.managers", "Token") ? o->state.at(2) : nullptr;
  return id != nullptr && id->is_str() ? id->if_str() : nullptr;
}

result<manager_reply> parse_reply(pickle::value v) {
  auto* items = v.if_tuple();
  if (items == nullptr || items->size() != 2 || !(*items)[0].is_str()) {
    return unexpected(make_error_code(errc::protocol_error));
  }
  const std::string& kind = *(*items)[0].if_str();
  manager_reply r;
  if (kind == "#RETURN") {
    r.what = manager_reply::kind::returned;
  } else if (kind == "#ERROR") {
    r.what = manager_reply::kind::raised;
  } else if (kind == "#TRACEBACK") {
    r.what = manager_reply::kind::traceback;
  } else if (kind == "#UNSERIALIZABLE") {
    r.what = manager_reply::kind::unserializable;
  } else {
    return unexpected(make_error_code(errc::protocol_error));  // '#PROXY' included: not supported
  }
  r.value = std::move((*items)[1]);
  return r;
}

// One request and its reply on `conn`. A '#PROXY' reply is errc::protocol_error (not
// supported), and its object's ident goes to *proxied (when given) for the caller's decref.
task<result<manager_reply>> exchange(connection& conn, const pickle::value& request, std::stop_token token,
                                     std::string* proxied = nullptr) {
  if (auto sent = co_await conn.send(request, token); !sent) {
    co_return unexpected(sent.error());  // a send that failed part-way closed `conn` itself
  }
  auto reply = co_await conn.recv(token);
  if (!reply) {
    // The request went out, so unless this reply arrived whole (a pickle error: it was
    // read and only failed to decode), the server may still answer it: a stop, or an
    // idle_timeout while the call waits (a blocking get), would leave the connection one
    // reply behind, every later call getting the previous call's reply. Close it
    // (later calls: errc::closed; the server sees the client leave and stops the call).
    if (reply.error().category() != pickle::category()) {
      conn.close();
    }
    co_return unexpected(reply.error());
  }
  if (const std::string* ident = proxied != nullptr ? proxied_ident(*reply) : nullptr) {
    *proxied = *ident;
  }
  co_return parse_reply(std::move(*reply));
}

// A server request on a new connection (Python's dispatch(Client(address), None, ...)).
task<result<manager_reply>> one_request(socket_address addr, client_options options, pickle::value request,
                                        std::stop_token token) {
  auto conn = co_await ipc::connect(addr, options, token);
  if (!conn) {
    co_return unexpected(conn.error());
  }
  co_return co_await exchange(*conn, request, token);
}

// How long a decref that drops a reference may take (see drop_reference).
constexpr std::chrono::seconds decref_limit{10};

// Sends `decref` on a connection of its own so that no stop can cancel it: it runs when
// the caller is being stopped (create's cleanup, release), and a stopped decref would
// leave the server object's reference count above zero for good. Shielded from the
// caller's token (passed none, and the inherited one kept out), but bounded by
// decref_limit so that a server that accepts and never answers cannot hang the caller.
task<result<manager_reply>> drop_reference(const socket_address& addr, const client_options& options,
                                           const pickle::value& decref) {
  co_return co_await corio::shield(corio::timeout(one_request(addr, options, decref, {}), decref_limit));
}

// The ident a create reply names, or null: ('#RETURN', (ident, ...), ...) with ident a
// str. A reply of that kind means the server made the object with one reference for this
// client, even when the rest of it is malformed (the create then fails with
// protocol_error): the reference is dropped again by its ident.
const std::string* created_ident(const pickle::value& reply) {
  const auto* items = reply.if_tuple();
  if (items == nullptr || items->size() < 2 || (*items)[0] != pickle::value("#RETURN")) {
    return nullptr;
  }
  const auto* made = (*items)[1].if_tuple();
  if (made == nullptr || made->empty() || !(*made)[0].is_str()) {
    return nullptr;
  }
  return (*made)[0].if_str();
}

// Drops the reference the create that named `ident` left for this client (a decref no
// stop can cancel, see drop_reference).
task<void> drop_created(const socket_address& addr, const client_options& options, std::string ident) {
  pickle::value decref = make_request({}, "decref", {pickle::value(std::move(ident))}, {});
  (void)co_await drop_reference(addr, options, decref);
}

// The create's reply, received by a task of its own on the create's connection (handed
// back with it): no stop of the create can cut the reply short once its first byte came,
// which would lose the ident (the connection closes in the middle of a message). Its
// receive is bounded by the connection's own idle_timeout (before the first byte) and
// stall_timeout (after), and by an abort.
struct create_reply {
  connection conn;
  result<pickle::value> reply;
};

task<create_reply> receive_create_reply(connection conn) {
  auto reply = co_await conn.recv();
  co_return create_reply{std::move(conn), std::move(reply)};
}

// The reply's receive (receive_create_reply, spawned abortable) as handed over to
// drop_abandoned_create: one that is dropped before it was joined is aborted, so that no
// receive runs on with nobody to wait for it (until its connection's idle_timeout, by
// default never, or its stall_timeout), holding the connection open. That happens when
// the task cannot be made (no memory: the argument built for it, or the frame it was
// moved into, is destroyed) and when the runtime destroys the task.
class abandoned_receive {
 public:
  explicit abandoned_receive(join_handle<create_reply> h) noexcept : m_handle(std::move(h)) {}
  abandoned_receive(abandoned_receive&&) noexcept = default;
  abandoned_receive& operator=(abandoned_receive&&) = delete;
  ~abandoned_receive() {
    if (m_handle.abortable()) {  // false once joined (the handle is then empty) or moved
      m_handle.abort();
    }
  }
  join_handle<create_reply>& handle() noexcept { return m_handle; }

 private:
  join_handle<create_reply> m_handle;
};

// After a create stopped (or timed out) while its reply was awaited: the server has the
// request and makes the object whatever the client does now, with one reference for the
// client that nobody else will drop. Waits for the reply (within decref_limit) and drops
// that reference. A task of its own: the stopped caller returns at once. `receiving` is
// the reply's receive, still running, or empty when `got` already holds its outcome (the
// connection's idle_timeout passed). (A runtime shut down within the wait destroys this
// task: the receive is aborted and the reference stays.)
task<void> drop_abandoned_create(abandoned_receive receiving, std::optional<create_reply> got, socket_address addr,
                                 client_options options) {
  const auto deadline = corio::clock::now() + decref_limit;
  if (receiving.handle().valid()) {
    auto r = co_await corio::timeout_at(receiving.handle().join(), deadline);
    if (!r) {
      receiving.handle().abort();  // past decref_limit: the reply is given up (a reply cut short is lost)
      co_return;
    }
    got.emplace(std::move(*r));
  }
  // The connection's own idle_timeout (which may be what ended the create) bounds each
  // receive: wait again until the reply or decref_limit.
  while (!got->reply && got->reply.error() == std::errc::timed_out && corio::clock::now() < deadline) {
    got->reply = co_await corio::timeout_at(got->conn.recv(), deadline);
  }
  if (const std::string* ident = got->reply ? created_ident(*got->reply) : nullptr) {
    co_await drop_created(addr, options, *ident);
  }
}

// Hands an abandoned create to drop_abandoned_create. No memory for that task: the
// reference stays on the server, and nothing is left running: the receive is aborted (by
// abandoned_receive's destructor) and the connection closed with it, or with `got`.
void abandon_create(join_handle<create_reply> receiving, std::optional<create_reply> got, socket_address addr,
                    client_options options) noexcept {
  try {
    corio::spawn(drop_abandoned_create(abandoned_receive(std::move(receiving)), std::move(got), std::move(addr),
                                       std::move(options)))
        .detach();
  } catch (const std::exception&) {
  }
}

// create's request: one_request, except that the reply is received by a task of its own
// (receive_create_reply), and a stop or an idle timeout while it is awaited hands it to
// drop_abandoned_create. Yields the reply undecoded: create() reads the ident from it.
task<result<pickle::value>> create_request(socket_address addr, client_options options, pickle::value request,
                                           std::stop_token token) {
  auto conn = co_await ipc::connect(addr, options, token);
  if (!conn) {
    co_return unexpected(conn.error());
  }
  if (auto sent = co_await conn->send(request, token); !sent) {
    co_return unexpected(sent.error());  // nothing or part of it left: no object is made
  }
  // Abortable: drop_abandoned_create ends the receive once decref_limit has passed.
  auto receiving = corio::spawn(corio::abortable, receive_create_reply(std::move(*conn)));
  auto got = co_await receiving.join(token);
  if (!got) {
    if (got.error() == std::errc::operation_canceled) {  // this wait was stopped, not the receive
      abandon_create(std::move(receiving), std::nullopt, std::move(addr), std::move(options));
    }
    co_return unexpected(got.error());
  }
  if (!got->reply) {
    const std::error_code error = got->reply.error();
    // The connection's idle_timeout passed (errc::timed_out): no byte of the reply came,
    // the connection is still in step, and the server may still answer. (A reply that
    // stalled half-way closed the connection: the hand-off then finds it closed.)
    if (error == std::errc::timed_out) {
      abandon_create({}, std::move(*got), std::move(addr), std::move(options));
    }
    co_return unexpected(error);
  }
  co_return std::move(*got->reply);
}

}  // namespace

bool manager_reply::raised(std::string_view module, std::string_view name) const noexcept {
  const pickle::object* o = value.if_object();
  if (what != kind::raised || o == nullptr || o->name != name) {
    return false;
  }
  return o->module == module || (module == "queue" && o->module == "_queue");
}

task<result<manager_client>> manager_client::connect(socket_address addr, std::string authkey,
                                                     std::stop_token token) {
  client_options o;
  o.auth.authkey = std::move(authkey);
  co_return co_await connect(addr, std::move(o), token);
}

task<result<manager_client>> manager_client::connect(socket_address addr, client_options options,
                                                     std::stop_token token) {
  manager_client c;
  c.m_address = addr;
  c.m_options = std::move(options);
  auto r = co_await c.request("dummy", pickle::value::items_type(), pickle::dict(), token);
  if (!r) {
    co_return unexpected(r.error());
  }
  if (!r->ok()) {
    co_return unexpected(make_error_code(errc::protocol_error));
  }
  co_return c;
}

task<result<manager_reply>> manager_client::request(std::string method, pickle::value::items_type args,
                                                    pickle::dict kwds, std::stop_token token) const {
  pickle::value request = make_request({}, std::move(method), std::move(args), std::move(kwds));
  co_return co_await one_request(m_address, m_options, std::move(request), token);
}

task<result<manager_proxy>> manager_client::create(std::string type_id, pickle::value::items_type args,
                                                   pickle::dict kwds, manager_reply* refusal,
                                                   std::stop_token token) const {
  args.insert(args.begin(), pickle::value(std::move(type_id)));
  pickle::value create = make_request({}, "create", std::move(args), std::move(kwds));
  auto reply = co_await create_request(m_address, m_options, std::move(create), token);
  if (!reply) {
    co_return unexpected(reply.error());
  }
  std::optional<std::string> ident;  // the object the reply names, if it names one
  if (const std::string* named = created_ident(*reply)) {
    ident = *named;
  }
  auto r = parse_reply(std::move(*reply));
  if (r && !r->ok()) {
    if (refusal != nullptr) {
      *refusal = std::move(*r);
    }
    co_return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  using made_type = std::tuple<std::string, std::vector<std::string>>;
  auto made = r ? r->value.as<made_type>() : result<made_type>(unexpected(r.error()));
  if (!made) {
    // Not ('#RETURN', (ident, exposed)). A reply that still names an ident made that
    // object: its reference is dropped again, as an abandoned create's is.
    if (ident) {
      co_await drop_created(m_address, m_options, std::move(*ident));
    }
    co_return unexpected(make_error_code(errc::protocol_error));
  }
  manager_proxy p;
  p.m_ident = std::move(std::get<0>(*made));
  p.m_exposed = std::move(std::get<1>(*made));
  p.m_address = m_address;
  p.m_options = m_options;
  // (Named argument lists: g++ 12 rejects braced lists inside a co_await; see README.)
  pickle::value decref = make_request({}, "decref", {pickle::value(p.m_ident)}, {});
  pickle::value accept = make_request({}, "accept_connection", {pickle::value("corio")}, {});
  // The create's reference is the proxy's own (Python increfs for the proxy, then
  // decrefs the create's: the same count in the end).
  // Failing from here on, the create's reference is dropped again: by a decref that
  // the stop which most likely ended the connect or exchange cannot cancel.
  auto conn = co_await ipc::connect(m_address, m_options, token);
  if (!conn) {
    (void)co_await drop_reference(m_address, m_options, decref);
    co_return unexpected(conn.error());
  }
  auto accepted = co_await exchange(*conn, accept, token);
  if (!accepted || !accepted->ok()) {
    (void)co_await drop_reference(m_address, m_options, decref);
    co_return unexpected(accepted ? make_error_code(errc::protocol_error) : accepted.error());
  }
  p.m_channel = std::make_shared<manager_proxy::channel>();
  p.m_channel->conn = std::move(*conn);
  co_return p;
}

task<result<manager_reply>> manager_proxy::call(std::string method, pickle::value::items_type args, pickle::dict kwds,
                                                std::stop_token token) {
  if (!m_channel) {
    co_return unexpected(make_error_code(errc::closed));
  }
  channel& ch = *m_channel;
  auto guard = co_await ch.lock.lock(token);
  if (!guard) {
    co_return unexpected(guard.error());
  }
  if (ch.released) {  // a release() ran while this call waited for the lock
    co_return unexpected(make_error_code(errc::closed));
  }
  pickle::value request = make_request(pickle::value(m_ident), std::move(method), std::move(args), std::move(kwds));
  std::string proxied;
  auto r = co_await exchange(ch.conn, request, token, &proxied);
  if (!proxied.empty()) {
    // A '#PROXY' reply (protocol_error): the server made an object for it with one
    // reference, which no proxy here will ever drop. Drop it now, as Python's client
    // does once its new proxy holds its own, by a decref a stop cannot cancel.
    pickle::value decref = make_request({}, "decref", {pickle::value(std::move(proxied))}, {});
    (void)co_await drop_reference(m_address, m_options, decref);
  }
  co_return r;
}

task<result<void>> manager_proxy::release(std::stop_token token) {
  if (!m_channel) {
    co_return unexpected(make_error_code(errc::closed));
  }
  channel& ch = *m_channel;
  {
    auto guard = co_await ch.lock.lock(token);
    if (!guard) {
      co_return unexpected(guard.error());
    }
    if (ch.released) {  // another release() came first: its decref is the only one
      co_return unexpected(make_error_code(errc::closed));
    }
    ch.released = true;
    ch.conn.close();
  }
  // The proxy is released now (it cannot retry): the decref must not be cancelled by the
  // stop that is still allowed to end the wait for the lock above.
  pickle::value decref = make_request({}, "decref", {pickle::value(m_ident)}, {});
  auto r = co_await drop_reference(m_address, m_options, decref);
  if (!r) {
    co_return unexpected(r.error());
  }
  if (!r->ok()) {
    co_return unexpected(make_error_code(errc::protocol_error));
  }
  co_return result<void>{};
}

}  // namespace corio::ipc
