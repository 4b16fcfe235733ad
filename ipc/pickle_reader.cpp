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
//   allocates no more than max_values values.
// Nothing here imports, calls or instantiates: globals resolve to a few builtins that
// spell plain values (decoded directly) or to allow-listed names (kept as data).
#include <corio/ipc/pickle.hpp>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstring>

#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

namespace {

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
  static slot none() {
    slot s;
    s.tag = slot_tag::none;
    return s;
  }
  static slot boolean(bool v) {
    slot s;
    s.tag = slot_tag::boolean;
    s.b = v;
    return s;
  }
  static slot integer(std::int64_t v) {
    slot s;
    s.tag = slot_tag::integer;
    s.i = v;
    return s;
  }
  static slot floating(double v) {
    slot s;
    s.tag = slot_tag::floating;
    s.f = v;
    return s;
  }
  static slot node(std::uint32_t v) {
    slot s;
    s.tag = slot_tag::node;
    s.n = v;
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
  std::size_t off = 0;  // str/bytes/bytearray/big: the data; object/global: module then name
  std::size_t len = 0;
  std::size_t name_len = 0;  // object/global: the name follows the module in the arena
  std::vector<slot> items;   // elements; dict: key, value, key, value, ...; object: args [, state]
};

std::string_view kind_word(node_kind k) {
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

bool is_latin1_name(std::string_view enc) {
  return enc == "latin1" || enc == "latin-1" || enc == "latin_1" || enc == "iso-8859-1" || enc == "iso8859-1";
}

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  std::uint64_t s = a + b;
  return s < a ? ~std::uint64_t{0} : s;
}

}  // namespace

struct reader::impl {
  explicit impl(load_options o) : options(o) {}

  load_options options;
  const unsigned char* in = nullptr;
  std::size_t size = 0;
  std::size_t pos = 0;
  std::size_t op_pos = 0;
  int proto = 0;
  std::size_t created = 0;
  std::vector<slot> stack;
  std::vector<std::size_t> marks;
  std::vector<slot> memo;
  std::size_t memo_count = 0;
  std::vector<node> nodes;
  std::size_t nodes_used = 0;
  std::string arena;
  std::string message;
  std::size_t error_offset = 0;
  errc fill_error = errc::malformed;
  detail::fast_reader fast;

  // ---- failure ----

  [[gnu::cold, gnu::noinline]] unexpected<std::error_code> fail(errc e, std::string_view what) {
    message.assign(what);
    message += " at byte ";
    message += std::to_string(op_pos);
    error_offset = op_pos;
    return unexpected(make_error_code(e));
  }

  // ---- input ----

  std::size_t remaining() const noexcept { return size - pos; }

  result<const unsigned char*> take(std::size_t n) {
    if (n > remaining()) {
      return fail(errc::truncated, "pickle data ends inside an opcode's argument");
    }
    const unsigned char* p = in + pos;
    pos += n;
    return p;
  }

  // A little-endian unsigned number of n (1, 2, 4 or 8) bytes.
  result<std::uint64_t> read_le(std::size_t n) {
    if (n > remaining()) [[unlikely]] {
      return fail(errc::truncated, "pickle data ends inside an opcode's argument");
    }
    const unsigned char* p = in + pos;
    pos += n;
    switch (n) {
      case 1: return p[0];
      case 2: return static_cast<std::uint64_t>(p[0]) | static_cast<std::uint64_t>(p[1]) << 8;
      case 4: {
        std::uint32_t v;
        std::memcpy(&v, p, 4);
        return le_to_native(v);
      }
      default: {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        return le_to_native(v);
      }
    }
  }

  template <class U>
  static U le_to_native(U v) noexcept {
    if constexpr (std::endian::native == std::endian::big) {
      if constexpr (sizeof(U) == 4) {
        return __builtin_bswap32(v);
      } else {
        return __builtin_bswap64(v);
      }
    }
    return v;
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
    p.weight = saturating_add(p.weight, weight_of(child));
    if (p.weight > options.max_values) {
      return fail(errc::too_large, "pickle expands to more values than load_options::max_values");
    }
    p.items.push_back(child);
    return {};
  }

  // ---- the stack ----

  std::size_t fence() const noexcept { return marks.empty() ? 0 : marks.back(); }

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
      return fail(errc::malformed, std::string(op) + " applied to something that is not a " + std::string(kind_word(k)));
    }
    if (nodes[s.n].sealed) {
      return fail(errc::recursive, std::string(op) +
                                       " changes a container that is already shared: self-referencing "
                                       "structures are not supported");
    }
    return s.n;
  }

  // ---- opcodes ----

  result<void> push_data(node_kind k, std::size_t len) {
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

  // A Python 2 str (BINSTRING/SHORT_BINSTRING): Python 3 decodes it as ASCII by default.
  result<void> push_py2_str(std::size_t len) {
    std::size_t off = pos;
    auto p = take(len);
    if (!p) {
      return unexpected(p.error());
    }
    if (std::any_of(*p, *p + len, [](unsigned char c) { return c >= 0x80; })) {
      return fail(errc::invalid_string, "a Python 2 str with non-ASCII bytes (Python 3 needs encoding=...)");
    }
    auto id = data_node(node_kind::str, off, len, false);
    if (!id) {
      return unexpected(id.error());
    }
    return push_new(slot::node(*id));
  }

  // STRING: a quoted Python 2 str literal with backslash escapes; like Python 3, decoded as
  // ASCII into a str.
  result<void> op_string_text() {
    auto line = read_line();
    if (!line) {
      return unexpected(line.error());
    }
    std::string_view t = *line;
    if (t.size() < 2 || t.front() != t.back() || (t.front() != '\'' && t.front() != '"')) {
      return fail(errc::malformed, "the STRING opcode argument must be quoted");
    }
    t = t.substr(1, t.size() - 2);
    std::size_t off = arena.size();
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') {
        return c - '0';
      }
      if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
      }
      if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
      }
      return -1;
    };
    for (std::size_t i = 0; i < t.size(); ++i) {
      char c = t[i];
      if (c != '\\') {
        arena += c;
        continue;
      }
      if (i + 1 == t.size()) {
        arena.resize(off);
        return fail(errc::malformed, "trailing \\ in STRING");
      }
      char e = t[++i];
      switch (e) {
        case '\n': break;  // line continuation
        case '\\': arena += '\\'; break;
        case '\'': arena += '\''; break;
        case '"': arena += '"'; break;
        case 'a': arena += '\a'; break;
        case 'b': arena += '\b'; break;
        case 'f': arena += '\f'; break;
        case 'n': arena += '\n'; break;
        case 'r': arena += '\r'; break;
        case 't': arena += '\t'; break;
        case 'v': arena += '\v'; break;
        case 'x': {
          int hi = i + 1 < t.size() ? hex(t[i + 1]) : -1;
          int lo = i + 2 < t.size() ? hex(t[i + 2]) : -1;
          if (hi < 0 || lo < 0) {
            arena.resize(off);
            return fail(errc::malformed, "invalid \\x escape in STRING");
          }
          arena += static_cast<char>(hi * 16 + lo);
          i += 2;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            int v = e - '0';
            for (int k = 0; k < 2 && i + 1 < t.size() && t[i + 1] >= '0' && t[i + 1] <= '7'; ++k) {
              v = v * 8 + (t[++i] - '0');
            }
            arena += static_cast<char>(v & 0xff);
          } else {
            arena += '\\';
            arena += e;
          }
      }
    }
    std::size_t len = arena.size() - off;
    std::string_view decoded = std::string_view(arena).substr(off, len);
    if (std::any_of(decoded.begin(), decoded.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
      return fail(errc::invalid_string, "a Python 2 str with non-ASCII bytes (Python 3 needs encoding=...)");
    }
    auto id = data_node(node_kind::str, off, len, true);
    if (!id) {
      return unexpected(id.error());
    }
    return push_new(slot::node(*id));
  }

  // Appends code point cp as (surrogatepass) UTF-8 to the arena.
  void append_utf8(std::uint32_t cp) {
    if (cp < 0x80) {
      arena += static_cast<char>(cp);
    } else if (cp < 0x800) {
      arena += static_cast<char>(0xc0 | (cp >> 6));
      arena += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      arena += static_cast<char>(0xe0 | (cp >> 12));
      arena += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      arena += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      arena += static_cast<char>(0xf0 | (cp >> 18));
      arena += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      arena += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      arena += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  // UNICODE: Python's 'raw-unicode-escape' text: latin-1 bytes, except that \uXXXX and
  // \UXXXXXXXX are code points; a backslash before anything else is itself.
  result<void> op_unicode_text() {
    auto line = read_line();
    if (!line) {
      return unexpected(line.error());
    }
    std::string_view t = *line;
    std::size_t off = arena.size();
    for (std::size_t i = 0; i < t.size();) {
      auto c = static_cast<unsigned char>(t[i++]);
      if (c != '\\' || i == t.size() || (t[i] != 'u' && t[i] != 'U')) {
        append_utf8(c);
        if (c == '\\' && i < t.size()) {
          append_utf8(static_cast<unsigned char>(t[i++]));  // the escaped character, kept
        }
        continue;
      }
      std::size_t count = t[i++] == 'u' ? 4 : 8;
      if (t.size() - i < count) {
        arena.resize(off);
        return fail(errc::malformed, "truncated \\u escape in UNICODE");
      }
      std::uint32_t cp = 0;
      for (std::size_t k = 0; k < count; ++k) {
        char h = t[i++];
        int d = (h >= '0' && h <= '9') ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
        if (d < 0) {
          arena.resize(off);
          return fail(errc::malformed, "invalid \\u escape in UNICODE");
        }
        cp = (cp << 4) | static_cast<std::uint32_t>(d);
      }
      if (cp > 0x10ffff) {
        arena.resize(off);
        return fail(errc::malformed, "\\U escape out of range in UNICODE");
      }
      append_utf8(cp);
    }
    auto id = data_node(node_kind::str, off, arena.size() - off, true);
    if (!id) {
      return unexpected(id.error());
    }
    return push_new(slot::node(*id));
  }

  result<void> push_long(std::size_t len) {
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

  result<void> push_big(const big_int& b) {
    std::size_t off = arena.size();
    auto bytes = b.twos_complement();
    arena.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    auto id = data_node(node_kind::big, off, bytes.size(), true);
    if (!id) {
      return unexpected(id.error());
    }
    return push_new(slot::node(*id));
  }

  result<void> push_decimal(std::string_view text) {
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec == std::errc{} && end == text.data() + text.size() && !text.empty()) {
      return push_new(slot::integer(v));
    }
    auto b = big_int::from_decimal(text);
    if (!b) {
      return fail(b.error() == errc::out_of_range ? errc::too_large : errc::malformed,
                  "INT/LONG argument is not a decimal integer (of at most 4300 digits)");
    }
    if (auto small = b->to_int64()) {
      return push_new(slot::integer(*small));
    }
    return push_big(*b);
  }

  result<void> op_int_text() {
    auto line = read_line();
    if (!line) {
      return unexpected(line.error());
    }
    if (*line == "01") {
      return push_new(slot::boolean(true));
    }
    if (*line == "00") {
      return push_new(slot::boolean(false));
    }
    return push_decimal(*line);
  }

  result<void> op_long_text() {
    auto line = read_line();
    if (!line) {
      return unexpected(line.error());
    }
    std::string_view t = *line;
    if (!t.empty() && t.back() == 'L') {
      t.remove_suffix(1);
    }
    return push_decimal(t);
  }

  result<void> op_float_text() {
    auto line = read_line();
    if (!line) {
      return unexpected(line.error());
    }
    double d = 0;
    auto [end, ec] = std::from_chars(line->data(), line->data() + line->size(), d);
    if (ec != std::errc{} || end != line->data() + line->size()) {
      return fail(errc::malformed, "FLOAT argument is not a number");
    }
    return push_new(slot::floating(d));
  }

  result<void> op_binfloat() {
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

  result<void> op_get(std::uint64_t idx) {
    if (idx >= memo.size() || memo[idx].tag == slot_tag::empty) {
      return fail(errc::missing_memo, "GET of memo entry " + std::to_string(idx) + ", which was never stored");
    }
    slot s = memo[idx];
    seal(s);
    stack.push_back(s);
    return {};
  }

  result<void> op_put(std::uint64_t idx) {
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

  result<void> op_mark() {
    if (marks.size() > options.max_depth) {
      return fail(errc::too_deep, "pickle opens more MARKs than load_options::max_depth");
    }
    marks.push_back(stack.size());
    return {};
  }

  result<void> op_pop() {
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

  result<void> op_dup() {
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
  result<void> build_from(node_kind k, std::size_t from, std::size_t step = 1) {
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

  result<void> op_from_mark(node_kind k, std::size_t step = 1) {
    auto m = pop_mark();
    if (!m) {
      return unexpected(m.error());
    }
    return build_from(k, *m, step);
  }

  result<void> op_tuple_n(std::size_t n) {
    if (stack.size() < fence() + n) {
      return fail(errc::malformed, "pickle stack underflow");
    }
    return build_from(node_kind::tuple, stack.size() - n);
  }

  result<void> op_empty(node_kind k) {
    auto id = new_node(k);
    if (!id) {
      return unexpected(id.error());
    }
    stack.push_back(slot::node(*id));
    return {};
  }

  // APPENDS / SETITEMS / ADDITEMS: the items above the mark go into the container below it.
  result<void> op_add_from_mark(node_kind k, std::string_view op, std::size_t step) {
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
  result<void> op_add_n(node_kind k, std::string_view op, std::size_t n) {
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

  // Resolves module.name to a class-reference node (allow-list or value-spelling builtin).
  result<void> push_global(std::string module, std::string name) {
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
    arena += module;
    arena += name;
    stack.push_back(slot::node(*id));
    return {};
  }

  result<void> op_global_text() {
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

  result<void> op_stack_global() {
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
  result<std::pair<std::size_t, std::size_t>> latin1_of(std::string_view s) {
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

  bool is_node(const slot& s, node_kind k) const { return s.tag == slot_tag::node && nodes[s.n].k == k; }

  // REDUCE of a value-spelling builtin: bytes(), bytes(b), bytearray(), bytearray(b),
  // bytearray(s, 'latin-1'), _codecs.encode(s, 'latin1'), set(), set(list), frozenset(...).
  result<void> reduce_builtin(ctor c, std::uint32_t args) {
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

  result<void> latin1_node(node_kind k, const std::vector<slot>& a) {
    if (!is_node(a[0], node_kind::str) || !is_node(a[1], node_kind::str) || !is_latin1_name(data(nodes[a[1].n]))) {
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
  result<void> instantiate(const slot& cls, const slot& args, bool new_object, std::string_view op) {
    if (!is_node(cls, node_kind::global)) {
      return fail(errc::malformed, std::string(op) + " needs a class, got a " +
                                       std::string(cls.tag == slot_tag::node ? kind_word(nodes[cls.n].k) : "scalar"));
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

  result<void> op_reduce() {
    auto args = pop();
    if (!args) {
      return unexpected(args.error());
    }
    auto cls = pop();
    if (!cls) {
      return unexpected(cls.error());
    }
    return instantiate(*cls, *args, false, "REDUCE");
  }

  result<void> op_newobj() {
    auto args = pop();
    if (!args) {
      return unexpected(args.error());
    }
    auto cls = pop();
    if (!cls) {
      return unexpected(cls.error());
    }
    return instantiate(*cls, *args, true, "NEWOBJ");
  }

  result<void> op_newobj_ex() {
    auto kwargs = pop();
    if (!kwargs) {
      return unexpected(kwargs.error());
    }
    if (!is_node(*kwargs, node_kind::dict) || !nodes[kwargs->n].items.empty()) {
      return fail(errc::malformed, "NEWOBJ_EX with keyword arguments is not supported");
    }
    return op_newobj();
  }

  // INST (text class) and OBJ (class on the stack): the arguments are above the mark.
  result<void> op_inst(bool text_class) {
    slot cls;
    if (text_class) {
      auto module = read_line();
      if (!module) {
        return unexpected(module.error());
      }
      auto name = read_line();
      if (!name) {
        return unexpected(name.error());
      }
      if (auto r = push_global(std::string(*module), std::string(*name)); !r) {
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

  result<void> op_build() {
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

  result<void> op_proto() {
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

  result<void> op_frame() {
    auto n = read_le(8);
    if (!n) {
      return unexpected(n.error());
    }
    if (*n > remaining()) {
      return fail(errc::truncated, "FRAME is longer than the rest of the pickle");
    }
    return {};
  }

  result<void> op_sized(node_kind k, std::size_t width) {
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

  result<void> op_text_index(bool get) {
    auto line = read_line();
    if (!line) {
      return unexpected(line.error());
    }
    std::uint64_t idx = 0;
    auto [end, ec] = std::from_chars(line->data(), line->data() + line->size(), idx);
    if (ec != std::errc{} || end != line->data() + line->size() || line->empty()) {
      return fail(errc::malformed, "GET/PUT index is not a number");
    }
    return get ? op_get(idx) : op_put(idx);
  }

  result<void> step(unsigned char op) {
    switch (op) {
      case '(': return op_mark();
      case '0': return op_pop();
      case '1': {
        auto m = pop_mark();
        if (!m) {
          return unexpected(m.error());
        }
        stack.resize(*m);
        return {};
      }
      case '2': return op_dup();
      case 'F': return op_float_text();
      case 'I': return op_int_text();
      case 'J': {
        auto v = read_le(4);
        return v ? push_new(slot::integer(static_cast<std::int32_t>(static_cast<std::uint32_t>(*v))))
                 : unexpected(v.error());
      }
      case 'K': {
        auto v = read_le(1);
        return v ? push_new(slot::integer(static_cast<std::int64_t>(*v))) : unexpected(v.error());
      }
      case 'L': return op_long_text();
      case 'M': {
        auto v = read_le(2);
        return v ? push_new(slot::integer(static_cast<std::int64_t>(*v))) : unexpected(v.error());
      }
      case 'N': return push_new(slot::none());
      case 'P':
      case 'Q': return fail(errc::unsupported_opcode, "persistent ids (PERSID/BINPERSID) are not supported");
      case 'R': return op_reduce();
      case 'S': return op_string_text();
      case 'V': return op_unicode_text();
      case 'T': {
        auto n = read_le(4);
        if (!n) {
          return unexpected(n.error());
        }
        if ((*n & 0x80000000U) != 0) {
          return fail(errc::malformed, "BINSTRING has a negative byte count");
        }
        return push_py2_str(*n);
      }
      case 'U': {
        auto n = read_le(1);
        return n ? push_py2_str(*n) : unexpected(n.error());
      }
      case 'X': return op_sized(node_kind::str, 4);
      case 'a': return op_add_n(node_kind::list, "APPEND", 1);
      case 'b': return op_build();
      case 'c': return op_global_text();
      case 'd': return op_from_mark(node_kind::dict, 2);
      case '}': return op_empty(node_kind::dict);
      case 'e': return op_add_from_mark(node_kind::list, "APPENDS", 1);
      case 'g': return op_text_index(true);
      case 'h': {
        auto v = read_le(1);
        return v ? op_get(*v) : unexpected(v.error());
      }
      case 'i': return op_inst(true);
      case 'j': {
        auto v = read_le(4);
        return v ? op_get(*v) : unexpected(v.error());
      }
      case 'l': return op_from_mark(node_kind::list);
      case ']': return op_empty(node_kind::list);
      case 'o': return op_inst(false);
      case 'p': return op_text_index(false);
      case 'q': {
        auto v = read_le(1);
        return v ? op_put(*v) : unexpected(v.error());
      }
      case 'r': {
        auto v = read_le(4);
        return v ? op_put(*v) : unexpected(v.error());
      }
      case 's': return op_add_n(node_kind::dict, "SETITEM", 2);
      case 't': return op_from_mark(node_kind::tuple);
      case ')': return op_empty(node_kind::tuple);
      case 'u': return op_add_from_mark(node_kind::dict, "SETITEMS", 2);
      case 'G': return op_binfloat();
      case 0x80: return op_proto();
      case 0x81: return op_newobj();
      case 0x82:
      case 0x83:
      case 0x84: return fail(errc::unsupported_opcode, "the copyreg extension registry (EXT1/2/4) is not supported");
      case 0x85: return op_tuple_n(1);
      case 0x86: return op_tuple_n(2);
      case 0x87: return op_tuple_n(3);
      case 0x88: return push_new(slot::boolean(true));
      case 0x89: return push_new(slot::boolean(false));
      case 0x8a: {
        auto n = read_le(1);
        return n ? push_long(*n) : unexpected(n.error());
      }
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
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%02x", op);
        return fail(errc::unknown_opcode, std::string("unknown opcode ") + buf);
      }
    }
  }

  // ---- the copy into values ----

  // Records a failure for fill(), which reports success as a bool.
  bool fill_failed(errc e, std::string_view what) {
    (void)fail(e, what);
    fill_error = e;
    return false;
  }

  // Appends the value of s to items, constructing scalars and strings in place.
  bool append(const slot& s, value::items_type& items) {
    switch (s.tag) {
      case slot_tag::none: items.emplace_back(); return true;
      case slot_tag::boolean: items.emplace_back(s.b); return true;
      case slot_tag::integer: items.emplace_back(s.i); return true;
      case slot_tag::floating: items.emplace_back(s.f); return true;
      case slot_tag::node:
        if (nodes[s.n].k == node_kind::str) {
          items.emplace_back(data(nodes[s.n]));
          return true;
        }
        break;
      case slot_tag::empty: break;
    }
    return fill(s, items.emplace_back());
  }

  // Writes the value of s into out.
  bool fill(const slot& s, value& out) {
    switch (s.tag) {
      case slot_tag::none: out = value(); return true;
      case slot_tag::boolean: out = value(s.b); return true;
      case slot_tag::integer: out = value(s.i); return true;
      case slot_tag::floating: out = value(s.f); return true;
      case slot_tag::empty: return fill_failed(errc::malformed, "internal: empty slot");
      case slot_tag::node: break;
    }
    const node& n = nodes[s.n];
    switch (n.k) {
      case node_kind::str: out = value(data(n)); return true;
      case node_kind::bytes: out = value::make_bytes(data(n)); return true;
      case node_kind::bytearray: out = value::make_bytearray(data(n)); return true;
      case node_kind::big: {
        std::string_view d = data(n);
        out = value(big_int::from_twos_complement(std::span(reinterpret_cast<const std::uint8_t*>(d.data()), d.size())));
        return true;
      }
      case node_kind::tuple:
      case node_kind::list: {
        value::items_type items;
        items.reserve(n.items.size());
        for (const slot& c : n.items) {
          if (!append(c, items)) {
            return false;
          }
        }
        out = n.k == node_kind::tuple ? value::make_tuple(std::move(items)) : value::make_list(std::move(items));
        return true;
      }
      case node_kind::dict: {
        dict d;
        d.reserve(n.items.size() / 2);
        for (std::size_t i = 0; i + 1 < n.items.size(); i += 2) {
          value k;
          value v;
          if (!fill(n.items[i], k)) {
            return false;
          }
          if (!k.hashable()) {
            return fill_failed(errc::unhashable, "unhashable type '" + std::string(k.type_name()) + "' as a dict key");
          }
          if (!fill(n.items[i + 1], v)) {
            return false;
          }
          d.insert_or_assign(std::move(k), std::move(v));
        }
        out = value(std::move(d));
        return true;
      }
      case node_kind::set:
      case node_kind::frozenset: {
        set st;
        for (const slot& c : n.items) {
          value e;
          if (!fill(c, e)) {
            return false;
          }
          if (!e.hashable()) {
            return fill_failed(errc::unhashable, "unhashable type '" + std::string(e.type_name()) + "' in a set");
          }
          st.insert(std::move(e));
        }
        out = n.k == node_kind::set ? value(std::move(st)) : value::make_frozenset(std::move(st));
        return true;
      }
      case node_kind::object: {
        object o;
        o.module = module_of(n);
        o.name = name_of(n);
        o.new_object = n.new_object;
        std::size_t nargs = n.items.size() - (n.has_state ? 1 : 0);
        o.args.resize(nargs);
        for (std::size_t i = 0; i < nargs; ++i) {
          if (!fill(n.items[i], o.args[i])) {
            return false;
          }
        }
        if (n.has_state && !fill(n.items.back(), o.state)) {
          return false;
        }
        out = value(std::move(o));
        return true;
      }
      case node_kind::global:
        return fill_failed(errc::malformed, "a bare class reference (" + std::string(module_of(n)) + "." +
                                                std::string(name_of(n)) + ") is not a value this codec holds");
    }
    return fill_failed(errc::malformed, "internal: unknown node");
  }

  // ---- one load ----

  void reset(std::span<const std::byte> data) {
    in = reinterpret_cast<const unsigned char*>(data.data());
    size = data.size();
    pos = op_pos = 0;
    proto = 0;
    created = 0;
    stack.clear();
    marks.clear();
    memo.clear();
    memo_count = 0;
    nodes_used = 0;
    arena.clear();
    message.clear();
    error_offset = 0;
  }

  // Drops buffers a large pickle grew, so one big message does not pin its memory.
  void trim_buffers() {
    constexpr std::size_t keep_nodes = 4096;
    if (nodes.size() > keep_nodes) {
      nodes.resize(keep_nodes);
      nodes.shrink_to_fit();
    }
    if (arena.capacity() > (std::size_t{1} << 20)) {
      std::string().swap(arena);
    }
    if (memo.capacity() > keep_nodes) {
      std::vector<slot>().swap(memo);
    }
    if (stack.capacity() > keep_nodes) {
      std::vector<slot>().swap(stack);
    }
    fast.trim();
    in = nullptr;
  }

  result<value> load(std::span<const std::byte> data) {
    reset(data);
    if (size > options.max_bytes) {
      auto e = fail(errc::too_large, "pickle of " + std::to_string(size) + " bytes is larger than load_options::max_bytes");
      trim_buffers();
      return e;
    }
    if (options.fast_path) {
      if (std::optional<value> v = fast.load(data, options)) {
        trim_buffers();
        return std::move(*v);
      }
    }
    result<value> out = run();
    trim_buffers();
    return out;
  }

  result<value> run() {
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
};

reader::reader(load_options options) : m_impl(std::make_unique<impl>(options)) {}
reader::reader(reader&&) noexcept = default;
reader& reader::operator=(reader&&) noexcept = default;
reader::~reader() = default;

result<value> reader::load(std::span<const std::byte> data) { return m_impl->load(data); }

result<value> reader::load(std::string_view data) { return m_impl->load(std::as_bytes(std::span(data.data(), data.size()))); }

const std::string& reader::error_message() const noexcept { return m_impl->message; }

std::size_t reader::error_offset() const noexcept { return m_impl->error_offset; }

result<value> loads(std::span<const std::byte> data, const load_options& options) {
  reader r(options);
  return r.load(data);
}

result<value> loads(std::string_view data, const load_options& options) {
  return loads(std::as_bytes(std::span(data.data(), data.size())), options);
}

}  // namespace corio::ipc::pickle
