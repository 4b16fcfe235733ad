// corio::ipc::pickle::reader: the pickle machine (protocols 0-5), without execution.
//
// The decoder runs the opcodes over a stack of slots. A slot is a scalar (None, bool, a
// 64-bit int, a float) or the index of a node; nodes hold str/bytes (as views into the
// input or into the reader's arena), big ints, containers, allow-listed objects and
// class references. At STOP the result's nodes are copied into a `value` tree.
// Invariants that make the copy safe and bounded:
// - a node is "sealed" once anything else can reach it (the memo hands it out with GET,
//   DUP duplicates it, or it becomes an element of another node); the opcodes that change
//   a container (APPEND(S), SETITEM(S), ADDITEMS, BUILD) refuse a sealed one. Python only
//   modifies a container after sharing it when the structure contains itself, so every
//   node graph this accepts is acyclic (errc::recursive otherwise);
// - a node's depth (1 + its deepest element's) is at most max_depth, so the copy recurses
//   at most max_depth levels;
// - a node's weight (the number of values its copy makes, shared elements counted each
//   time) is at most max_values, and so is the number of slots created: the copy
//   allocates no more than max_values values;
// - a node's data_bytes (the str/bytes/bytearray bytes, big int bytes and class names its
//   copy makes, shared elements counted each time) is at most max_data_bytes, so a small pickle that
//   references one large string many times cannot make the copy allocate gigabytes.
// Nothing here imports, calls or instantiates: globals resolve to a few builtins that
// spell plain values (decoded directly) or to allow-listed names (kept as data).
//
// This file holds the opcode dispatch (step), the binary data and container opcodes, the
// memo and the opcode loop (run). The text opcodes are in pickle_reader_text.cpp, the
// object opcodes in pickle_reader_objects.cpp, the entry points and the copy into values
// in pickle_reader_load.cpp, the machine's state and small helpers in
// detail/pickle_machine.hpp.
#include <corio/ipc/pickle.hpp>

#include <cstdio>
#include <cstring>
#include <string>

#include <corio/ipc/detail/pickle_machine.hpp>
#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

result<void> reader::impl::push_data(node_kind k, std::size_t len) {
  std::size_t off = pos;
  if (auto p = take(len); !p) {
    return unexpected(p.error());
  }
  if (k == node_kind::str && !detail::valid_utf8(std::string_view(reinterpret_cast<const char*>(in) + off, len))) {
    return fail(errc::invalid_string, "str is not valid UTF-8");
  }
  auto id = data_node(k, off, len, false);
  if (!id) {
    return unexpected(id.error());
  }
  return push_new(slot::node(*id));
}

result<void> reader::impl::push_long(std::size_t len) {
  auto p = take(len);
  if (!p) {
    return unexpected(p.error());
  }
  if (len <= 8) {
    std::uint64_t u = 0;
    for (std::size_t i = 0; i < len; ++i) {
      u |= static_cast<std::uint64_t>((*p)[i]) << (8 * i);
    }
    if (len > 0 && len < 8 && ((*p)[len - 1] & 0x80) != 0) {
      u |= ~std::uint64_t{0} << (8 * len);  // sign-extend
    }
    return push_new(slot::integer(static_cast<std::int64_t>(u)));
  }
  big_int b = big_int::from_twos_complement(std::span(*p, len));
  if (auto small = b.to_int64()) {
    return push_new(slot::integer(*small));
  }
  return push_big(b);
}

result<void> reader::impl::push_big(const big_int& b) {
  std::size_t off = arena.size();
  auto bytes = b.twos_complement();
  arena.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  auto id = data_node(node_kind::big, off, bytes.size(), true);
  if (!id) {
    return unexpected(id.error());
  }
  return push_new(slot::node(*id));
}

// BININT (signed, 4 bytes), BININT1 and BININT2 (unsigned, 1 and 2 bytes).
result<void> reader::impl::op_binint(std::size_t width) {
  auto v = read_le(width);
  if (!v) {
    return unexpected(v.error());
  }
  if (width == 4) {
    return push_new(slot::integer(static_cast<std::int32_t>(static_cast<std::uint32_t>(*v))));
  }
  return push_new(slot::integer(static_cast<std::int64_t>(*v)));
}

// LONG1: a two's complement int of a 1-byte length.
result<void> reader::impl::op_long1() {
  auto n = read_le(1);
  return n ? push_long(*n) : unexpected(n.error());
}

result<void> reader::impl::op_binfloat() {
  auto v = read_le(8);
  if (!v) {
    return unexpected(v.error());
  }
  std::uint64_t be = *v;
  std::uint64_t bits = 0;
  for (int i = 0; i < 8; ++i) {
    bits = (bits << 8) | ((be >> (8 * i)) & 0xff);
  }
  return push_new(slot::floating(std::bit_cast<double>(bits)));
}

// BINGET / LONG_BINGET and BINPUT / LONG_BINPUT: a memo index of width bytes.
result<void> reader::impl::op_binget(std::size_t width) {
  auto v = read_le(width);
  return v ? op_get(*v) : unexpected(v.error());
}

result<void> reader::impl::op_binput(std::size_t width) {
  auto v = read_le(width);
  return v ? op_put(*v) : unexpected(v.error());
}

result<void> reader::impl::op_get(std::uint64_t idx) {
  if (idx >= memo.size() || memo[idx].tag == slot_tag::empty) {
    return fail(errc::missing_memo, "GET of memo entry " + std::to_string(idx) + ", which was never stored");
  }
  slot s = memo[idx];
  seal(s);
  stack.push_back(s);
  return {};
}

result<void> reader::impl::op_put(std::uint64_t idx) {
  auto t = top();
  if (!t) {
    return unexpected(t.error());
  }
  if (idx >= options.max_memo) {
    return fail(errc::memo_too_large, "memo index " + std::to_string(idx) + " is not below load_options::max_memo");
  }
  if (idx == memo.size()) {
    memo.emplace_back();  // MEMOIZE: the common case
  } else if (idx > memo.size()) {
    memo.resize(idx + 1);
  }
  if (memo[idx].tag == slot_tag::empty) {
    ++memo_count;
  }
  memo[idx] = **t;
  return {};
}

result<void> reader::impl::op_mark() {
  if (marks.size() > options.max_depth) {
    return fail(errc::too_deep, "pickle opens more MARKs than load_options::max_depth");
  }
  marks.push_back(stack.size());
  return {};
}

result<void> reader::impl::op_pop() {
  if (!marks.empty() && marks.back() == stack.size()) {
    marks.pop_back();
    return {};
  }
  auto s = pop();
  if (!s) {
    return unexpected(s.error());
  }
  return {};
}

// POP_MARK: drops the items above the mark, and the mark.
result<void> reader::impl::op_pop_mark() {
  auto m = pop_mark();
  if (!m) {
    return unexpected(m.error());
  }
  stack.resize(*m);
  return {};
}

result<void> reader::impl::op_dup() {
  auto t = top();
  if (!t) {
    return unexpected(t.error());
  }
  slot s = **t;
  seal(s);
  stack.push_back(s);
  return {};
}

// A container of kind k from the items at stack[from..] (the stack is cut back to from).
result<void> reader::impl::build_from(node_kind k, std::size_t from, std::size_t step) {
  if ((stack.size() - from) % step != 0) {
    return fail(errc::malformed, "DICT needs key/value pairs");
  }
  auto id = new_node(k);
  if (!id) {
    return unexpected(id.error());
  }
  nodes[*id].items.reserve(stack.size() - from);
  for (std::size_t i = from; i < stack.size(); ++i) {
    if (auto r = add_child(*id, stack[i]); !r) {
      return r;
    }
  }
  stack.resize(from);
  stack.push_back(slot::node(*id));
  return {};
}

result<void> reader::impl::op_from_mark(node_kind k, std::size_t step) {
  auto m = pop_mark();
  if (!m) {
    return unexpected(m.error());
  }
  return build_from(k, *m, step);
}

result<void> reader::impl::op_tuple_n(std::size_t n) {
  if (stack.size() < fence() + n) {
    return fail(errc::malformed, "pickle stack underflow");
  }
  return build_from(node_kind::tuple, stack.size() - n);
}

result<void> reader::impl::op_empty(node_kind k) {
  auto id = new_node(k);
  if (!id) {
    return unexpected(id.error());
  }
  stack.push_back(slot::node(*id));
  return {};
}

// APPENDS / SETITEMS / ADDITEMS: the items above the mark go into the container below it.
result<void> reader::impl::op_add_from_mark(node_kind k, std::string_view op, std::size_t step) {
  auto m = pop_mark();
  if (!m) {
    return unexpected(m.error());
  }
  if (*m <= fence()) {
    return fail(errc::malformed, std::string(op) + " has no container below its MARK");
  }
  auto t = target(stack[*m - 1], k, op);
  if (!t) {
    return unexpected(t.error());
  }
  if ((stack.size() - *m) % step != 0) {
    return fail(errc::malformed, std::string(op) + " needs key/value pairs");
  }
  for (std::size_t i = *m; i < stack.size(); ++i) {
    if (auto r = add_child(*t, stack[i]); !r) {
      return r;
    }
  }
  stack.resize(*m);
  return {};
}

// APPEND / SETITEM: the top n items go into the container below them.
result<void> reader::impl::op_add_n(node_kind k, std::string_view op, std::size_t n) {
  if (stack.size() < fence() + n + 1) {
    return fail(errc::malformed, "pickle stack underflow");
  }
  std::size_t first = stack.size() - n;
  auto t = target(stack[first - 1], k, op);
  if (!t) {
    return unexpected(t.error());
  }
  for (std::size_t i = first; i < stack.size(); ++i) {
    if (auto r = add_child(*t, stack[i]); !r) {
      return r;
    }
  }
  stack.resize(first);
  return {};
}

result<void> reader::impl::op_proto() {
  auto v = read_le(1);
  if (!v) {
    return unexpected(v.error());
  }
  if (*v > 5) {
    return fail(errc::unsupported_protocol, "pickle protocol " + std::to_string(*v) + " (this reader knows 0 to 5)");
  }
  proto = static_cast<int>(*v);
  return {};
}

result<void> reader::impl::op_frame() {
  auto n = read_le(8);
  if (!n) {
    return unexpected(n.error());
  }
  if (*n > remaining()) {
    return fail(errc::truncated, "FRAME is longer than the rest of the pickle");
  }
  return {};
}

result<void> reader::impl::op_sized(node_kind k, std::size_t width) {
  auto n = read_le(width);
  if (!n) {
    return unexpected(n.error());
  }
  if (width == 4 && k == node_kind::big && (*n & 0x80000000U) != 0) {
    return fail(errc::malformed, "LONG4 has a negative byte count");
  }
  if (*n > remaining()) {
    return fail(errc::truncated, "pickle data ends inside a str, bytes or int");
  }
  if (k == node_kind::big) {
    return push_long(*n);
  }
  return push_data(k, *n);
}

result<void> reader::impl::op_unknown(unsigned char op) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", op);
  return fail(errc::unknown_opcode, std::string("unknown opcode ") + buf);
}

// long: one case per opcode, each a line that names its handler: the table of the pickle
// machine read in one place. Split into groups, the table would be spread over several
// switches (and a second dispatch on the hot path).
result<void> reader::impl::step(unsigned char op) {
  switch (op) {
    case '(': return op_mark();
    case '0': return op_pop();
    case '1': return op_pop_mark();
    case '2': return op_dup();
    case 'F': return op_float_text();
    case 'I': return op_int_text();
    case 'J': return op_binint(4);
    case 'K': return op_binint(1);
    case 'L': return op_long_text();
    case 'M': return op_binint(2);
    case 'N': return push_new(slot::none());
    case 'P':
    case 'Q': return fail(errc::unsupported_opcode, "persistent ids (PERSID/BINPERSID) are not supported");
    case 'R': return op_reduce(false);
    case 'S': return op_string_text();
    case 'V': return op_unicode_text();
    case 'T': return op_binstring(4);
    case 'U': return op_binstring(1);
    case 'X': return op_sized(node_kind::str, 4);
    case 'a': return op_add_n(node_kind::list, "APPEND", 1);
    case 'b': return op_build();
    case 'c': return op_global_text();
    case 'd': return op_from_mark(node_kind::dict, 2);
    case '}': return op_empty(node_kind::dict);
    case 'e': return op_add_from_mark(node_kind::list, "APPENDS", 1);
    case 'g': return op_text_index(true);
    case 'h': return op_binget(1);
    case 'i': return op_inst(true);
    case 'j': return op_binget(4);
    case 'l': return op_from_mark(node_kind::list);
    case ']': return op_empty(node_kind::list);
    case 'o': return op_inst(false);
    case 'p': return op_text_index(false);
    case 'q': return op_binput(1);
    case 'r': return op_binput(4);
    case 's': return op_add_n(node_kind::dict, "SETITEM", 2);
    case 't': return op_from_mark(node_kind::tuple);
    case ')': return op_empty(node_kind::tuple);
    case 'u': return op_add_from_mark(node_kind::dict, "SETITEMS", 2);
    case 'G': return op_binfloat();
    case 0x80: return op_proto();
    case 0x81: return op_reduce(true);
    case 0x82:
    case 0x83:
    case 0x84: return fail(errc::unsupported_opcode, "the copyreg extension registry (EXT1/2/4) is not supported");
    case 0x85: return op_tuple_n(1);
    case 0x86: return op_tuple_n(2);
    case 0x87: return op_tuple_n(3);
    case 0x88: return push_new(slot::boolean(true));
    case 0x89: return push_new(slot::boolean(false));
    case 0x8a: return op_long1();
    case 0x8b: return op_sized(node_kind::big, 4);
    case 'B': return op_sized(node_kind::bytes, 4);
    case 'C': return op_sized(node_kind::bytes, 1);
    case 0x8c: return op_sized(node_kind::str, 1);
    case 0x8d: return op_sized(node_kind::str, 8);
    case 0x8e: return op_sized(node_kind::bytes, 8);
    case 0x8f: return op_empty(node_kind::set);
    case 0x90: return op_add_from_mark(node_kind::set, "ADDITEMS", 1);
    case 0x91: return op_from_mark(node_kind::frozenset);
    case 0x92: return op_newobj_ex();
    case 0x93: return op_stack_global();
    case 0x94: return op_put(memo_count);
    case 0x95: return op_frame();
    case 0x96: return op_sized(node_kind::bytearray, 8);
    case 0x97:
    case 0x98: return fail(errc::unsupported_opcode, "out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER) are not supported");
    default: return op_unknown(op);
  }
}

result<value> reader::impl::run() {
  while (pos < size) {
    op_pos = pos;
    unsigned char op = in[pos++];
    if (op == '.') {
      auto s = pop();
      if (!s) {
        return unexpected(s.error());
      }
      if (pos != size) {
        return fail(errc::trailing_data, std::to_string(size - pos) + " bytes after STOP");
      }
      value out;
      if (!fill(*s, out)) {
        return unexpected(make_error_code(fill_error));
      }
      return out;
    }
    if (auto r = step(op); !r) {
      return unexpected(r.error());
    }
  }
  op_pos = pos;
  return fail(errc::truncated, size == 0 ? "empty pickle" : "pickle ends without STOP");
}

}  // namespace corio::ipc::pickle

