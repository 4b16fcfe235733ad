// corio::ipc::managed_object: an object that a manager_server (ipc/manager_server.hpp)
// shares with Python's multiprocessing.managers proxies, and the pieces of one call.
//
// Concept: a Python client holds a proxy (AutoProxy, or its own BaseProxy subclass) for
// an object on the server and calls its methods by name: `proxy.put(x)` arrives as
// (ident, "put", (x,), {}). A managed_object names the methods it exposes (Python's
// `exposed`), runs one call given its positional and keyword arguments (call_args), and
// answers with a call_outcome: a value ('#RETURN'), a Python exception ('#ERROR', raised
// again in the client), or a traceback text ('#TRACEBACK', a RemoteError in the client).
// A call that has to wait (a blocking queue get) returns a deferred_call instead: the
// server runs it as a coroutine and stops it (the token) when the client disconnects or
// the server shuts down, so no worker thread ever waits for it.
// Provided here: exposed_object (methods from C++ callables; any callable taking and
// returning pickle values) and managed_dict (a read-only dict, what a Python function
// returning a dict would give a client). ipc/manager_queue.hpp holds the queue.
// call_args::bind checks arguments the way Python does (too many, missing, unexpected or
// duplicate keyword: a TypeError with Python's wording).
// Thread-safety: a managed_object's call() may run on several workers at once (one per
// client connection): implementations guard their state (exposed_object's callables must
// be thread-safe themselves; managed_dict is immutable).
// Cost: a call is one virtual call plus the callable; exposed() is read once per create.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <corio/ipc/pickle.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// The answer to one call, as the manager protocol sends it.
struct call_outcome {
  /// Which reply the outcome is.
  enum class kind {
    returned,   ///< ('\#RETURN', value)
    raised,     ///< ('\#ERROR', value): value is an exception object the client raises
    traceback,  ///< ('\#TRACEBACK', value): value is a str; the client raises RemoteError
    cancelled,  ///< the call was stopped (client gone or server stopping); the server answers
  };
  kind what = kind::returned;  ///< the reply's kind
  pickle::value value;         ///< the value, the exception object or the traceback text
  /// Called with `value` (moved) when a returned value could not be delivered because the
  /// client had gone: an object that handed out something (a queue item) takes it back.
  /// May be empty.
  std::function<void(pickle::value)> undelivered;

  /// ('\#RETURN', v).
  static call_outcome returned(pickle::value v) { return {kind::returned, std::move(v), {}}; }
  /// ('\#ERROR', exception), e.g. raised(pickle::builtin_exception("ValueError", "bad")).
  static call_outcome raised(pickle::value exception) { return {kind::raised, std::move(exception), {}}; }
  /// ('\#ERROR', builtins.TYPE(message)).
  static call_outcome raise(std::string_view type, std::string_view message) {
    return raised(pickle::builtin_exception(type, message));
  }
  /// ('\#TRACEBACK', text).
  static call_outcome failed(std::string text) { return {kind::traceback, pickle::value(std::move(text)), {}}; }
  /// A call stopped before it had a result.
  static call_outcome stopped() { return {kind::cancelled, {}, {}}; }
};

/// One parameter of a Python-style signature: its name and, if optional, its default.
struct parameter {
  std::string_view name;                       ///< the parameter's name (for keywords and messages)
  std::optional<pickle::value> default_value;  ///< nullopt: required
};

/// The arguments of one call: positional (a tuple) and keyword (a dict of str keys).
/// Refers to the request; valid during call() only.
class call_args {
 public:
  /// Refers to `args` and `kwds` (which must outlive this object).
  call_args(const pickle::value::items_type& args, const pickle::dict& kwds) noexcept
      : m_args(&args), m_kwds(&kwds) {}
  /// The positional arguments.
  [[nodiscard]] const pickle::value::items_type& positional() const noexcept { return *m_args; }
  /// The keyword arguments (str keys).
  [[nodiscard]] const pickle::dict& keywords() const noexcept { return *m_kwds; }

  /// Matches the arguments to `params` as Python binds them to `function`'s signature:
  /// positional first, then keywords by name, then defaults. Yields one value per
  /// parameter, or the TypeError Python would raise (as a call_outcome to return).
  [[nodiscard]] std::variant<std::vector<pickle::value>, call_outcome> bind(
      std::string_view function, std::initializer_list<parameter> params) const;

 private:
  const pickle::value::items_type* m_args;
  const pickle::dict* m_kwds;
};

/// A call that waits: run(stop) is awaited by the server; `stop` is requested when the
/// client disconnects or the server stops, and run should then end soon with
/// call_outcome::stopped() (or with a result it already had).
struct deferred_call {
  /// Starts the wait; `stop` ends it early.
  std::function<task<call_outcome>(std::stop_token stop)> run;
};

/// What call() gives: an outcome now, or a call to await.
using call_result = std::variant<call_outcome, deferred_call>;

/// An object shared through a manager_server (see the header comment).
class managed_object {
 public:
  managed_object() = default;
  managed_object(const managed_object&) = delete;
  managed_object& operator=(const managed_object&) = delete;
  virtual ~managed_object() = default;

  /// The methods clients may call, in the order sent to them (create's `exposed`).
  [[nodiscard]] virtual std::vector<std::string> exposed() const = 0;
  /// Runs method `method` (the server has checked it is exposed). Must not block.
  [[nodiscard]] virtual call_result call(std::string_view method, const call_args& args) = 0;
  /// Python's repr() of the object (a proxy's str() and repr() on the client).
  [[nodiscard]] virtual std::string repr() const = 0;
};

/// A managed_object whose methods are C++ callables (see the header comment).
class exposed_object : public managed_object {
 public:
  /// One method: takes the call's arguments, answers an outcome. An exception it throws
  /// becomes ('\#ERROR', RuntimeError(what())) for that call only.
  using method = std::function<call_outcome(const call_args&)>;

  /// `type_name` is what repr() shows: "<type_name object>".
  explicit exposed_object(std::string type_name) : m_type_name(std::move(type_name)) {}
  /// Adds (or replaces) method `name`. Not while the object is being served.
  exposed_object& def(std::string name, method m);

  [[nodiscard]] std::vector<std::string> exposed() const override;
  [[nodiscard]] call_result call(std::string_view method, const call_args& args) override;
  [[nodiscard]] std::string repr() const override;

 private:
  std::string m_type_name;
  std::vector<std::pair<std::string, method>> m_methods;
};

/// A read-only dict as Python's manager would share one: get(key, default=None), keys(),
/// values(), items(), copy() (keys(), values(), items() come back as lists).
class managed_dict : public managed_object {
 public:
  /// Shares `d` (a copy, never changed).
  explicit managed_dict(pickle::dict d) : m_dict(std::move(d)) {}
  /// The dict.
  [[nodiscard]] const pickle::dict& dict() const noexcept { return m_dict; }

  [[nodiscard]] std::vector<std::string> exposed() const override;
  [[nodiscard]] call_result call(std::string_view method, const call_args& args) override;
  [[nodiscard]] std::string repr() const override;

 private:
  pickle::dict m_dict;
};

}  // namespace corio::ipc
