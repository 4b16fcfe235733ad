// Internals of ipc/manager_server.cpp (not installed): the wire forms of the managers
// protocol that the server reads and writes (a request tuple checked, reply tuples,
// Python-style tracebacks and reprs), apart from the server's state and loops.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <corio/ipc/connection.hpp>
#include <corio/ipc/manager_object.hpp>
#include <corio/ipc/pickle.hpp>

namespace corio::ipc::detail::manager_wire {

// The request tuple (ident, methodname, args, kwds), checked.
struct request {
  const pickle::value* ident = nullptr;
  std::string_view method;
  const pickle::value::items_type* args = nullptr;
  const pickle::dict* kwds = nullptr;
};

// The request in `v`, or none when it is not a 4-tuple of (any, str, sequence, dict or None).
std::optional<request> parse_request(const pickle::value& v);
// The reply tuple (kind, v).
pickle::value reply(std::string_view kind, pickle::value v);
// repr() of the str `s`, as Python quotes it.
std::string quoted(std::string_view s);
// An object's ident: its address in hex, as Python's id() in '%x'.
std::string ident_of(const managed_object* p);
// repr() of the tuple of `names`.
std::string exposed_repr(const std::vector<std::string>& names);
// A server request's one argument: a str (an ident) and no keywords; else none.
std::optional<std::string_view> ident_argument(const call_args& args);
// A '#TRACEBACK' outcome for KeyError(key), and for `type: message`.
call_outcome key_error(std::string_view key);
call_outcome traceback(std::string_view type, std::string_view message);
// The text of the '#UNSERIALIZABLE' reply that replaces a reply whose send failed with
// `error` before anything of it left; none for an error that ended the connection.
std::optional<std::string> unsendable_reply(std::error_code error, const connection_options& options);
// The reply's kind for an outcome; a cancelled call (the server stopped) becomes EOFError.
std::string_view reply_kind(call_outcome& out);

}  // namespace corio::ipc::detail::manager_wire
