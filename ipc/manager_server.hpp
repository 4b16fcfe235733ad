// corio::ipc::manager_server: serves shared objects to Python's unmodified
// multiprocessing.managers clients (BaseManager/SyncManager.connect() and their proxies),
// speaking the request protocol of Python's managers.Server.
//
// Concept: C++ code registers typeids (register_type), each with a factory that returns a
// managed_object (ipc/manager_object.hpp: queues, dicts, objects whose methods are C++
// callables). A Python client that did `Manager.register('GetQueue')` and `connect()`
// calls `manager.GetQueue(args)`: the server runs the factory, keeps the object under an
// ident and answers (ident, exposed); the client's proxy then calls the object's methods.
// On the wire (ipc/connection.hpp, after Python's authkey handshake), each request is
// the pickle of (ident, methodname, args, kwds) and each reply ('#RETURN', value),
// ('#ERROR', exception), ('#TRACEBACK', text) or ('#UNSERIALIZABLE', text).
// Server requests (ident None), one per connection: dummy (connect()), create, incref,
// decref, get_methods, number_of_objects, debug_info, shutdown, and accept_connection,
// after which the connection carries a proxy's method calls until the client leaves.
// debug_info answers, as Python's, a line pair per object (ident, refcount, repr), then
// the line "  waiting calls: N, abandoned: M" (stats(), for clients and their tests).
// Errors go back as Python's server sends them: an unknown typeid, ident or request, a
// method not in `exposed`, or any failed server call (a factory's exception too: create()
// with bad arguments), as '#TRACEBACK' (the client raises RemoteError); an exception of an
// object's method (a TypeError for wrong arguments, queue.Empty, ...) as '#ERROR'. A
// request that does not decode (a class outside the pickle allow-list, e.g. a proxy's
// RebuildProxy) gets '#TRACEBACK' naming the reason; the connection goes on.
// Sizes: listen.connection.max_message_size (4 MiB) bounds what a client may send; replies
// are not bounded by it, as Python's server bounds none (a reply can be far larger than
// its request: the decoder copies what the request's pickle shared through its memo).
// bind() leaves listen.connection.max_send_size unlimited unless it is set; a reply that
// does not pickle, or whose pickle is above a max_send_size set lower, is answered with
// '#UNSERIALIZABLE' saying why (Python's proxy raises RemoteError), its value is dropped
// (a queue's item is not put back: every later consumer would fail on it too), and the
// connection goes on.
// Lifetime of objects: as in Python, reference counts (create, incref, decref) keep an
// object in the server's table; at zero it is dropped (the object itself lives on while
// anything else, e.g. the registering C++ code, holds it). A call that waits (a blocking
// get) runs as a coroutine; it is stopped when its client disconnects (nothing is taken
// from a queue for a client that is gone) or the server stops; waiting clients then get
// ('#ERROR', EOFError) rather than a hang.
// Not supported (errors, never crashes): '#GETVALUE', method_to_typeid ('#PROXY'
// replies), the xmlrpclib serializer, proxies sent as arguments.
// Thread-safety: register_type before serve(); serve() once at a time; number_of_objects,
// stats and stop from any thread. Connections are served on any workers concurrently.
// Cost: per connection one task (ipc::listener::serve); per call one table lookup under a
// mutex (a few hundred nanoseconds), the method, one pickled reply; a waiting call adds a
// task that watches the connection for the client leaving.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <variant>

#include <corio/ipc/address.hpp>
#include <corio/ipc/listener.hpp>
#include <corio/ipc/manager_object.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// Settings of a manager_server.
struct manager_options {
  /// authkey (Python's authkey; none: no handshake), connection limits. max_connections
  /// counts every open proxy connection (a Python client holds one per thread and object
  /// manager, plus short ones for create/incref/decref). connection.idle_timeout, if set,
  /// drops a connection whose client sends no request for that long; the time a call
  /// waits (a blocking get: the server owes the reply) does not count. It must be at
  /// least 1 ms (bind() refuses less).
  listener_options listen = default_listen();
  /// How long a new connection may take to send its first request after the handshake.
  std::chrono::nanoseconds first_request_timeout = std::chrono::seconds(30);
  /// Whether a client's 'shutdown' request stops serve() (Python's server obeys it).
  bool allow_shutdown = true;
  /// When set, an allowed 'shutdown' request calls this (on the worker serving that
  /// client, after its reply) instead of stopping serve(): for a program that runs
  /// several servers and stops them its own way, e.g. a graceful stop that lets clients
  /// still collect (examples/job_server). It must not block; stop() may be called from it.
  std::function<void()> on_shutdown;

  /// The listener defaults of a manager: 16,384 connections, a 10 s handshake.
  static listener_options default_listen() {
    listener_options o;
    o.max_connections = 16384;
    o.auth.timeout = std::chrono::seconds(10);
    return o;
  }
};

/// Counts of a manager_server (relaxed snapshots, each field read on its own).
struct manager_stats {
  std::uint64_t waiting = 0;    ///< calls waiting now (a blocking get, put)
  std::uint64_t abandoned = 0;  ///< waiting calls stopped because their client left
  /// Its listener's stats (ipc/listener.hpp, listener_stats): connections accepted and
  /// handshakes, the connections served now (in_use) against listen.max_connections
  /// (limit, while serve() runs), how often it reached that limit (limit_waits), accepts
  /// refused for lack of descriptors (shortages), and clients waiting in the accept queue
  /// (queued, TCP). A connection is any client's: a proxy's, or a short one for create,
  /// incref or decref.
  listener_stats connections;
};

/// A typeid's factory: given create's arguments (after the typeid), the object to share,
/// or an outcome to send instead (e.g. call_outcome::raise("TypeError", ...)).
using manager_factory = std::function<std::variant<std::shared_ptr<managed_object>, call_outcome>(const call_args&)>;

/// A server for Python's manager clients (see the header comment). Move-only.
class manager_server {
 public:
  /// Moves the server (not while serve() runs).
  manager_server(manager_server&&) noexcept;
  /// Moves the server (not while serve() runs).
  manager_server& operator=(manager_server&&) noexcept;
  ~manager_server();

  /// Binds and listens (TCP: port 0 picks one; or a Unix address). Errors: those of
  /// ipc::listener::bind, and std::errc::invalid_argument for a
  /// listen.connection.idle_timeout under 1 ms (nothing is opened).
  [[nodiscard]] static result<manager_server> bind(const socket_address& addr, manager_options options = {});
  /// The bound address.
  [[nodiscard]] result<socket_address> address() const;

  /// Registers `type_id` (Python's Manager.register name). Replaces an earlier one.
  void register_type(std::string type_id, manager_factory factory);
  /// Registers `type_id` as always giving `object` (Python's `callable=lambda: obj`).
  void register_object(std::string type_id, std::shared_ptr<managed_object> object);

  /// Serves until `token` is stopped, stop() is called or a client sends 'shutdown' (when
  /// allowed, and no on_shutdown is set); then stops every connection (waiting calls
  /// answer an EOFError) and returns. A stopped server stays stopped (a later serve()
  /// returns at once). Errors: only when accepting fails for good.
  [[nodiscard]] task<result<void>> serve(std::stop_token token = {});
  /// Stops a running serve() as its token would (any thread).
  void stop() noexcept;

  /// Objects with a reference count above zero (Python's number_of_objects()).
  [[nodiscard]] std::size_t number_of_objects() const;
  /// Waiting and abandoned calls, and the connections' stats (any thread).
  [[nodiscard]] manager_stats stats() const noexcept;

 private:
  struct state;
  explicit manager_server(std::unique_ptr<state> s) noexcept;
  std::unique_ptr<state> m_state;
};

}  // namespace corio::ipc
