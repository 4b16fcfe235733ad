// The wire forms of ipc/manager_server.cpp's protocol (ipc/manager_server_wire.hpp).
#include "manager_server_wire.hpp"

#include <cstdint>
#include <cstdio>
#include <utility>

namespace corio::ipc::detail::manager_wire {

namespace {

const pickle::dict& empty_dict() {
  static const pickle::dict d;
  return d;
}

}  // namespace

std::optional<request> parse_request(const pickle::value& v) {
  const auto* items = v.if_tuple();
  if (items == nullptr || items->size() != 4) {
    return std::nullopt;
  }
  request r;
  r.ident = &(*items)[0];
  const std::string* m = (*items)[1].if_str();
  r.args = (*items)[2].if_sequence();
  const pickle::value& kw = (*items)[3];
  r.kwds = kw.is_none() ? &empty_dict() : kw.if_dict();
  if (m == nullptr || r.args == nullptr || r.kwds == nullptr) {
    return std::nullopt;
  }
  r.method = *m;
  return r;
}

pickle::value reply(std::string_view kind, pickle::value v) { return pickle::value::tuple_of(kind, std::move(v)); }

std::string quoted(std::string_view s) { return pickle::value(s).repr(); }

std::string ident_of(const managed_object* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%zx", reinterpret_cast<std::uintptr_t>(p));
  return buf;
}

std::string exposed_repr(const std::vector<std::string>& names) {
  pickle::value::items_type items(names.begin(), names.end());
  return pickle::value::make_tuple(std::move(items)).repr();
}

std::optional<std::string_view> ident_argument(const call_args& args) {
  if (args.positional().size() != 1 || !args.keywords().empty() || !args.positional()[0].is_str()) {
    return std::nullopt;
  }
  return std::string_view(*args.positional()[0].if_str());
}

call_outcome key_error(std::string_view key) {
  std::string t = "Traceback (most recent call last):\nKeyError: ";
  t += quoted(key);
  t += '\n';
  return call_outcome::failed(std::move(t));
}

call_outcome traceback(std::string_view type, std::string_view message) {
  std::string t = "Traceback (most recent call last):\n";
  t += type;
  if (!message.empty()) {  // as Python prints an exception whose str() is empty: the type alone
    t += ": ";
    t += message;
  }
  t += '\n';
  return call_outcome::failed(std::move(t));
}

std::optional<std::string> unsendable_reply(std::error_code error, const connection_options& options) {
  std::string t = "Traceback (most recent call last):\n";
  if (error.category() == pickle::category()) {
    t += "pickle.PicklingError: the reply could not be pickled: ";
    t += error.message();
  } else if (error == errc::message_size) {
    t += "ValueError: the pickled reply is larger than the server's send limit of ";
    t += std::to_string(options.max_send_size.value_or(options.max_message_size));
    t += " bytes (listen.connection.max_send_size); the value was dropped";
  } else {
    return std::nullopt;
  }
  return t;
}

std::string_view reply_kind(call_outcome& out) {
  switch (out.what) {
    case call_outcome::kind::returned: return "#RETURN";
    case call_outcome::kind::raised: return "#ERROR";
    case call_outcome::kind::traceback: return "#TRACEBACK";
    case call_outcome::kind::cancelled:
      out.value = pickle::builtin_exception("EOFError", "the manager server stopped while this call waited");
      return "#ERROR";
  }
  return "#RETURN";
}

}  // namespace corio::ipc::detail::manager_wire
