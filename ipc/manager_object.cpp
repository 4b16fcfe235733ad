// Holds call_args::bind (Python's argument binding and its TypeError messages),
// exposed_object (methods from C++ callables) and managed_dict (a read-only shared dict).
#include <corio/ipc/manager_object.hpp>

#include <exception>

namespace corio::ipc {

namespace {

std::string plural(std::size_t n, std::string_view one, std::string_view many) {
  std::string s = std::to_string(n);
  s += ' ';
  s += n == 1 ? one : many;
  return s;
}

call_outcome type_error(std::string message) { return call_outcome::raise("TypeError", message); }

// Python's TypeError for a call with more positional arguments than parameters.
call_outcome too_many_positional(const std::string& fname, std::initializer_list<parameter> params,
                                 std::size_t given) {
  std::size_t required = 0;
  for (const parameter& p : params) {
    required += p.default_value ? 0 : 1;
  }
  std::string m = fname;
  m += " takes ";
  if (required == params.size()) {
    m += plural(params.size(), "positional argument", "positional arguments");
  } else {
    m += "from ";
    m += std::to_string(required);
    m += " to ";
    m += plural(params.size(), "positional argument", "positional arguments");
  }
  m += " but ";
  m += std::to_string(given);
  m += given == 1 ? " was given" : " were given";
  return type_error(std::move(m));
}

// Binds each keyword argument to its parameter's slot in `bound`; the TypeError Python
// would raise for a keyword that is not a string, unknown, or already bound.
std::optional<call_outcome> bind_keywords(const std::string& fname, const pickle::dict& kwds,
                                          std::initializer_list<parameter> params,
                                          std::vector<std::optional<pickle::value>>& bound) {
  for (const auto& e : kwds) {
    const std::string* key = e.key.if_str();
    if (key == nullptr) {
      return type_error(fname + " keywords must be strings");
    }
    std::size_t i = 0;
    for (const parameter& p : params) {
      if (p.name == *key) {
        break;
      }
      ++i;
    }
    if (i == params.size()) {
      std::string m = fname;
      m += " got an unexpected keyword argument '";
      m += *key;
      m += "'";
      return type_error(std::move(m));
    }
    if (bound[i]) {
      std::string m = fname;
      m += " got multiple values for argument '";
      m += *key;
      m += "'";
      return type_error(std::move(m));
    }
    bound[i] = e.mapped;
  }
  return std::nullopt;
}

}  // namespace

std::variant<std::vector<pickle::value>, call_outcome> call_args::bind(std::string_view function,
                                                                       std::initializer_list<parameter> params) const {
  const auto& pos = *m_args;
  std::string fname(function);
  fname += "()";
  if (pos.size() > params.size()) {
    return too_many_positional(fname, params, pos.size());
  }
  std::vector<std::optional<pickle::value>> bound(params.size());
  for (std::size_t i = 0; i < pos.size(); ++i) {
    bound[i] = pos[i];
  }
  if (auto error = bind_keywords(fname, *m_kwds, params, bound)) {
    return std::move(*error);
  }
  std::vector<pickle::value> out;
  out.reserve(params.size());
  std::size_t i = 0;
  for (const parameter& p : params) {
    if (!bound[i]) {
      if (!p.default_value) {
        std::string m = fname;
        m += " missing 1 required positional argument: '";
        m += p.name;
        m += "'";
        return type_error(std::move(m));
      }
      bound[i] = *p.default_value;
    }
    out.push_back(std::move(*bound[i]));
    ++i;
  }
  return out;
}

exposed_object& exposed_object::def(std::string name, method m) {
  for (auto& [n, fn] : m_methods) {
    if (n == name) {
      fn = std::move(m);
      return *this;
    }
  }
  m_methods.emplace_back(std::move(name), std::move(m));
  return *this;
}

std::vector<std::string> exposed_object::exposed() const {
  std::vector<std::string> names;
  names.reserve(m_methods.size());
  for (const auto& entry : m_methods) {
    names.push_back(entry.first);
  }
  return names;
}

call_result exposed_object::call(std::string_view name, const call_args& args) {
  for (auto& [n, fn] : m_methods) {
    if (n == name) {
      try {
        return fn(args);
      } catch (const std::exception& e) {
        return call_outcome::raise("RuntimeError", e.what());
      } catch (...) {
        return call_outcome::raise("RuntimeError", "unknown C++ exception");
      }
    }
  }
  std::string m = "'";
  m += m_type_name;
  m += "' object has no attribute '";
  m += name;
  m += "'";
  return call_outcome::raise("AttributeError", m);
}

std::string exposed_object::repr() const {
  std::string s = "<";
  s += m_type_name;
  s += " object>";
  return s;
}

std::vector<std::string> managed_dict::exposed() const { return {"copy", "get", "items", "keys", "values"}; }

call_result managed_dict::call(std::string_view method, const call_args& args) {
  std::string fname(method);
  fname += "()";
  if (!args.keywords().empty()) {
    return type_error(fname + " takes no keyword arguments");
  }
  const auto& pos = args.positional();
  if (method == "get") {
    if (pos.empty() || pos.size() > 2) {
      std::string m = "get expected at ";
      m += pos.empty() ? "least 1 argument, got 0" : "most 2 arguments, got " + std::to_string(pos.size());
      return type_error(std::move(m));
    }
    if (!pos[0].hashable()) {
      std::string m = "unhashable type: '";
      m += pos[0].type_name();
      m += "'";
      return type_error(std::move(m));
    }
    const pickle::value* v = m_dict.find(pos[0]);
    if (v != nullptr) {
      return call_outcome::returned(*v);
    }
    return call_outcome::returned(pos.size() == 2 ? pos[1] : pickle::value());
  }
  if (!pos.empty()) {
    std::string m = fname;
    m += " takes no arguments (";
    m += std::to_string(pos.size());
    m += " given)";
    return type_error(std::move(m));
  }
  if (method == "copy") {
    return call_outcome::returned(pickle::value(m_dict));
  }
  pickle::value::items_type out;
  out.reserve(m_dict.size());
  for (const auto& e : m_dict) {
    if (method == "keys") {
      out.push_back(e.key);
    } else if (method == "values") {
      out.push_back(e.mapped);
    } else {
      out.push_back(pickle::value::tuple_of(e.key, e.mapped));
    }
  }
  return call_outcome::returned(pickle::value::make_list(std::move(out)));
}

std::string managed_dict::repr() const { return pickle::value(m_dict).repr(); }

}  // namespace corio::ipc
