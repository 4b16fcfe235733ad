// corio::ipc::pickle::reader: globals and objects. GLOBAL/STACK_GLOBAL resolve a name to a
// value-spelling builtin or an allow-listed class (never imported); REDUCE, NEWOBJ(_EX),
// INST, OBJ and BUILD build allow-listed objects as data and decode the builtins' calls
// directly. Nothing is called or instantiated. The machine is described in pickle_reader.cpp.
#include <corio/ipc/pickle.hpp>

#include <algorithm>
#include <string>
#include <utility>

#include <corio/ipc/detail/pickle_machine.hpp>
#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

// Resolves module.name to a class-reference node (allow-list or value-spelling builtin).
result<void> reader::impl::push_global(std::string module, std::string name) {
  if (!detail::valid_utf8(module) || !detail::valid_utf8(name)) {
    return fail(errc::invalid_string, "global name is not valid UTF-8");
  }
  if (proto < 3) {  // Python 2 names, as Python 3's fix_imports maps them
    if (module == "__builtin__") {
      module = "builtins";
    } else if (module == "exceptions") {
      module = "builtins";
      if (name == "StandardError") {
        name = "Exception";
      }
    } else if (module == "Queue") {
      module = "queue";
    } else if (module == "copy_reg") {
      module = "copyreg";
    }
  }
  ctor c = ctor::none;
  if (module == "builtins") {
    if (name == "bytes") {
      c = ctor::bytes;
    } else if (name == "bytearray") {
      c = ctor::bytearray;
    } else if (name == "set") {
      c = ctor::set;
    } else if (name == "frozenset") {
      c = ctor::frozenset;
    } else if (name == "object") {
      c = ctor::object_type;
    }
  } else if (module == "_codecs" && name == "encode") {
    c = ctor::codecs_encode;
  } else if (module == "copyreg" && name == "_reconstructor") {
    c = ctor::reconstructor;
  }
  const allow_list& allowed = options.allowed ? *options.allowed : allow_list::defaults();
  if (c == ctor::none && !allowed.contains(module, name)) {
    return fail(errc::forbidden_class, "forbidden global " + module + "." + name + " (not on the allow-list)");
  }
  auto id = new_node(node_kind::global);
  if (!id) {
    return unexpected(id.error());
  }
  node& n = nodes[*id];
  n.c = c;
  n.in_arena = true;
  n.off = arena.size();
  n.len = module.size();
  n.name_len = name.size();
  n.data_bytes = module.size() + name.size();
  if (n.data_bytes > options.max_data_bytes) {
    return fail(errc::too_large, detail::too_much_data);
  }
  arena += module;
  arena += name;
  stack.push_back(slot::node(*id));
  return {};
}

result<void> reader::impl::op_global_text() {
  auto module = read_line();
  if (!module) {
    return unexpected(module.error());
  }
  auto name = read_line();
  if (!name) {
    return unexpected(name.error());
  }
  return push_global(std::string(*module), std::string(*name));
}

result<void> reader::impl::op_stack_global() {
  auto name = pop();
  if (!name) {
    return unexpected(name.error());
  }
  auto module = pop();
  if (!module) {
    return unexpected(module.error());
  }
  if (name->tag != slot_tag::node || nodes[name->n].k != node_kind::str || module->tag != slot_tag::node ||
      nodes[module->n].k != node_kind::str) {
    return fail(errc::malformed, "STACK_GLOBAL needs two str");
  }
  return push_global(std::string(data(nodes[module->n])), std::string(data(nodes[name->n])));
}

// UTF-8 str → latin-1 bytes in the arena (code points above U+00FF are an error).
result<std::pair<std::size_t, std::size_t>> reader::impl::latin1_of(std::string_view s) {
  if (s.size() > options.max_data_bytes - std::min(latin1_bytes, options.max_data_bytes)) {
    return fail(errc::too_large, "pickle decodes more latin-1 text than load_options::max_data_bytes");
  }
  latin1_bytes += s.size();
  std::size_t off = arena.size();
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      arena += static_cast<char>(c);
      ++i;
    } else if ((c == 0xc2 || c == 0xc3) && i + 1 < s.size()) {
      arena += static_cast<char>(((c & 0x1f) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3f));
      i += 2;
    } else {
      arena.resize(off);
      return fail(errc::malformed, "latin-1 text of bytes holds a character above U+00FF");
    }
  }
  return std::pair{off, arena.size() - off};
}

// REDUCE of a value-spelling builtin: bytes(), bytes(b), bytearray(), bytearray(b),
// bytearray(s, 'latin-1'), _codecs.encode(s, 'latin1'), set(), set(list), frozenset(...).
result<void> reader::impl::reduce_builtin(ctor c, std::uint32_t args) {
  const std::vector<slot> a = nodes[args].items;
  auto bad = [&] { return fail(errc::malformed, "unexpected arguments for a builtin that spells a value"); };
  switch (c) {
    case ctor::bytes:
    case ctor::bytearray: {
      node_kind k = c == ctor::bytes ? node_kind::bytes : node_kind::bytearray;
      if (a.empty()) {
        auto id = data_node(k, 0, 0, true);
        return id ? push_new(slot::node(*id)) : unexpected(id.error());
      }
      if (a.size() == 1 && is_node(a[0], node_kind::bytes)) {
        const node& src = nodes[a[0].n];
        auto id = data_node(k, src.off, src.len, src.in_arena);
        return id ? push_new(slot::node(*id)) : unexpected(id.error());
      }
      if (c == ctor::bytearray && a.size() == 2) {
        return latin1_node(k, a);
      }
      return bad();
    }
    case ctor::codecs_encode:
      if (a.size() == 2) {
        return latin1_node(node_kind::bytes, a);
      }
      return bad();
    case ctor::set:
    case ctor::frozenset: {
      auto id = new_node(c == ctor::set ? node_kind::set : node_kind::frozenset);
      if (!id) {
        return unexpected(id.error());
      }
      if (a.size() == 1 && (is_node(a[0], node_kind::list) || is_node(a[0], node_kind::tuple))) {
        const std::vector<slot> elements = nodes[a[0].n].items;
        for (const slot& e : elements) {
          if (auto r = add_child(*id, e); !r) {
            return r;
          }
        }
      } else if (!a.empty()) {
        return bad();
      }
      stack.push_back(slot::node(*id));
      return {};
    }
    case ctor::reconstructor:
      if (a.size() == 3 && is_node(a[0], node_kind::global) && nodes[a[0].n].c == ctor::none &&
          is_node(a[1], node_kind::global) && nodes[a[1].n].c == ctor::object_type && a[2].tag == slot_tag::none) {
        auto empty = new_node(node_kind::tuple);
        if (!empty) {
          return unexpected(empty.error());
        }
        return instantiate(a[0], slot::node(*empty), true, "REDUCE");
      }
      return fail(errc::malformed, "copyreg._reconstructor is supported only as (class, object, None)");
    case ctor::object_type:
    case ctor::none: break;
  }
  return bad();
}

result<void> reader::impl::latin1_node(node_kind k, const std::vector<slot>& a) {
  if (!is_node(a[0], node_kind::str) || !is_node(a[1], node_kind::str) || !detail::is_latin1_name(data(nodes[a[1].n]))) {
    return fail(errc::malformed, "bytes spelled as text need (str, 'latin1')");
  }
  auto span = latin1_of(std::string(data(nodes[a[0].n])));
  if (!span) {
    return unexpected(span.error());
  }
  auto id = data_node(k, span->first, span->second, true);
  return id ? push_new(slot::node(*id)) : unexpected(id.error());
}

// cls(*args) (REDUCE, INST, OBJ) or cls.__new__(cls, *args) (NEWOBJ, NEWOBJ_EX).
result<void> reader::impl::instantiate(const slot& cls, const slot& args, bool new_object, std::string_view op) {
  if (!is_node(cls, node_kind::global)) {
    return fail(errc::malformed, std::string(op) + " needs a class, got a " +
                                     std::string(cls.tag == slot_tag::node ? detail::kind_word(nodes[cls.n].k) : "scalar"));
  }
  if (!is_node(args, node_kind::tuple)) {
    return fail(errc::malformed, std::string(op) + " needs a tuple of arguments");
  }
  ctor c = nodes[cls.n].c;
  if (c != ctor::none) {
    if (new_object) {
      return fail(errc::malformed, std::string(op) + " of a builtin value type");
    }
    return reduce_builtin(c, args.n);
  }
  auto id = new_node(node_kind::object);
  if (!id) {
    return unexpected(id.error());
  }
  {
    node& o = nodes[*id];
    const node& g = nodes[cls.n];
    o.new_object = new_object;
    o.in_arena = true;
    o.off = g.off;
    o.len = g.len;
    o.name_len = g.name_len;
    o.data_bytes = g.data_bytes;
  }
  const std::vector<slot> a = nodes[args.n].items;
  for (const slot& s : a) {
    if (auto r = add_child(*id, s); !r) {
      return r;
    }
  }
  seal(args);
  stack.push_back(slot::node(*id));
  return {};
}

// REDUCE (cls(*args)) and NEWOBJ (cls.__new__(cls, *args)): the class and its
// arguments are the stack's top two.
result<void> reader::impl::op_reduce(bool new_object) {
  auto args = pop();
  if (!args) {
    return unexpected(args.error());
  }
  auto cls = pop();
  if (!cls) {
    return unexpected(cls.error());
  }
  return instantiate(*cls, *args, new_object, new_object ? "NEWOBJ" : "REDUCE");
}

result<void> reader::impl::op_newobj_ex() {
  auto kwargs = pop();
  if (!kwargs) {
    return unexpected(kwargs.error());
  }
  if (!is_node(*kwargs, node_kind::dict) || !nodes[kwargs->n].items.empty()) {
    return fail(errc::malformed, "NEWOBJ_EX with keyword arguments is not supported");
  }
  return op_reduce(true);
}

// INST (text class) and OBJ (class on the stack): the arguments are above the mark.
result<void> reader::impl::op_inst(bool text_class) {
  slot cls;
  if (text_class) {
    if (auto r = op_global_text(); !r) {  // the class, as GLOBAL spells it
      return r;
    }
    cls = stack.back();
    stack.pop_back();
  }
  auto m = pop_mark();
  if (!m) {
    return unexpected(m.error());
  }
  std::size_t from = *m;
  if (!text_class) {
    if (from >= stack.size()) {
      return fail(errc::malformed, "OBJ needs a class after its MARK");
    }
    cls = stack[from++];
  }
  auto args = new_node(node_kind::tuple);
  if (!args) {
    return unexpected(args.error());
  }
  for (std::size_t i = from; i < stack.size(); ++i) {
    if (auto r = add_child(*args, stack[i]); !r) {
      return r;
    }
  }
  stack.resize(*m);
  return instantiate(cls, slot::node(*args), false, text_class ? "INST" : "OBJ");
}

result<void> reader::impl::op_build() {
  auto state = pop();
  if (!state) {
    return unexpected(state.error());
  }
  auto t = top();
  if (!t) {
    return unexpected(t.error());
  }
  auto id = target(**t, node_kind::object, "BUILD");
  if (!id) {
    return unexpected(id.error());
  }
  if (nodes[*id].has_state) {
    return fail(errc::malformed, "BUILD applied twice to one object");
  }
  if (auto r = add_child(*id, *state); !r) {
    return r;
  }
  nodes[*id].has_state = true;
  return {};
}

}  // namespace corio::ipc::pickle
