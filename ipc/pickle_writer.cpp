// corio::ipc::pickle::dump: protocol 4 (or 5) pickles of values, in one pass, recursive
// up to dump_options::max_depth. No memo is written (values are trees, so nothing is
// shared) and no FRAME (framing is optional for every reader). Objects are written as
// Python writes exceptions: STACK_GLOBAL, the argument tuple, REDUCE (or NEWOBJ), then
// the state and BUILD when there is one.
#include <corio/ipc/pickle.hpp>

#include <bit>
#include <cstring>

#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

namespace {

class writer {
 public:
  writer(std::vector<std::byte>& out, const dump_options& options) : m_out(out), m_options(options) {}

  result<void> write(const value& v, std::size_t depth) {
    switch (v.type()) {
      case kind::none: op('N'); return {};
      case kind::boolean: op(*v.as<bool>() ? 0x88 : 0x89); return {};
      case kind::integer: write_int(*v.as<std::int64_t>()); return {};
      case kind::big_integer: write_long(v.if_big_int()->twos_complement()); return {};
      case kind::floating: write_float(*v.as<double>()); return {};
      case kind::str: return write_str(*v.if_str());
      case kind::bytes: write_bytes(*v.if_bytes()); return {};
      case kind::bytearray: return write_bytearray(*v.if_bytes(), depth);
      default: break;
    }
    if (depth >= m_options.max_depth) {
      return unexpected(make_error_code(errc::too_deep));
    }
    switch (v.type()) {
      case kind::tuple: return write_tuple(*v.if_tuple(), depth + 1);
      case kind::list: return write_list(*v.if_list(), depth + 1);
      case kind::dict: return write_dict(*v.if_dict(), depth + 1);
      case kind::set:
      case kind::frozenset: return write_set(*v.if_set(), v.type() == kind::frozenset, depth + 1);
      case kind::object: return write_object(*v.if_object(), depth + 1);
      default: return {};
    }
  }

  void op(unsigned c) { m_out.push_back(static_cast<std::byte>(c)); }

  void le(std::uint64_t v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      m_out.push_back(static_cast<std::byte>(v >> (8 * i)));
    }
  }

  void raw(std::string_view s) {
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    m_out.insert(m_out.end(), p, p + s.size());
  }

 private:
  void write_int(std::int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      le(static_cast<std::uint64_t>(v), 1);
    } else if (v >= 0 && v < 65536) {
      op('M');
      le(static_cast<std::uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      le(static_cast<std::uint32_t>(static_cast<std::int32_t>(v)), 4);
    } else {
      std::vector<std::uint8_t> bytes;
      auto u = static_cast<std::uint64_t>(v);
      for (int i = 0; i < 8; ++i) {
        bytes.push_back(static_cast<std::uint8_t>(u >> (8 * i)));
      }
      detail::normalize_twos_complement(bytes);
      write_long(bytes);
    }
  }

  void write_long(std::span<const std::uint8_t> bytes) {
    if (bytes.size() < 256) {
      op(0x8a);
      le(bytes.size(), 1);
    } else {
      op(0x8b);
      le(bytes.size(), 4);
    }
    raw(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }

  void write_float(double d) {
    op('G');
    auto bits = std::bit_cast<std::uint64_t>(d);
    for (int i = 7; i >= 0; --i) {
      m_out.push_back(static_cast<std::byte>(bits >> (8 * i)));
    }
  }

  result<void> write_str(std::string_view s) {
    if (!detail::valid_utf8(s)) {
      return unexpected(make_error_code(errc::invalid_string));
    }
    if (s.size() < 256) {
      op(0x8c);
      le(s.size(), 1);
    } else if (s.size() <= UINT32_MAX) {
      op('X');
      le(s.size(), 4);
    } else {
      op(0x8d);
      le(s.size(), 8);
    }
    raw(s);
    return {};
  }

  void write_bytes(std::string_view b) {
    if (b.size() < 256) {
      op('C');
      le(b.size(), 1);
    } else if (b.size() <= UINT32_MAX) {
      op('B');
      le(b.size(), 4);
    } else {
      op(0x8e);
      le(b.size(), 8);
    }
    raw(b);
  }

  result<void> write_global(std::string_view module, std::string_view name) {
    if (auto r = write_str(module); !r) {
      return r;
    }
    if (auto r = write_str(name); !r) {
      return r;
    }
    op(0x93);  // STACK_GLOBAL
    return {};
  }

  result<void> write_bytearray(std::string_view b, std::size_t /*depth*/) {
    if (m_options.protocol >= 5) {
      op(0x96);
      le(b.size(), 8);
      raw(b);
      return {};
    }
    // builtins.bytearray(b'...'), as Python 3 writes it for protocols 3 and 4.
    if (auto r = write_global("builtins", "bytearray"); !r) {
      return r;
    }
    write_bytes(b);
    op(0x85);  // TUPLE1
    op('R');
    return {};
  }

  result<void> write_items(const value::items_type& items, std::size_t depth) {
    for (const value& x : items) {
      if (auto r = write(x, depth); !r) {
        return r;
      }
    }
    return {};
  }

  result<void> write_tuple(const value::items_type& items, std::size_t depth) {
    static constexpr unsigned small_tuple[] = {')', 0x85, 0x86, 0x87};
    if (items.size() > 3) {
      op('(');
    }
    if (auto r = write_items(items, depth); !r) {
      return r;
    }
    op(items.size() <= 3 ? small_tuple[items.size()] : 't');
    return {};
  }

  result<void> write_list(const value::items_type& items, std::size_t depth) {
    op(']');
    if (items.empty()) {
      return {};
    }
    if (items.size() > 1) {
      op('(');
    }
    if (auto r = write_items(items, depth); !r) {
      return r;
    }
    op(items.size() > 1 ? 'e' : 'a');
    return {};
  }

  result<void> write_dict(const dict& d, std::size_t depth) {
    op('}');
    if (d.empty()) {
      return {};
    }
    if (d.size() > 1) {
      op('(');
    }
    for (const auto& e : d) {
      if (!e.key.hashable()) {
        return unexpected(make_error_code(errc::unhashable));
      }
      if (auto r = write(e.key, depth); !r) {
        return r;
      }
      if (auto r = write(e.mapped, depth); !r) {
        return r;
      }
    }
    op(d.size() > 1 ? 'u' : 's');
    return {};
  }

  result<void> write_set(const set& s, bool frozen, std::size_t depth) {
    if (!frozen) {
      op(0x8f);  // EMPTY_SET
      if (s.empty()) {
        return {};
      }
    }
    op('(');
    for (const value& e : s) {
      if (!e.hashable()) {
        return unexpected(make_error_code(errc::unhashable));
      }
      if (auto r = write(e, depth); !r) {
        return r;
      }
    }
    op(frozen ? 0x91 : 0x90);  // FROZENSET : ADDITEMS
    return {};
  }

  result<void> write_object(const object& o, std::size_t depth) {
    if (o.module.empty() || o.name.empty()) {
      return unexpected(make_error_code(errc::malformed));
    }
    if (auto r = write_global(o.module, o.name); !r) {
      return r;
    }
    if (auto r = write_tuple(o.args, depth); !r) {
      return r;
    }
    op(o.new_object ? 0x81 : 'R');  // NEWOBJ : REDUCE
    if (!o.state.is_none()) {
      if (auto r = write(o.state, depth); !r) {
        return r;
      }
      op('b');  // BUILD
    }
    return {};
  }

  std::vector<std::byte>& m_out;
  const dump_options& m_options;
};

}  // namespace

result<void> dump(const value& v, std::vector<std::byte>& out, const dump_options& options) {
  if (options.protocol != 4 && options.protocol != 5) {
    return unexpected(make_error_code(errc::unsupported_protocol));
  }
  std::size_t start = out.size();
  writer w(out, options);
  w.op(0x80);
  w.le(static_cast<std::uint64_t>(options.protocol), 1);
  if (auto r = w.write(v, 0); !r) {
    out.resize(start);
    return r;
  }
  w.op('.');
  return {};
}

result<std::vector<std::byte>> dumps(const value& v, const dump_options& options) {
  std::vector<std::byte> out;
  if (auto r = dump(v, out, options); !r) {
    return unexpected(r.error());
  }
  return out;
}

}  // namespace corio::ipc::pickle
