// corio::ipc::pickle::value::repr: Python's repr of a value (floats, str and bytes quoted
// as Python does), cut at a length limit.
#include <corio/ipc/pickle.hpp>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

namespace {

// Python's repr of a double: shortest round-trip digits, fixed notation for exponents
// -4..15, scientific otherwise, ".0" on integral fixed values.
std::string float_repr(double d) {
  if (std::isnan(d)) {
    return "nan";
  }
  if (std::isinf(d)) {
    return d < 0 ? "-inf" : "inf";
  }
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, end);
  // sci: [-]d[.ddd]e[+-]xx
  bool neg = sci[0] == '-';
  std::size_t epos = sci.find('e');
  std::string mant = sci.substr(neg ? 1 : 0, epos - (neg ? 1 : 0));
  int exp = std::atoi(sci.c_str() + epos + 1);
  std::string digits;
  for (char c : mant) {
    if (c != '.') {
      digits += c;
    }
  }
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0.";
      out.append(static_cast<std::size_t>(-exp - 1), '0');
      out += digits;
    } else {
      auto ip = static_cast<std::size_t>(exp) + 1;
      if (digits.size() <= ip) {
        out += digits;
        out.append(ip - digits.size(), '0');
        out += ".0";
      } else {
        out += digits.substr(0, ip);
        out += '.';
        out += digits.substr(ip);
      }
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    char e[16];
    std::snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += e;
  }
  return out;
}

// Appends Python's repr of a str (`bytes` false: UTF-8 passes through) or of a bytes
// (true: b'...', every byte from 0x7f up escaped); quotes chosen as Python does.
void quoted_repr(std::string& out, std::string_view s, bool bytes) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  if (bytes) {
    out += 'b';
  }
  out += quote;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (ch == quote || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f || (bytes && c > 0x7f)) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += ch;
    }
  }
  out += quote;
}

class repr_writer {
 public:
  explicit repr_writer(std::size_t limit) : m_limit(limit) {}

  void write(const value& v) {
    if (full()) {
      return;
    }
    switch (v.type()) {
      case kind::none: m_out += "None"; break;
      case kind::boolean: m_out += *v.as<bool>() ? "True" : "False"; break;
      case kind::integer: m_out += std::to_string(*v.as<std::int64_t>()); break;
      case kind::big_integer: m_out += v.if_big_int()->to_string(); break;
      case kind::floating: m_out += float_repr(*v.as<double>()); break;
      case kind::str: quoted_repr(m_out, *v.if_str(), false); break;
      case kind::bytes: quoted_repr(m_out, *v.if_bytes(), true); break;
      case kind::bytearray:
        m_out += "bytearray(";
        quoted_repr(m_out, *v.if_bytes(), true);
        m_out += ')';
        break;
      case kind::tuple:
        m_out += '(';
        items(*v.if_tuple());
        if (v.if_tuple()->size() == 1) {
          m_out += ',';
        }
        m_out += ')';
        break;
      case kind::list:
        m_out += '[';
        items(*v.if_list());
        m_out += ']';
        break;
      case kind::dict: write_dict(*v.if_dict()); break;
      case kind::set:
      case kind::frozenset: write_set(*v.if_set(), v.type() == kind::frozenset); break;
      case kind::object: write_object(*v.if_object()); break;
    }
  }

  // The repr, cut at the limit. The cut moves back to the start of a UTF-8 sequence it
  // would split: a repr goes back to Python inside a str (manager error messages), and a
  // str that is not UTF-8 cannot be pickled.
  std::string take() {
    if (m_out.size() > m_limit) {
      m_out.resize(detail::utf8_prefix_length(m_out, m_limit));
      m_out += "...";
    }
    return std::move(m_out);
  }

 private:
  bool full() const noexcept { return m_out.size() > m_limit; }

  void write_dict(const dict& d) {
    m_out += '{';
    bool first = true;
    for (const auto& e : d) {
      if (full()) {
        break;
      }
      if (!first) {
        m_out += ", ";
      }
      first = false;
      write(e.key);
      m_out += ": ";
      write(e.mapped);
    }
    m_out += '}';
  }

  void write_set(const set& s, bool frozen) {
    if (s.empty()) {
      m_out += frozen ? "frozenset()" : "set()";
      return;
    }
    m_out += frozen ? "frozenset({" : "{";
    bool first = true;
    for (const value& e : s) {
      if (full()) {
        break;
      }
      if (!first) {
        m_out += ", ";
      }
      first = false;
      write(e);
    }
    m_out += frozen ? "})" : "}";
  }

  // An object as its constructor call: name(args...) (builtins unqualified).
  void write_object(const object& o) {
    m_out += o.module == "builtins" ? o.name : o.qualified_name();
    m_out += '(';
    items(o.args);
    m_out += ')';
  }
  void items(const value::items_type& xs) {
    bool first = true;
    for (const value& x : xs) {
      if (full()) {
        return;
      }
      if (!first) {
        m_out += ", ";
      }
      first = false;
      write(x);
    }
  }

  std::size_t m_limit;
  std::string m_out;
};

}  // namespace

std::string value::repr(std::size_t max_chars) const {
  repr_writer w(max_chars);
  w.write(*this);
  return w.take();
}

}  // namespace corio::ipc::pickle
