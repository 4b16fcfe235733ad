// Holds manager_server: Python's managers.Server request protocol over ipc::listener
// (the server requests, the object table with its reference counts, the proxy call loop,
// and the watch that stops a waiting call when its client leaves). The wire forms of
// requests and replies: manager_server_wire.cpp.
#include <corio/ipc/manager_server.hpp>

#include "manager_server_wire.hpp"

#include <algorithm>
#include <atomic>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <corio/runtime/shield.hpp>
#include <corio/runtime/timeout.hpp>
#include <corio/runtime/when_all.hpp>

namespace corio::ipc {

using namespace detail::manager_wire;

namespace {

// An object in the table: what create made and what clients may call on it.
struct object_entry {
  std::shared_ptr<managed_object> object;
  std::vector<std::string> exposed;
};

struct table_slot {
  std::shared_ptr<const object_entry> entry;
  std::size_t refcount = 0;
};

// The first `n` characters (code points) of UTF-8 text `s`, as Python's s[:n]: a cut by
// bytes could split a character, and the reply, a str, could then not be pickled.
std::string first_characters(std::string s, std::size_t n) {
  std::size_t seen = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80 && seen++ == n) {
      s.resize(i);
      break;
    }
  }
  return s;
}

}  // namespace

struct manager_server::state {
  listener l;
  manager_options options;
  std::stop_source stopper;  // serve()'s stop: the user's token, stop(), or a client's shutdown
  std::map<std::string, manager_factory, std::less<>> registry;  // read-only while serving

  mutable std::mutex table_lock;  // guards table (short sections, never held across a wait)
  std::map<std::string, table_slot, std::less<>> table;
  // Counts only (they order nothing): relaxed.
  std::atomic<std::uint64_t> waiting{0};
  std::atomic<std::uint64_t> abandoned{0};

  std::shared_ptr<const object_entry> find(std::string_view ident) const {
    std::lock_guard g(table_lock);
    auto it = table.find(ident);
    return it == table.end() ? nullptr : it->second.entry;
  }

  call_outcome create(const call_args& args);
  call_outcome incref(const call_args& args);
  call_outcome decref(const call_args& args);
  call_outcome get_methods(const call_args& args);
  call_outcome debug_info();
  call_outcome server_call(std::string_view name, const call_args& args);

  task<void> handle(connection conn, std::stop_token stop);
  task<void> serve_client(connection& conn, std::stop_token stop);
  call_result dispatch(const pickle::value& msg, std::shared_ptr<const object_entry>& entry);
  task<call_outcome> run_watched(connection& conn, deferred_call& call, std::stop_token stop,
                                 std::optional<result<pickle::value>>& pending, bool& gone);
};

namespace {

// A task that watches `conn` while a call waits: it ends when the client sends something
// (kept in `pending`), leaves (`gone`, and the call is stopped), or `stop` is requested.
// idle_timeout bounds how long a client may stay silent while it owes the server a
// request; here the server owes the reply, so a silent client is only waiting for it: the
// watch receives with no idle timer (which would wake it every idle_timeout, 1 ms at the
// least) and restores it after. set_idle_timeout, not set_options: the latter would drop
// the decoder, and with it the reason (unpickle_error) of a request received here that
// does not decode, which the error reply names. A stall (a message begun and not finished)
// still gives timed_out and closes the connection: the client is gone.
task<void> watch_peer(connection& conn, std::stop_token stop, std::stop_source& cancel,
                      std::optional<result<pickle::value>>& pending, bool& gone) {
  struct restore_idle {
    connection& conn;
    std::chrono::nanoseconds idle;
    ~restore_idle() { conn.set_idle_timeout(idle); }
  } restore{conn, conn.options().idle_timeout};
  conn.set_idle_timeout(no_timeout);
  auto m = co_await conn.recv(stop);
  if (!m && m.error() == std::errc::operation_canceled) {
    co_return;
  }
  if (!m && m.error().category() != pickle::category()) {
    gone = true;
    cancel.request_stop();
    co_return;
  }
  pending = std::move(m);
}

task<call_outcome> run_call(deferred_call& call, std::stop_token stop, std::stop_source& watch_stop) {
  call_outcome out = co_await call.run(std::move(stop));
  watch_stop.request_stop();
  co_return out;
}

/// A factory's outcome as Python's server answers any failed server call (create
/// included): an exception it raised goes back as ('#TRACEBACK', text whose last line
/// is "TYPE: message"), and the client raises RemoteError, never the exception itself.
call_outcome server_call_error(call_outcome outcome) {
  if (outcome.what != call_outcome::kind::raised) {
    return outcome;
  }
  const pickle::object* e = outcome.value.if_object();
  if (e == nullptr) {
    return traceback("Exception", outcome.value.repr(200));
  }
  // Python's str(exception): its one argument as str() gives it (a KeyError's as repr();
  // for the numbers and containers a factory raises with, str() is repr()), else the
  // arguments' tuple; an empty message prints the type alone (traceback()).
  std::string message;
  if (e->args.size() == 1) {
    const pickle::value& a = e->args[0];
    message = a.is_str() && !e->is("builtins", "KeyError") ? *a.if_str() : a.repr(200);
  } else if (!e->args.empty()) {
    message = pickle::value::make_tuple(pickle::value::items_type(e->args)).repr(200);
  }
  return traceback(e->module == "builtins" ? e->name : e->qualified_name(), message);
}

}  // namespace

call_outcome manager_server::state::create(const call_args& args) {
  const auto& pos = args.positional();
  if (pos.empty() || !pos[0].is_str()) {
    return traceback("TypeError", "create() needs a typeid (a str) as its first argument");
  }
  const std::string& type_id = *pos[0].if_str();
  auto it = registry.find(type_id);
  if (it == registry.end()) {
    return key_error(type_id);
  }
  pickle::value::items_type rest(pos.begin() + 1, pos.end());
  call_args factory_args(rest, args.keywords());
  std::variant<std::shared_ptr<managed_object>, call_outcome> made;
  try {
    made = it->second(factory_args);
  } catch (const std::exception& e) {
    return traceback("RuntimeError", e.what());
  }
  if (auto* error = std::get_if<call_outcome>(&made)) {
    return server_call_error(std::move(*error));
  }
  auto& object = std::get<std::shared_ptr<managed_object>>(made);
  if (!object) {
    return traceback("RuntimeError", "the factory of " + quoted(type_id) + " gave no object");
  }
  std::string ident = ident_of(object.get());
  auto entry = std::make_shared<object_entry>();
  entry->exposed = object->exposed();
  pickle::value::items_type exposed(entry->exposed.begin(), entry->exposed.end());
  entry->object = std::move(object);
  {
    std::lock_guard g(table_lock);
    table_slot& slot = table[ident];
    slot.entry = std::move(entry);
    ++slot.refcount;
  }
  return call_outcome::returned(pickle::value::tuple_of(ident, pickle::value::make_tuple(std::move(exposed))));
}

call_outcome manager_server::state::incref(const call_args& args) {
  auto ident = ident_argument(args);
  if (!ident) {
    return traceback("TypeError", "incref() takes one ident (a str)");
  }
  std::lock_guard g(table_lock);
  auto it = table.find(*ident);
  if (it == table.end()) {
    return key_error(*ident);
  }
  ++it->second.refcount;
  return call_outcome::returned({});
}

call_outcome manager_server::state::decref(const call_args& args) {
  auto ident = ident_argument(args);
  if (!ident) {
    return traceback("TypeError", "decref() takes one ident (a str)");
  }
  std::shared_ptr<const object_entry> dropped;  // released after the lock
  std::lock_guard g(table_lock);
  auto it = table.find(*ident);
  if (it == table.end()) {
    return key_error(*ident);
  }
  if (--it->second.refcount == 0) {
    dropped = std::move(it->second.entry);
    table.erase(it);
  }
  return call_outcome::returned({});
}

call_outcome manager_server::state::get_methods(const call_args& args) {
  // get_methods(token): a managers.Token, pickled with its state (typeid, address, id).
  const auto& pos = args.positional();
  const pickle::object* token = pos.size() == 1 ? pos[0].if_object() : nullptr;
  const pickle::value* id = token != nullptr ? token->state.at(2) : nullptr;
  if (id == nullptr || !id->is_str()) {
    return traceback("TypeError", "get_methods() takes one managers.Token");
  }
  auto entry = find(*id->if_str());
  if (!entry) {
    return key_error(*id->if_str());
  }
  pickle::value::items_type names(entry->exposed.begin(), entry->exposed.end());
  return call_outcome::returned(pickle::value::make_tuple(std::move(names)));
}

call_outcome manager_server::state::debug_info() {
  std::string out;
  {
    std::lock_guard g(table_lock);
    for (const auto& [ident, slot] : table) {
      out += "  ";
      out += ident;
      out += ":       refcount=";
      out += std::to_string(slot.refcount);
      out += "\n    ";
      out += first_characters(slot.entry->object->repr(), 75);  // Python: str(obj)[:75]
      out += '\n';
    }
  }
  out += "  waiting calls: ";
  out += std::to_string(waiting.load(std::memory_order_relaxed));
  out += ", abandoned: ";
  out += std::to_string(abandoned.load(std::memory_order_relaxed));
  return call_outcome::returned(std::move(out));
}

call_outcome manager_server::state::server_call(std::string_view name, const call_args& args) {
  if (name == "dummy") {
    return call_outcome::returned({});
  }
  if (name == "create") {
    return create(args);
  }
  if (name == "incref") {
    return incref(args);
  }
  if (name == "decref") {
    return decref(args);
  }
  if (name == "get_methods") {
    return get_methods(args);
  }
  if (name == "number_of_objects") {
    std::lock_guard g(table_lock);
    return call_outcome::returned(table.size());
  }
  if (name == "debug_info") {
    return debug_info();
  }
  return traceback("AssertionError", quoted(name) + " unrecognized");
}

task<void> manager_server::state::handle(connection conn, std::stop_token stop) {
  // (No `?:` around the co_await: g++ 12 destroys its result twice; see README.)
  auto receive = detail::is_no_timeout(options.first_request_timeout)
                     ? conn.recv(stop)
                     : corio::timeout(conn.recv(stop), options.first_request_timeout);
  result<pickle::value> first = co_await std::move(receive);
  if (!first) {
    if (first.error().category() == pickle::category()) {
      (void)co_await conn.send(
          reply("#TRACEBACK", traceback("UnpicklingError", conn.unpickle_error()).value));
    }
    co_return;
  }
  auto req = parse_request(*first);
  if (!req) {
    (void)co_await conn.send(reply(
        "#TRACEBACK", traceback("ValueError", "a request is (ident, methodname, args, kwds), not " + first->repr(200))
                          .value));
    co_return;
  }
  if (req->method == "accept_connection") {
    if (co_await conn.send(reply("#RETURN", {}))) {
      co_await serve_client(conn, stop);
    }
    co_return;
  }
  if (req->method == "shutdown") {
    if (!options.allow_shutdown) {
      (void)co_await conn.send(reply("#TRACEBACK", traceback("PermissionError", "shutdown is not allowed").value));
      co_return;
    }
    (void)co_await conn.send(reply("#RETURN", {}));
    if (options.on_shutdown) {
      options.on_shutdown();  // the owner stops us, its own way
    } else {
      stopper.request_stop();
    }
    co_return;
  }
  call_outcome out = server_call(req->method, call_args(*req->args, *req->kwds));
  (void)co_await conn.send(
      reply(out.what == call_outcome::kind::returned ? "#RETURN" : out.what == call_outcome::kind::raised ? "#ERROR"
                                                                                                        : "#TRACEBACK",
            std::move(out.value)));
}

task<call_outcome> manager_server::state::run_watched(connection& conn, deferred_call& call, std::stop_token stop,
                                                      std::optional<result<pickle::value>>& pending, bool& gone) {
  std::stop_source cancel;
  std::stop_callback on_stop(stop, [&cancel] { cancel.request_stop(); });
  std::stop_source watch_stop;
  waiting.fetch_add(1, std::memory_order_relaxed);
  auto [out, ignored] = co_await corio::when_all(run_call(call, cancel.get_token(), watch_stop),
                                                 watch_peer(conn, watch_stop.get_token(), cancel, pending, gone));
  (void)ignored;
  waiting.fetch_sub(1, std::memory_order_relaxed);
  if (gone) {
    abandoned.fetch_add(1, std::memory_order_relaxed);
  }
  co_return std::move(out);
}

// A method call: what the method returned (entry: the object's), or the error of a request
// that is malformed or names no object or a method it does not expose.
call_result manager_server::state::dispatch(const pickle::value& msg, std::shared_ptr<const object_entry>& entry) {
  auto req = parse_request(msg);
  if (!req || !req->ident->is_str()) {
    return traceback("ValueError", "a method call is (ident, methodname, args, kwds), not " + msg.repr(200));
  }
  if (!(entry = find(*req->ident->if_str()))) {
    return key_error(*req->ident->if_str());
  }
  if (std::find(entry->exposed.begin(), entry->exposed.end(), req->method) == entry->exposed.end()) {
    if (req->method == "__str__" || req->method == "__repr__") {
      return call_outcome::returned(entry->object->repr());
    }
    return traceback("AttributeError", "method " + quoted(req->method) + " of " + entry->object->repr() +
                                           " is not in exposed=" + exposed_repr(entry->exposed));
  }
  return entry->object->call(req->method, call_args(*req->args, *req->kwds));
}

task<void> manager_server::state::serve_client(connection& conn, std::stop_token stop) {
  std::optional<result<pickle::value>> pending;
  for (;;) {
    std::optional<result<pickle::value>> next = std::move(pending);
    pending.reset();
    if (!next) {
      next.emplace(co_await conn.recv(stop));
    }
    result<pickle::value>& msg = *next;
    if (!msg) {
      if (msg.error().category() != pickle::category()) {
        co_return;  // the client left, the server stops, or the stream broke
      }
      if (!co_await conn.send(reply("#TRACEBACK", traceback("UnpicklingError", conn.unpickle_error()).value))) {
        co_return;
      }
      continue;
    }
    // entry keeps the object alive while a deferred call of it runs.
    std::shared_ptr<const object_entry> entry;
    call_result r = dispatch(*msg, entry);
    call_outcome out;
    if (auto* d = std::get_if<deferred_call>(&r)) {
      bool gone = false;
      out = co_await run_watched(conn, *d, stop, pending, gone);
      if (gone) {
        if (out.what == call_outcome::kind::returned && out.undelivered) {
          out.undelivered(std::move(out.value));
        }
        co_return;
      }
    } else {
      out = std::move(std::get<call_outcome>(r));
    }
    std::string_view kind = reply_kind(out);
    pickle::value message = reply(kind, std::move(out.value));
    // Shielded: a reply is sent even while the server stops (a waiting call's EOFError
    // is sent then); stall_timeout bounds it.
    auto sent = co_await corio::shield(conn.send(message));
    if (!sent) {
      // Not sent, and nothing of it left (the connection stays usable): the reply does not
      // pickle, or its pickle is above the send limit (listen.connection.max_send_size, when
      // set lower than unlimited). As Python's server, the client gets '#UNSERIALIZABLE'
      // (its proxy raises RemoteError) and the value is dropped: given back to a queue it
      // would only fail the same way for every later consumer.
      if (auto t = unsendable_reply(sent.error(), conn.options())) {
        if (co_await conn.send(reply("#UNSERIALIZABLE", std::move(*t)))) {
          continue;
        }
      } else if (out.what == call_outcome::kind::returned && out.undelivered) {
        out.undelivered(std::move((*message.if_tuple())[1]));
      }
      co_return;
    }
    if (stop.stop_requested()) {
      co_return;
    }
  }
}

manager_server::manager_server(std::unique_ptr<state> s) noexcept : m_state(std::move(s)) {}
manager_server::manager_server(manager_server&&) noexcept = default;
manager_server& manager_server::operator=(manager_server&&) noexcept = default;
manager_server::~manager_server() = default;

result<manager_server> manager_server::bind(const socket_address& addr, manager_options options) {
  // max_message_size protects the server from what a client sends; a reply is the server's
  // own, and may well be larger than the request that asked for it (the decoder copies a
  // value the request's pickle memoised: 1 MB of request can be an 8 MB reply). Python's
  // server sends any reply, so unless a send limit was chosen, none applies.
  if (!options.listen.connection.max_send_size) {
    options.listen.connection.max_send_size = std::numeric_limits<std::size_t>::max();
  }
  // Under a millisecond, idle_timeout would drop nearly every client between two of its
  // requests: refused before anything is opened. (A waiting call's watch, watch_peer,
  // receives without it.)
  if (options.listen.connection.idle_timeout < std::chrono::milliseconds(1)) {
    return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  auto l = listener::bind(addr, options.listen);
  if (!l) {
    return unexpected(l.error());
  }
  auto s = std::make_unique<state>();
  s->l = std::move(*l);
  s->options = std::move(options);
  return manager_server(std::move(s));
}

result<socket_address> manager_server::address() const { return m_state->l.address(); }

void manager_server::register_type(std::string type_id, manager_factory factory) {
  m_state->registry[std::move(type_id)] = std::move(factory);
}

void manager_server::register_object(std::string type_id, std::shared_ptr<managed_object> object) {
  register_type(std::move(type_id), [object = std::move(object)](const call_args& args)
                    -> std::variant<std::shared_ptr<managed_object>, call_outcome> {
    if (!args.positional().empty() || !args.keywords().empty()) {
      return call_outcome::raise("TypeError", "<lambda>() takes 0 positional arguments but " +
                                                  std::to_string(args.positional().size() + args.keywords().size()) +
                                                  " were given");
    }
    return object;
  });
}

task<result<void>> manager_server::serve(std::stop_token token) {
  state& s = *m_state;
  std::stop_callback forward(token, [&s] { s.stopper.request_stop(); });
  auto r = co_await s.l.serve(
      [&s](connection conn, std::stop_token stop) { return s.handle(std::move(conn), std::move(stop)); },
      s.stopper.get_token());
  co_return r;
}

void manager_server::stop() noexcept { m_state->stopper.request_stop(); }

manager_stats manager_server::stats() const noexcept {
  return {m_state->waiting.load(std::memory_order_relaxed), m_state->abandoned.load(std::memory_order_relaxed),
          m_state->l.stats()};
}

std::size_t manager_server::number_of_objects() const {
  std::lock_guard g(m_state->table_lock);
  return m_state->table.size();
}

}  // namespace corio::ipc
