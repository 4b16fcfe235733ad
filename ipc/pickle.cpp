// corio::ipc::pickle's value type: the error category, type names, value's storage and
// accessors, the allow-list and the exception helpers. Elsewhere: big_int in
// pickle_big_int.cpp, equality and hashing in pickle_equality.cpp, dict and set in
// pickle_containers.cpp, repr in pickle_repr.cpp; the decoder in pickle_reader*.cpp, the
// encoder in pickle_writer.cpp.
#include <corio/ipc/pickle.hpp>

#include <string>

#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

namespace {

class category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "corio.pickle"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::truncated: return "pickle data truncated";
      case errc::unknown_opcode: return "unknown pickle opcode";
      case errc::unsupported_opcode: return "pickle opcode not supported (persistent id, extension or out-of-band buffer)";
      case errc::unsupported_protocol: return "unsupported pickle protocol";
      case errc::forbidden_class: return "pickle names a class or function outside the allow-list";
      case errc::malformed: return "malformed pickle";
      case errc::missing_memo: return "pickle refers to a memo entry that was never stored";
      case errc::memo_too_large: return "pickle memo index above the limit";
      case errc::too_deep: return "pickle nesting deeper than the limit";
      case errc::too_large: return "pickle larger than the limit";
      case errc::recursive: return "self-referencing pickle structure (not supported)";
      case errc::unhashable: return "unhashable dict key or set element";
      case errc::invalid_string: return "str is not valid UTF-8";
      case errc::trailing_data: return "data after the pickle's STOP opcode";
      case errc::type_mismatch: return "pickle value has another type";
      case errc::out_of_range: return "pickle number out of range for the requested type";
    }
    return "unknown pickle error";
  }
};

}  // namespace

const std::error_category& category() noexcept {
  static const category_impl c;
  return c;
}

std::string_view type_name(kind k) noexcept {
  switch (k) {
    case kind::none: return "NoneType";
    case kind::boolean: return "bool";
    case kind::integer:
    case kind::big_integer: return "int";
    case kind::floating: return "float";
    case kind::str: return "str";
    case kind::bytes: return "bytes";
    case kind::bytearray: return "bytearray";
    case kind::tuple: return "tuple";
    case kind::list: return "list";
    case kind::dict: return "dict";
    case kind::set: return "set";
    case kind::frozenset: return "frozenset";
    case kind::object: return "object";
  }
  return "?";
}

// ---- value ----

void value::destroy_contents() noexcept {
  switch (m_kind) {
    case kind::big_integer: m_big.~big_int(); break;
    case kind::str:
    case kind::bytes:
    case kind::bytearray: m_text.~basic_string(); break;
    case kind::tuple:
    case kind::list: m_items.~items_type(); break;
    case kind::dict: m_dict.~box(); break;
    case kind::set:
    case kind::frozenset: m_set.~box(); break;
    case kind::object: m_object.~box(); break;
    default: break;  // the scalars own nothing
  }
}

value::value(big_int b) : m_int(0) {
  if (auto small = b.to_int64()) {
    m_kind = kind::integer;
    m_int = *small;
  } else {
    new (&m_big) big_int(std::move(b));
    m_kind = kind::big_integer;
  }
}

value::value(dict d) : m_kind(kind::dict), m_dict(std::move(d)) {}
value::value(object o) : m_kind(kind::object), m_object(std::move(o)) {}

value value::make_bytes(std::string_view data) { return value(kind::bytes, data); }
value value::make_bytes(std::span<const std::byte> data) {
  return value(kind::bytes, std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
}
value value::make_bytearray(std::string_view data) { return value(kind::bytearray, data); }
value value::make_bytearray(std::span<const std::byte> data) {
  return value(kind::bytearray, std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
}

value value::make_dict(std::initializer_list<std::pair<value, value>> pairs) { return value(dict(pairs)); }

value::value(set s) : m_kind(kind::set), m_set(std::move(s)) {}

value value::make_frozenset(set s) {
  value v(std::move(s));
  v.m_kind = kind::frozenset;
  return v;
}

const std::string* value::if_bytes() const noexcept {
  return m_kind == kind::bytes || m_kind == kind::bytearray ? &m_text : nullptr;
}

std::string* value::if_bytes() noexcept { return m_kind == kind::bytes || m_kind == kind::bytearray ? &m_text : nullptr; }

const value::items_type* value::if_sequence() const noexcept {
  return m_kind == kind::tuple || m_kind == kind::list ? &m_items : nullptr;
}

const dict* value::if_dict() const noexcept { return m_kind == kind::dict ? &*m_dict : nullptr; }
dict* value::if_dict() noexcept { return m_kind == kind::dict ? &*m_dict : nullptr; }

const set* value::if_set() const noexcept {
  return m_kind == kind::set || m_kind == kind::frozenset ? &*m_set : nullptr;
}

set* value::if_set() noexcept { return m_kind == kind::set || m_kind == kind::frozenset ? &*m_set : nullptr; }

const object* value::if_object() const noexcept { return m_kind == kind::object ? &*m_object : nullptr; }
object* value::if_object() noexcept { return m_kind == kind::object ? &*m_object : nullptr; }

const big_int* value::if_big_int() const noexcept { return m_kind == kind::big_integer ? &m_big : nullptr; }

std::size_t value::size() const noexcept {
  switch (type()) {
    case kind::str: return if_str()->size();
    case kind::bytes:
    case kind::bytearray: return if_bytes()->size();
    case kind::tuple:
    case kind::list: return if_sequence()->size();
    case kind::dict: return if_dict()->size();
    case kind::set:
    case kind::frozenset: return if_set()->size();
    default: return 0;
  }
}

const value* value::at(std::size_t i) const noexcept {
  const items_type* items = if_sequence();
  if (!items || i >= items->size()) {
    return nullptr;
  }
  return &(*items)[i];
}

const value* value::find(const value& key) const noexcept {
  const dict* d = if_dict();
  return d ? d->find(key) : nullptr;
}

const value* value::get(std::string_view key) const noexcept {
  const dict* d = if_dict();
  return d ? d->get(key) : nullptr;
}

// ---- allow_list ----

allow_list::allow_list(std::initializer_list<std::pair<std::string_view, std::string_view>> classes) {
  for (const auto& [module, name] : classes) {
    add(module, name);
  }
}

void allow_list::add(std::string_view module, std::string_view name) {
  std::string full;
  full.reserve(module.size() + name.size() + 1);
  full.append(module).append(1, '\n').append(name);  // '\n' cannot occur in either part
  auto it = std::lower_bound(m_names.begin(), m_names.end(), full);
  if (it == m_names.end() || *it != full) {
    m_names.insert(it, std::move(full));
  }
}

bool allow_list::contains(std::string_view module, std::string_view name) const noexcept {
  auto it = std::lower_bound(m_names.begin(), m_names.end(), std::pair{module, name},
                             [](const std::string& s, const std::pair<std::string_view, std::string_view>& key) {
                               std::string_view sv = s;
                               std::size_t nl = sv.find('\n');
                               auto m = sv.substr(0, nl);
                               auto n = sv.substr(nl + 1);
                               return std::pair{m, n} < key;
                             });
  if (it == m_names.end()) {
    return false;
  }
  std::string_view sv = *it;
  std::size_t nl = sv.find('\n');
  return sv.substr(0, nl) == module && sv.substr(nl + 1) == name;
}

const allow_list& allow_list::defaults() {
  static const allow_list list = [] {
    allow_list l;
    static constexpr const char* builtin_exceptions[] = {
        "BaseException", "Exception", "ArithmeticError", "AssertionError", "AttributeError",
        "BlockingIOError", "BrokenPipeError", "BufferError", "BytesWarning", "ChildProcessError",
        "ConnectionAbortedError", "ConnectionError", "ConnectionRefusedError", "ConnectionResetError",
        "DeprecationWarning", "EOFError", "EncodingWarning", "FileExistsError", "FileNotFoundError",
        "FloatingPointError", "FutureWarning", "GeneratorExit", "ImportError", "ImportWarning",
        "IndentationError", "IndexError", "InterruptedError", "IsADirectoryError", "KeyError",
        "KeyboardInterrupt", "LookupError", "MemoryError", "ModuleNotFoundError", "NameError",
        "NotADirectoryError", "NotImplementedError", "OSError", "OverflowError",
        "PendingDeprecationWarning", "PermissionError", "ProcessLookupError", "RecursionError",
        "ReferenceError", "ResourceWarning", "RuntimeError", "RuntimeWarning", "StopAsyncIteration",
        "StopIteration", "SyntaxError", "SyntaxWarning", "SystemError", "SystemExit", "TabError",
        "TimeoutError", "TypeError", "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError",
        "UnicodeError", "UnicodeTranslateError", "UnicodeWarning", "UserWarning", "ValueError",
        "Warning", "ZeroDivisionError",
    };
    for (const char* name : builtin_exceptions) {
      l.add("builtins", name);
    }
    l.add("queue", "Empty");
    l.add("queue", "Full");
    l.add("_queue", "Empty");
    l.add("multiprocessing.managers", "RemoteError");
    l.add("multiprocessing.managers", "Token");
    l.add("multiprocessing.context", "AuthenticationError");
    l.add("multiprocessing.context", "BufferTooShort");
    l.add("multiprocessing.context", "ProcessError");
    l.add("multiprocessing.context", "TimeoutError");
    return l;
  }();
  return list;
}

// ---- exception helpers ----

value make_exception(std::string_view module, std::string_view name, value::items_type args) {
  object o;
  o.module = module;
  o.name = name;
  o.args = std::move(args);
  return value(std::move(o));
}

value builtin_exception(std::string_view name, std::string_view message) {
  return make_exception("builtins", name, {value(message)});
}

value queue_empty() { return make_exception("queue", "Empty", {}); }
value queue_full() { return make_exception("queue", "Full", {}); }

}  // namespace corio::ipc::pickle
