// Internals of corio::ipc::pickle::reader (ipc/pickle.hpp), shared by the files that hold
// the pickle machine (not installed, private to ipc/):
//   pickle_reader.cpp          the opcode dispatch and loop, the binary opcodes, the memo
//   pickle_reader_text.cpp     protocol 0's text opcodes and Python 2 strings
//   pickle_reader_objects.cpp  globals, REDUCE/NEWOBJ/INST/OBJ/BUILD (allow-listed objects)
//   pickle_reader_load.cpp     the entry points, one load, the copy of the result into a `value`
// The design of the machine (slots, nodes, sealing, the depth and size bounds) is described
// at the top of pickle_reader.cpp. The small helpers every opcode uses (input, nodes, the
// stack) are defined here, inline, so that the split costs the hot opcodes no call.
// Thread-safety: one reader::impl is used by one thread at a time. Cost: the reader's
// buffers (stack, memo, nodes, arena) are reused from load to load.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <corio/ipc/pickle.hpp>
#include <corio/ipc/pickle_detail.hpp>

namespace corio::ipc::pickle::detail {

enum class slot_tag : std::uint8_t { empty, none, boolean, integer, floating, node };

struct slot {
  slot_tag tag = slot_tag::empty;
  union {
    bool b;
    std::int64_t i;
    double f;
    std::uint32_t n;
  };
  slot() : i(0) {}
  /// A slot of tag `t` whose value is zero (the named constructors below set it).
  explicit slot(slot_tag t) : tag(t), i(0) {}
  static slot none() { return slot(slot_tag::none); }
  static slot boolean(bool v) { return with(slot_tag::boolean, &slot::b, v); }
  static slot integer(std::int64_t v) { return with(slot_tag::integer, &slot::i, v); }
  static slot floating(double v) { return with(slot_tag::floating, &slot::f, v); }
  static slot node(std::uint32_t v) { return with(slot_tag::node, &slot::n, v); }

 private:
  template <class T>
  static slot with(slot_tag t, T slot::*member, T v) {
    slot s(t);
    s.*member = v;
    return s;
  }
};

enum class node_kind : std::uint8_t { str, bytes, bytearray, big, tuple, list, dict, set, frozenset, object, global };

// The builtins a global may name to spell a plain value (never called); reconstructor
// (copyreg._reconstructor(cls, object, None), protocols 0 and 1) means cls.__new__(cls), and
// object_type is its second argument.
enum class ctor : std::uint8_t { none, bytes, bytearray, set, frozenset, codecs_encode, reconstructor, object_type };

struct node {
  node_kind k = node_kind::str;
  bool sealed = false;
  bool in_arena = false;   // data lives in the reader's arena, not in the input
  bool has_state = false;  // object: its last item is BUILD's state
  bool new_object = false;
  ctor c = ctor::none;
  std::uint32_t depth = 0;
  std::uint64_t weight = 1;
  // str/bytes/bytearray bytes, big int bytes and class names its copy makes, shared elements
  // counted each time (bounded by load_options::max_data_bytes).
  std::uint64_t data_bytes = 0;
  std::size_t off = 0;  // str/bytes/bytearray/big: the data; object/global: module then name
  std::size_t len = 0;
  std::size_t name_len = 0;  // object/global: the name follows the module in the arena
  std::vector<slot> items;   // elements; dict: key, value, key, value, ...; object: args [, state]
};

inline std::string_view kind_word(node_kind k) {
  switch (k) {
    case node_kind::str: return "str";
    case node_kind::bytes: return "bytes";
    case node_kind::bytearray: return "bytearray";
    case node_kind::big: return "int";
    case node_kind::tuple: return "tuple";
    case node_kind::list: return "list";
    case node_kind::dict: return "dict";
    case node_kind::set: return "set";
    case node_kind::frozenset: return "frozenset";
    case node_kind::object: return "object";
    case node_kind::global: return "class";
  }
  return "?";
}

inline bool is_latin1_name(std::string_view enc) {
  return enc == "latin1" || enc == "latin-1" || enc == "latin_1" || enc == "iso-8859-1" || enc == "iso8859-1";
}

inline std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  std::uint64_t s = a + b;
  return s < a ? ~std::uint64_t{0} : s;
}

}  // namespace corio::ipc::pickle::detail

namespace corio::ipc::pickle {

struct reader::impl : detail::machine_state<detail::slot, detail::slot> {
  using slot = detail::slot;
  using slot_tag = detail::slot_tag;
  using node = detail::node;
  using node_kind = detail::node_kind;
  using ctor = detail::ctor;

  explicit impl(load_options o) : options(o) {}

  load_options options;
  std::size_t op_pos = 0;  // where the opcode being run starts (error messages)
  int proto = 0;
  // Bytes that latin-1 decodes (bytes spelled as text, REDUCE of _codecs.encode) wrote to
  // the arena in this load: a memoized str and args tuple can be reduced again and again
  // for a few bytes of input each, so they are bounded by max_data_bytes as they are made.
  std::size_t latin1_bytes = 0;
  std::vector<node> nodes;
  std::size_t nodes_used = 0;
  std::string arena;
  std::string message;
  std::size_t error_offset = 0;
  errc fill_error = errc::malformed;
  detail::fast_reader fast;

  // ---- failure ----

  // The message of a failure: `what`, cut to max_message bytes (at a UTF-8 character's
  // start) when it quotes a long piece of the input (a class name of megabytes): the
  // reader keeps its message until the next load, and a manager server sends it back.
  static constexpr std::size_t max_message = 1024;

  [[gnu::cold, gnu::noinline]] unexpected<std::error_code> fail(errc e, std::string_view what) {
    if (what.size() > max_message) {
      message.assign(what.substr(0, detail::utf8_prefix_length(what, max_message)));
      message += "...";
    } else {
      message.assign(what);
    }
    message += " at byte ";
    message += std::to_string(op_pos);
    error_offset = op_pos;
    return unexpected(make_error_code(e));
  }

  // ---- input ----

  // The next n bytes of an opcode's argument.
  result<const unsigned char*> take(std::size_t n) {
    if (const unsigned char* p = machine_state::take(n)) [[likely]] {
      return p;
    }
    return fail(errc::truncated, "pickle data ends inside an opcode's argument");
  }

  // A little-endian unsigned number of n (1, 2, 4 or 8) bytes.
  result<std::uint64_t> read_le(std::size_t n) {
    std::uint64_t v;
    if (take_le(n, v)) [[likely]] {
      return v;
    }
    return fail(errc::truncated, "pickle data ends inside an opcode's argument");
  }

  result<std::string_view> read_line() {
    const void* nl = std::memchr(in + pos, '\n', remaining());
    if (!nl) {
      return fail(errc::truncated, "pickle data ends inside a text argument (no newline)");
    }
    auto end = static_cast<std::size_t>(static_cast<const unsigned char*>(nl) - in);
    std::string_view line(reinterpret_cast<const char*>(in) + pos, end - pos);
    pos = end + 1;
    return line;
  }

  // ---- nodes ----

  result<std::uint32_t> new_node(node_kind k) {
    if (auto r = count_value(); !r) {
      return unexpected(r.error());
    }
    if (nodes_used == nodes.size()) {
      nodes.emplace_back();
    }
    node& n = nodes[nodes_used];
    n.k = k;
    n.sealed = false;
    n.in_arena = false;
    n.has_state = false;
    n.new_object = false;
    n.c = ctor::none;
    bool container = k != node_kind::str && k != node_kind::bytes && k != node_kind::bytearray && k != node_kind::big &&
                     k != node_kind::global;
    n.depth = container ? 1 : 0;
    n.weight = 1;
    n.data_bytes = 0;
    n.off = n.len = n.name_len = 0;
    n.items.clear();
    return static_cast<std::uint32_t>(nodes_used++);
  }

  result<void> count_value() {
    if (++created > options.max_values) [[unlikely]] {
      return fail(errc::too_large, "pickle creates more values than load_options::max_values");
    }
    return {};
  }

  result<std::uint32_t> data_node(node_kind k, std::size_t off, std::size_t len, bool in_arena) {
    auto id = new_node(k);
    if (!id) {
      return id;
    }
    node& n = nodes[*id];
    n.off = off;
    n.len = len;
    n.in_arena = in_arena;
    if (k == node_kind::str || k == node_kind::bytes || k == node_kind::bytearray || k == node_kind::big) {
      n.data_bytes = len;
      if (len > options.max_data_bytes) {
        return fail(errc::too_large, detail::too_much_data);
      }
    }
    return id;
  }

  std::string_view data(const node& n) const {
    if (n.in_arena) {
      return std::string_view(arena).substr(n.off, n.len);
    }
    return std::string_view(reinterpret_cast<const char*>(in) + n.off, n.len);
  }

  std::string_view module_of(const node& n) const { return std::string_view(arena).substr(n.off, n.len); }
  std::string_view name_of(const node& n) const { return std::string_view(arena).substr(n.off + n.len, n.name_len); }

  void seal(const slot& s) {
    if (s.tag == slot_tag::node) {
      nodes[s.n].sealed = true;
    }
  }

  std::uint32_t depth_of(const slot& s) const { return s.tag == slot_tag::node ? nodes[s.n].depth : 0; }
  std::uint64_t weight_of(const slot& s) const { return s.tag == slot_tag::node ? nodes[s.n].weight : 1; }
  std::uint64_t data_bytes_of(const slot& s) const { return s.tag == slot_tag::node ? nodes[s.n].data_bytes : 0; }

  // Makes child an element of parent (sealing it), within the depth and size limits.
  result<void> add_child(std::uint32_t parent, const slot& child) {
    seal(child);
    node& p = nodes[parent];
    std::uint32_t d = depth_of(child) + 1;
    if (d > p.depth) {
      if (d > options.max_depth) {
        return fail(errc::too_deep, "pickle nests deeper than load_options::max_depth");
      }
      p.depth = d;
    }
    p.weight = detail::saturating_add(p.weight, weight_of(child));
    if (p.weight > options.max_values) {
      return fail(errc::too_large, "pickle expands to more values than load_options::max_values");
    }
    // A str or bytes shared through the memo is copied once per reference: a small pickle
    // could otherwise expand to gigabytes within max_values.
    p.data_bytes = detail::saturating_add(p.data_bytes, data_bytes_of(child));
    if (p.data_bytes > options.max_data_bytes) {
      return fail(errc::too_large, "pickle expands to more str/bytes/int data than load_options::max_data_bytes");
    }
    p.items.push_back(child);
    return {};
  }

  // ---- the stack ----

  result<void> push_new(slot s) {
    if (s.tag != slot_tag::node && ++created > options.max_values) [[unlikely]] {
      return fail(errc::too_large, "pickle creates more values than load_options::max_values");
    }
    stack.push_back(s);
    return {};
  }

  result<slot> pop() {
    if (stack.size() <= fence()) {
      return fail(errc::malformed, "pickle stack underflow");
    }
    slot s = stack.back();
    stack.pop_back();
    return s;
  }

  result<slot*> top() {
    if (stack.size() <= fence()) {
      return fail(errc::malformed, "pickle stack underflow");
    }
    return &stack.back();
  }

  result<std::size_t> pop_mark() {
    if (marks.empty()) {
      return fail(errc::malformed, "pickle has no MARK for this opcode");
    }
    std::size_t k = marks.back();
    marks.pop_back();
    return k;
  }

  // The node a mutating opcode targets: a container of kind k that nothing shares yet.
  result<std::uint32_t> target(const slot& s, node_kind k, std::string_view op) {
    if (s.tag != slot_tag::node || nodes[s.n].k != k) {
      return fail(errc::malformed, std::string(op) + " applied to something that is not a " + std::string(detail::kind_word(k)));
    }
    if (nodes[s.n].sealed) {
      return fail(errc::recursive, std::string(op) +
                                       " changes a container that is already shared: self-referencing "
                                       "structures are not supported");
    }
    return s.n;
  }

  // ---- opcodes: binary data, containers, the memo (pickle_reader.cpp) ----

  result<void> step(unsigned char op);
  result<void> push_data(node_kind k, std::size_t len);
  result<void> push_long(std::size_t len);
  result<void> push_big(const big_int& b);
  result<void> op_binint(std::size_t width);
  result<void> op_long1();
  result<void> op_binfloat();
  result<void> op_binget(std::size_t width);
  result<void> op_binput(std::size_t width);
  result<void> op_pop_mark();
  result<void> op_get(std::uint64_t idx);
  result<void> op_put(std::uint64_t idx);
  result<void> op_mark();
  result<void> op_pop();
  result<void> op_dup();
  result<void> build_from(node_kind k, std::size_t from, std::size_t step = 1);
  result<void> op_from_mark(node_kind k, std::size_t step = 1);
  result<void> op_tuple_n(std::size_t n);
  result<void> op_empty(node_kind k);
  result<void> op_add_from_mark(node_kind k, std::string_view op, std::size_t step);
  result<void> op_add_n(node_kind k, std::string_view op, std::size_t n);
  result<void> op_proto();
  result<void> op_frame();
  result<void> op_sized(node_kind k, std::size_t width);
  [[gnu::cold]] result<void> op_unknown(unsigned char op);

  // ---- opcodes: protocol 0 text, Python 2 strings (pickle_reader_text.cpp) ----

  result<void> push_py2_str(std::size_t len);
  result<void> op_binstring(std::size_t width);
  result<void> op_string_text();
  result<void> op_unicode_text();
  void append_utf8(std::uint32_t cp);
  result<void> push_decimal(std::string_view text);
  result<void> op_int_text();
  result<void> op_long_text();
  result<void> op_float_text();
  result<void> op_text_index(bool get);

  // ---- opcodes: globals and objects (pickle_reader_objects.cpp) ----

  bool is_node(const slot& s, node_kind k) const { return s.tag == slot_tag::node && nodes[s.n].k == k; }
  result<void> push_global(std::string module, std::string name);
  result<void> op_global_text();
  result<void> op_stack_global();
  result<std::pair<std::size_t, std::size_t>> latin1_of(std::string_view s);
  result<void> reduce_builtin(ctor c, std::uint32_t args);
  result<void> latin1_node(node_kind k, const std::vector<slot>& a);
  result<void> instantiate(const slot& cls, const slot& args, bool new_object, std::string_view op);
  result<void> op_reduce(bool new_object);  // REDUCE (false) and NEWOBJ (true)
  result<void> op_newobj_ex();
  result<void> op_inst(bool text_class);
  result<void> op_build();

  // ---- the copy into values (pickle_reader_load.cpp) ----

  bool fill_failed(errc e, std::string_view what);
  bool append(const slot& s, value::items_type& items);
  bool fill(const slot& s, value& out);
  bool fill_sequence(const node& n, value& out);
  bool fill_dict(const node& n, value& out);
  bool fill_set(const node& n, value& out);
  bool fill_object(const node& n, value& out);

  // ---- one load (pickle_reader_load.cpp; run, the opcode loop, in pickle_reader.cpp) ----

  void reset(std::span<const std::byte> data);
  void trim_buffers();
  result<value> load(std::span<const std::byte> data);
  result<value> run();
};

}  // namespace corio::ipc::pickle
