// corio::ipc::pickle::reader, protocol 0: the text opcodes (STRING, UNICODE, INT, LONG,
// FLOAT, GET/PUT with a decimal index) and Python 2 strings (BINSTRING, SHORT_BINSTRING).
// The machine itself is described in pickle_reader.cpp.
#include <corio/ipc/pickle.hpp>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <string>

#include <corio/ipc/detail/pickle_machine.hpp>
#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

// A Python 2 str (BINSTRING/SHORT_BINSTRING): Python 3 decodes it as ASCII by default.
result<void> reader::impl::push_py2_str(std::size_t len) {
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

// BINSTRING (4-byte length, which must not be negative) and SHORT_BINSTRING (1 byte).
result<void> reader::impl::op_binstring(std::size_t width) {
  auto n = read_le(width);
  if (!n) {
    return unexpected(n.error());
  }
  if (width == 4 && (*n & 0x80000000U) != 0) {
    return fail(errc::malformed, "BINSTRING has a negative byte count");
  }
  return push_py2_str(*n);
}

namespace {

int hex_digit(char c) {
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
}

// Appends what the escape t[i] (the character after a backslash) stands for to out; advances i
// past the escape's digits. Returns what is wrong with it, or nullptr.
const char* unescape_one(std::string_view t, std::size_t& i, std::string& out) {
  char e = t[i];
  switch (e) {
    case '\n': return nullptr;  // line continuation
    case '\\': out += '\\'; return nullptr;
    case '\'': out += '\''; return nullptr;
    case '"': out += '"'; return nullptr;
    case 'a': out += '\a'; return nullptr;
    case 'b': out += '\b'; return nullptr;
    case 'f': out += '\f'; return nullptr;
    case 'n': out += '\n'; return nullptr;
    case 'r': out += '\r'; return nullptr;
    case 't': out += '\t'; return nullptr;
    case 'v': out += '\v'; return nullptr;
    case 'x': {
      int hi = i + 1 < t.size() ? hex_digit(t[i + 1]) : -1;
      int lo = i + 2 < t.size() ? hex_digit(t[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return "invalid \\x escape in STRING";
      }
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
      return nullptr;
    }
    default:
      if (e >= '0' && e <= '7') {
        int v = e - '0';
        for (int k = 0; k < 2 && i + 1 < t.size() && t[i + 1] >= '0' && t[i + 1] <= '7'; ++k) {
          v = v * 8 + (t[++i] - '0');
        }
        out += static_cast<char>(v & 0xff);
      } else {
        out += '\\';
        out += e;
      }
      return nullptr;
  }
}

// Appends the Python 2 str literal body t, its backslash escapes decoded, to out. Returns
// what is wrong with it, or nullptr.
const char* unescape_py2_literal(std::string_view t, std::string& out) {
  for (std::size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (i + 1 == t.size()) {
      return "trailing \\ in STRING";
    }
    ++i;
    if (const char* bad = unescape_one(t, i, out)) {
      return bad;
    }
  }
  return nullptr;
}

}  // namespace

// STRING: a quoted Python 2 str literal with backslash escapes; like Python 3, decoded as
// ASCII into a str.
result<void> reader::impl::op_string_text() {
  auto line = read_line();
  if (!line) {
    return unexpected(line.error());
  }
  std::string_view t = *line;
  if (t.size() < 2 || t.front() != t.back() || (t.front() != '\'' && t.front() != '"')) {
    return fail(errc::malformed, "the STRING opcode argument must be quoted");
  }
  std::size_t off = arena.size();
  if (const char* bad = unescape_py2_literal(t.substr(1, t.size() - 2), arena)) {
    arena.resize(off);
    return fail(errc::malformed, bad);
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
void reader::impl::append_utf8(std::uint32_t cp) {
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
result<void> reader::impl::op_unicode_text() {
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

result<void> reader::impl::push_decimal(std::string_view text) {
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

result<void> reader::impl::op_int_text() {
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

result<void> reader::impl::op_long_text() {
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

result<void> reader::impl::op_float_text() {
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

result<void> reader::impl::op_text_index(bool get) {
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

}  // namespace corio::ipc::pickle
