// corio::ipc::manager_client and manager_proxy: the client side of Python's
// multiprocessing.managers protocol, for corio tasks: talks to Python's own
// BaseManager/SyncManager servers and to ipc::manager_server (ipc/manager_server.hpp).
//
// Concept: manager_client is Python's `Manager(address, authkey).connect()`: it holds the
// address and key and sends server requests, each on a connection of its own as Python
// does (request() for 'dummy', 'number_of_objects', ...). create(typeid, args) is
// `manager.TypeId(*args)`: the server makes the object and the client gets a
// manager_proxy, which holds one connection (Python's per-thread proxy connection, after
// 'accept_connection') and the object's reference. proxy.call("get", args, kwds) is
// `proxy.get(*args, **kwds)`: it yields the reply: ('#RETURN', value) as
// manager_reply::returned, an exception ('#ERROR') as raised with the exception object
// (pickle::object: e.g. queue.Empty), a '#TRACEBACK' as traceback with its text.
// Positional arguments are a pickle::value::items_type: pickle::value::items_of(a, b, ...)
// converts C++ values in place (`q.call("put", pickle::value::items_of(job))`).
// release() drops the proxy's reference (Python's decref when a proxy is collected); a
// proxy destroyed without release() leaves the reference on the server, as a Python
// client that was killed does.
// Errors (result): connecting or authenticating (ipc/client.hpp), the connection breaking,
// errc::protocol_error for a reply that is not (kind, value) (or, to create, not (ident,
// exposed): one that still names an object, ('#RETURN', (ident, ...)), has that object
// dropped again, by a decref as below); create() refused by the server (unknown typeid, bad arguments) is
// std::errc::invalid_argument, with the server's reply in *refusal when given.
// Thread-safety: a manager_client may be used by any number of tasks at once (every
// request opens its own connection). A manager_proxy serialises its calls (a corio::mutex:
// one request on its connection at a time); give each concurrent task its own proxy (as
// Python gives each thread its own connection) for calls that wait at the same time.
// Cost: create = two connections with a handshake each (the create request, then the
// proxy's own, opened with accept_connection; the create's reference becomes the
// proxy's, where Python sends an incref and a decref), and a task that receives the
// create's reply; a call = one request and one reply
// on the proxy's connection.
// Cancellation: every call takes a std::stop_token and honours the inherited one; a call
// stopped while waiting for its reply, or whose wait for it failed in any other way (the
// connection's idle_timeout: errc::timed_out), closes the proxy's connection (the reply
// would arrive out of step): later calls fail with errc::closed. A reply that arrived
// whole leaves the connection open even when it is an error: one that does not decode
// (pickle::errc) or is not of the expected shape (errc::protocol_error), as does a
// request refused before it was sent (message_size, a value that cannot be pickled).
// A '#PROXY' reply (Python's server answers so for a method that returns a new shared
// object, e.g. dict.__iter__ or Pool.apply_async) is errc::protocol_error: proxies made
// by a reply are not supported, and the object the server made for it is dropped again.
// Three decrefs are exempt from cancellation, as they only clean up and a stopped one
// would leave the object on the server for good: the one create() sends when it fails
// after the server made the object (the proxy's connection failed or was stopped, or the
// reply was malformed), the one for a '#PROXY' reply's object, and release()'s once the
// proxy's connection is closed. Each runs to its end despite a stop (corio::shield), on a
// connection of its own, within 10 s (past that errc::timed_out, and the reference stays:
// a server that accepts but never answers cannot hang the caller; a join_handle::abort()
// of the caller may wait that long). A create() stopped (or timed out by the connection's
// idle_timeout) while it waits for its reply returns at once and leaves a task behind
// that waits for the reply (within the same 10 s) and drops the object the server went on
// to make; the reply is received by a task of its own that no stop of the create cuts
// short, even in the middle of its bytes. The object stays when the runtime shuts down
// within that wait, or when there is no memory for that task (the reply's receive is then
// ended at once and its connection closed: nothing is left running).
// Large replies: a reply is received under client_options.connection.max_message_size
// (4 MiB by default), while a manager_server sends replies of any size: raise it where
// items can be larger, or such a get fails with message_size and the connection closes
// (the server then gives the item back, or loses it if the reply had already left).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include <corio/ipc/address.hpp>
#include <corio/ipc/client.hpp>
#include <corio/ipc/connection.hpp>
#include <corio/ipc/pickle.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/sync/mutex.hpp>

namespace corio::ipc {

/// One reply of a manager server.
struct manager_reply {
  /// \#RETURN, \#ERROR, \#TRACEBACK or \#UNSERIALIZABLE.
  enum class kind { returned, raised, traceback, unserializable };
  kind what = kind::returned;  ///< the reply's kind
  pickle::value value;         ///< the value, the exception object, or the text

  /// True for a returned value.
  [[nodiscard]] bool ok() const noexcept { return what == kind::returned; }
  /// True when the server raised the exception `module.name` (e.g. "queue", "Empty";
  /// Python 3.7+ sends queue.Empty as _queue.Empty: both names match).
  [[nodiscard]] bool raised(std::string_view module, std::string_view name) const noexcept;
};

class manager_client;

/// A proxy for one object on a manager server (see the header comment). Move-only.
class manager_proxy {
 public:
  /// An empty proxy (every call fails with errc::closed).
  manager_proxy() = default;
  /// Moves the proxy (not while a call on it runs).
  manager_proxy(manager_proxy&&) noexcept = default;
  /// Moves the proxy (not while a call on it runs).
  manager_proxy& operator=(manager_proxy&&) noexcept = default;

  /// The object's ident on the server.
  [[nodiscard]] const std::string& ident() const noexcept { return m_ident; }
  /// The methods the server exposes for it.
  [[nodiscard]] const std::vector<std::string>& exposed() const noexcept { return m_exposed; }
  /// Calls `method` with positional `args` and keyword `kwds` (Python's _callmethod).
  [[nodiscard]] task<result<manager_reply>> call(std::string method, pickle::value::items_type args = {},
                                                 pickle::dict kwds = {}, std::stop_token token = {});
  /// Drops this proxy's reference on the server (decref) and closes its connection. A
  /// stop ends only the wait for a call still running on the proxy (operation_canceled,
  /// the proxy unchanged); once the connection is closed, the decref runs to its end
  /// despite a stop (within 10 s, see the header comment) and its outcome is returned;
  /// later calls and releases then fail with errc::closed either way, and so do calls of
  /// other tasks that were waiting for the proxy when the release took it.
  [[nodiscard]] task<result<void>> release(std::stop_token token = {});

 private:
  friend class manager_client;
  struct channel;
  std::shared_ptr<channel> m_channel;  // the connection and the lock that serialises calls
  std::string m_ident;
  std::vector<std::string> m_exposed;
  socket_address m_address;
  client_options m_options;
};

/// A connection point to a manager server (see the header comment). Copyable.
class manager_client {
 public:
  /// Checks that a server answers at `addr` with key `authkey` ('dummy', as connect()).
  [[nodiscard]] static task<result<manager_client>> connect(socket_address addr, std::string authkey,
                                                            std::stop_token token = {});
  /// The same with every client option (timeouts, limits, digest).
  [[nodiscard]] static task<result<manager_client>> connect(socket_address addr, client_options options,
                                                            std::stop_token token = {});

  /// One server request (ident None) on a new connection: "dummy", "number_of_objects",
  /// "debug_info", "incref", "decref", "shutdown", ...
  [[nodiscard]] task<result<manager_reply>> request(std::string method, pickle::value::items_type args = {},
                                                    pickle::dict kwds = {}, std::stop_token token = {}) const;
  /// `manager.TypeId(*args, **kwds)`: creates the object and yields its proxy. When
  /// the server refuses (std::errc::invalid_argument), its reply goes to *refusal if given.
  /// Failing (or stopped) after the server made the object, while opening the proxy's
  /// connection, it drops the create's reference with a decref that a stop cannot cancel
  /// (within 10 s, see the header comment), then returns that failure.
  [[nodiscard]] task<result<manager_proxy>> create(std::string type_id, pickle::value::items_type args = {},
                                                   pickle::dict kwds = {}, manager_reply* refusal = nullptr,
                                                   std::stop_token token = {}) const;
  /// The server's address.
  [[nodiscard]] const socket_address& address() const noexcept { return m_address; }

 private:
  socket_address m_address;
  client_options m_options;
};

}  // namespace corio::ipc
