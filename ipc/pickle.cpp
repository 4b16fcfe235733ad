// corio::ipc::pickle values: the error category, big_int arithmetic, value, dict, set and
// object (equality, Python's key equality and hashing, repr), the allow-list and the
// exception helpers. The decoder is in pickle_reader.cpp, the encoder in pickle_writer.cpp.
#include <corio/ipc/pickle.hpp>

#include <sys/random.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>

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

// splitmix64's finalizer: spreads the bits of a hash.
std::uint64_t mix(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// A per-process random key mixed into every hash, so that a peer cannot pick numbers (or
// anything whose hashes differ before mixing) that collide in a dict's index.
std::uint64_t hash_seed() noexcept {
  static const std::uint64_t seed = [] {
    std::uint64_t s = 0;
    if (::getrandom(&s, sizeof s, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof s)) {
      s = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
          reinterpret_cast<std::uintptr_t>(&s);
    }
    return s;
  }();
  return seed;
}

std::size_t hash_bytes(std::string_view s, std::uint64_t tag) noexcept {
  return static_cast<std::size_t>(mix(std::hash<std::string_view>{}(s) ^ tag ^ hash_seed()));
}

constexpr std::uint64_t tag_none = 0x6e6f6e65;
constexpr std::uint64_t tag_str = 0x737472;
constexpr std::uint64_t tag_bytes = 0x6279746573;
constexpr std::uint64_t tag_tuple = 0x7475706c65;
constexpr std::uint64_t tag_list = 0x6c697374;
constexpr std::uint64_t tag_set = 0x736574;
constexpr std::uint64_t tag_dict = 0x64696374;
constexpr std::uint64_t tag_object = 0x6f626a;

std::size_t hash_number(double d) noexcept {
  if (d == 0.0) {
    d = 0.0;  // -0.0 and 0.0 are one key
  }
  std::uint64_t bits = std::bit_cast<std::uint64_t>(d);
  return static_cast<std::size_t>(mix(bits ^ hash_seed()));
}

// ---- magnitude arithmetic for big_int (32-bit limbs, little-endian) ----

using limbs = std::vector<std::uint32_t>;

void trim(limbs& m) {
  while (!m.empty() && m.back() == 0) {
    m.pop_back();
  }
}

// The magnitude of a two's complement byte string.
limbs magnitude_of(std::span<const std::uint8_t> le, bool negative) {
  std::vector<std::uint8_t> bytes(le.begin(), le.end());
  if (negative) {
    unsigned carry = 1;
    for (auto& b : bytes) {
      unsigned v = static_cast<std::uint8_t>(~b) + carry;
      b = static_cast<std::uint8_t>(v);
      carry = v >> 8;
    }
  }
  limbs m((bytes.size() + 3) / 4, 0);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    m[i / 4] |= static_cast<std::uint32_t>(bytes[i]) << (8 * (i % 4));
  }
  trim(m);
  return m;
}

// Divides m by d in place; returns the remainder.
std::uint32_t divide_small(limbs& m, std::uint32_t d) {
  std::uint64_t rem = 0;
  for (std::size_t i = m.size(); i-- > 0;) {
    std::uint64_t cur = (rem << 32) | m[i];
    m[i] = static_cast<std::uint32_t>(cur / d);
    rem = cur % d;
  }
  trim(m);
  return static_cast<std::uint32_t>(rem);
}

void multiply_add(limbs& m, std::uint32_t mul, std::uint32_t add) {
  std::uint64_t carry = add;
  for (auto& limb : m) {
    std::uint64_t cur = static_cast<std::uint64_t>(limb) * mul + carry;
    limb = static_cast<std::uint32_t>(cur);
    carry = cur >> 32;
  }
  if (carry != 0) {
    m.push_back(static_cast<std::uint32_t>(carry));
  }
}

constexpr std::size_t max_decimal_digits = 4300;

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

// Appends Python's repr of a str (quotes chosen as Python does).
void str_repr(std::string& out, std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
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
    } else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += ch;
    }
  }
  out += quote;
}

void bytes_repr(std::string& out, std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  out += 'b';
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
    } else if (c < 0x20 || c >= 0x7f) {
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
      case kind::str: str_repr(m_out, *v.if_str()); break;
      case kind::bytes: bytes_repr(m_out, *v.if_bytes()); break;
      case kind::bytearray:
        m_out += "bytearray(";
        bytes_repr(m_out, *v.if_bytes());
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
      case kind::dict: {
        m_out += '{';
        bool first = true;
        for (const auto& e : *v.if_dict()) {
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
        break;
      }
      case kind::set:
      case kind::frozenset: {
        const set& s = *v.if_set();
        bool frozen = v.type() == kind::frozenset;
        if (s.empty()) {
          m_out += frozen ? "frozenset()" : "set()";
          break;
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
        break;
      }
      case kind::object: {
        const object& o = *v.if_object();
        m_out += o.module == "builtins" ? o.name : o.qualified_name();
        m_out += '(';
        items(o.args);
        m_out += ')';
        break;
      }
    }
  }

  std::string take() {
    if (m_out.size() > m_limit) {
      m_out.resize(m_limit);
      m_out += "...";
    }
    return std::move(m_out);
  }

 private:
  bool full() const noexcept { return m_out.size() > m_limit; }
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

bool is_numeric(kind k) noexcept {
  return k == kind::boolean || k == kind::integer || k == kind::big_integer || k == kind::floating;
}

std::int64_t small_int_of(const value& v) noexcept {
  if (v.type() == kind::boolean) {
    return *v.as<bool>() ? 1 : 0;
  }
  return *v.as<std::int64_t>();
}

bool numeric_equal(const value& a, const value& b) noexcept {
  kind ka = a.type();
  kind kb = b.type();
  if (ka == kind::floating && kb == kind::floating) {
    return *a.as<double>() == *b.as<double>();
  }
  if (kb == kind::floating) {
    return numeric_equal(b, a);
  }
  // b is bool, integer or big_integer.
  if (ka == kind::floating) {
    double d = *a.as<double>();
    if (kb == kind::big_integer) {
      auto exact = big_int::from_double(d);
      return exact && *exact == *b.if_big_int();
    }
    std::int64_t i = small_int_of(b);
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || std::trunc(d) != d) {
      return false;
    }
    return static_cast<std::int64_t>(d) == i;
  }
  if (ka == kind::big_integer || kb == kind::big_integer) {
    return ka == kb && *a.if_big_int() == *b.if_big_int();  // normalized: never equal to an int64
  }
  return small_int_of(a) == small_int_of(b);
}

const std::string& bytes_of(const value& v) noexcept { return *v.if_bytes(); }

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

// ---- big_int ----

big_int::big_int(std::int64_t v) {
  auto u = static_cast<std::uint64_t>(v);
  for (int i = 0; i < 8; ++i) {
    m_bytes.push_back(static_cast<std::uint8_t>(u >> (8 * i)));
  }
  detail::normalize_twos_complement(m_bytes);
}

big_int big_int::from_unsigned(std::uint64_t v) {
  big_int b;
  for (int i = 0; i < 8; ++i) {
    b.m_bytes.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  b.m_bytes.push_back(0);
  detail::normalize_twos_complement(b.m_bytes);
  return b;
}

big_int big_int::from_twos_complement(std::span<const std::uint8_t> le) {
  big_int b;
  b.m_bytes.assign(le.begin(), le.end());
  detail::normalize_twos_complement(b.m_bytes);
  return b;
}

big_int detail::big_int_from_magnitude(const std::vector<std::uint32_t>& magnitude, bool negative) {
  std::vector<std::uint8_t> bytes;
  bytes.reserve(magnitude.size() * 4 + 1);
  for (std::uint32_t limb : magnitude) {
    for (int i = 0; i < 4; ++i) {
      bytes.push_back(static_cast<std::uint8_t>(limb >> (8 * i)));
    }
  }
  bytes.push_back(0);  // room for the sign
  if (negative) {
    unsigned carry = 1;
    for (auto& b : bytes) {
      unsigned v = static_cast<std::uint8_t>(~b) + carry;
      b = static_cast<std::uint8_t>(v);
      carry = v >> 8;
    }
  }
  return big_int::from_twos_complement(bytes);
}

result<big_int> big_int::from_decimal(std::string_view text) {
  bool negative = false;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    negative = text[0] == '-';
    text.remove_prefix(1);
  }
  if (text.empty() || text.size() > max_decimal_digits) {
    return unexpected(make_error_code(text.empty() ? errc::malformed : errc::out_of_range));
  }
  limbs m;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return unexpected(make_error_code(errc::malformed));
    }
    multiply_add(m, 10, static_cast<std::uint32_t>(c - '0'));
  }
  trim(m);
  return detail::big_int_from_magnitude(m, negative);
}

std::optional<big_int> big_int::from_double(double d) {
  if (!std::isfinite(d) || std::trunc(d) != d) {
    return std::nullopt;
  }
  bool negative = d < 0;
  int exp = 0;
  double frac = std::frexp(std::fabs(d), &exp);  // |d| = frac * 2^exp, frac in [0.5, 1)
  if (exp <= 0) {
    return big_int{};
  }
  // 53 significant bits as an integer, then shifted into place.
  auto mant = static_cast<std::uint64_t>(std::ldexp(frac, 53));
  int shift = exp - 53;
  limbs m{static_cast<std::uint32_t>(mant), static_cast<std::uint32_t>(mant >> 32)};
  if (shift < 0) {
    std::uint64_t v = mant >> (-shift);
    m = {static_cast<std::uint32_t>(v), static_cast<std::uint32_t>(v >> 32)};
  } else {
    for (int i = 0; i < shift; ++i) {
      multiply_add(m, 2, 0);
    }
  }
  trim(m);
  return detail::big_int_from_magnitude(m, negative);
}

std::optional<std::int64_t> big_int::to_int64() const noexcept {
  if (m_bytes.size() > 8) {
    return std::nullopt;
  }
  std::uint64_t u = negative() ? ~std::uint64_t{0} : 0;
  for (std::size_t i = 0; i < m_bytes.size(); ++i) {
    u &= ~(std::uint64_t{0xff} << (8 * i));
    u |= static_cast<std::uint64_t>(m_bytes[i]) << (8 * i);
  }
  return static_cast<std::int64_t>(u);
}

std::optional<std::uint64_t> big_int::to_uint64() const noexcept {
  if (negative() || m_bytes.size() > 9 || (m_bytes.size() == 9 && m_bytes[8] != 0)) {
    return std::nullopt;
  }
  std::uint64_t u = 0;
  for (std::size_t i = 0; i < m_bytes.size() && i < 8; ++i) {
    u |= static_cast<std::uint64_t>(m_bytes[i]) << (8 * i);
  }
  return u;
}

double big_int::to_double() const noexcept {
  limbs m = magnitude_of(m_bytes, negative());
  double d = 0;
  for (std::size_t i = m.size(); i-- > 0;) {
    d = d * 4294967296.0 + m[i];
  }
  return negative() ? -d : d;
}

std::size_t big_int::bit_length() const noexcept {
  limbs m = magnitude_of(m_bytes, negative());
  if (m.empty()) {
    return 0;
  }
  return (m.size() - 1) * 32 + static_cast<std::size_t>(std::bit_width(m.back()));
}

std::string big_int::to_string() const {
  std::size_t bits = bit_length();
  // digits <= bits * log10(2) + 1
  if (bits > 0 && static_cast<double>(bits) * 0.30103 + 1 > static_cast<double>(max_decimal_digits)) {
    return "<int of " + std::to_string(bits) + " bits>";
  }
  limbs m = magnitude_of(m_bytes, negative());
  if (m.empty()) {
    return "0";
  }
  std::vector<std::uint32_t> chunks;  // base 10^9, least significant first
  while (!m.empty()) {
    chunks.push_back(divide_small(m, 1000000000));
  }
  std::string out = negative() ? "-" : "";
  out += std::to_string(chunks.back());
  for (std::size_t i = chunks.size() - 1; i-- > 0;) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%09u", chunks[i]);
    out += buf;
  }
  return out;
}

void detail::normalize_twos_complement(std::vector<std::uint8_t>& b) {
  while (b.size() > 1) {
    std::uint8_t last = b[b.size() - 1];
    std::uint8_t prev = b[b.size() - 2];
    if ((last == 0x00 && (prev & 0x80) == 0) || (last == 0xff && (prev & 0x80) != 0)) {
      b.pop_back();
    } else {
      break;
    }
  }
  if (b.size() == 1 && b[0] == 0) {
    b.clear();
  }
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

std::string value::repr(std::size_t max_chars) const {
  repr_writer w(max_chars);
  w.write(*this);
  return w.take();
}

bool operator==(const value& a, const value& b) noexcept {
  if (a.type() != b.type()) {
    return false;
  }
  switch (a.type()) {
    case kind::none: return true;
    case kind::boolean: return *a.as<bool>() == *b.as<bool>();
    case kind::integer: return *a.as<std::int64_t>() == *b.as<std::int64_t>();
    case kind::big_integer: return *a.if_big_int() == *b.if_big_int();
    case kind::floating:
      return std::bit_cast<std::uint64_t>(*a.as<double>()) == std::bit_cast<std::uint64_t>(*b.as<double>());
    case kind::str: return *a.if_str() == *b.if_str();
    case kind::bytes:
    case kind::bytearray: return bytes_of(a) == bytes_of(b);
    case kind::tuple:
    case kind::list: return *a.if_sequence() == *b.if_sequence();
    case kind::dict: return *a.if_dict() == *b.if_dict();
    case kind::set:
    case kind::frozenset: return *a.if_set() == *b.if_set();
    case kind::object: return *a.if_object() == *b.if_object();
  }
  return false;
}

bool value::key_equal(const value& a, const value& b) noexcept {
  kind ka = a.type();
  kind kb = b.type();
  if (is_numeric(ka) || is_numeric(kb)) {
    return is_numeric(ka) && is_numeric(kb) && numeric_equal(a, b);
  }
  switch (ka) {
    case kind::none: return kb == kind::none;
    case kind::str: return kb == kind::str && *a.if_str() == *b.if_str();
    case kind::bytes:
    case kind::bytearray: return (kb == kind::bytes || kb == kind::bytearray) && bytes_of(a) == bytes_of(b);
    case kind::tuple:
    case kind::list: {
      if (ka != kb || a.size() != b.size()) {
        return false;
      }
      const auto& xa = *a.if_sequence();
      const auto& xb = *b.if_sequence();
      for (std::size_t i = 0; i < xa.size(); ++i) {
        if (!key_equal(xa[i], xb[i])) {
          return false;
        }
      }
      return true;
    }
    case kind::set:
    case kind::frozenset: {
      if ((kb != kind::set && kb != kind::frozenset) || a.size() != b.size()) {
        return false;
      }
      const set& sb = *b.if_set();
      for (const value& e : *a.if_set()) {
        if (!sb.contains(e)) {
          return false;
        }
      }
      return true;
    }
    case kind::dict: {
      if (kb != kind::dict || a.size() != b.size()) {
        return false;
      }
      const dict& db = *b.if_dict();
      for (const auto& e : *a.if_dict()) {
        const value* other = db.find(e.key);
        if (!other || !key_equal(e.mapped, *other)) {
          return false;
        }
      }
      return true;
    }
    case kind::object: {
      if (kb != kind::object) {
        return false;
      }
      const object& oa = *a.if_object();
      const object& ob = *b.if_object();
      if (oa.module != ob.module || oa.name != ob.name || oa.new_object != ob.new_object ||
          oa.args.size() != ob.args.size() || !key_equal(oa.state, ob.state)) {
        return false;
      }
      for (std::size_t i = 0; i < oa.args.size(); ++i) {
        if (!key_equal(oa.args[i], ob.args[i])) {
          return false;
        }
      }
      return true;
    }
    default: return false;
  }
}

std::size_t value::key_hash(const value& v) noexcept {
  switch (v.type()) {
    case kind::none: return static_cast<std::size_t>(mix(tag_none));
    case kind::boolean:
    case kind::integer: return hash_number(static_cast<double>(small_int_of(v)));
    case kind::big_integer: return hash_number(v.if_big_int()->to_double());
    case kind::floating: {
      double d = *v.as<double>();
      if (std::isnan(d)) {
        return static_cast<std::size_t>(mix(std::bit_cast<std::uint64_t>(d)));
      }
      return hash_number(d);
    }
    case kind::str: return hash_bytes(*v.if_str(), tag_str);
    case kind::bytes:
    case kind::bytearray: return hash_bytes(bytes_of(v), tag_bytes);
    case kind::tuple:
    case kind::list: {
      std::uint64_t h = v.type() == kind::tuple ? tag_tuple : tag_list;
      for (const value& x : *v.if_sequence()) {
        h = mix(h ^ key_hash(x)) + 0x9e3779b97f4a7c15ULL;
      }
      return static_cast<std::size_t>(h);
    }
    case kind::set:
    case kind::frozenset: {
      std::uint64_t h = 0;
      for (const value& x : *v.if_set()) {
        h += mix(key_hash(x));  // order-independent
      }
      return static_cast<std::size_t>(mix(h ^ tag_set));
    }
    case kind::dict: {
      std::uint64_t h = 0;
      for (const auto& e : *v.if_dict()) {
        h += mix(key_hash(e.key) ^ mix(key_hash(e.mapped)));
      }
      return static_cast<std::size_t>(mix(h ^ tag_dict));
    }
    case kind::object: {
      const object& o = *v.if_object();
      std::uint64_t h = hash_bytes(o.module, tag_object) ^ hash_bytes(o.name, tag_object);
      for (const value& x : o.args) {
        h = mix(h ^ key_hash(x));
      }
      return static_cast<std::size_t>(h);
    }
  }
  return 0;
}

bool value::hashable() const noexcept {
  switch (type()) {
    case kind::none:
    case kind::boolean:
    case kind::integer:
    case kind::big_integer:
    case kind::floating:
    case kind::str:
    case kind::bytes: return true;
    case kind::tuple:
      return std::all_of(if_tuple()->begin(), if_tuple()->end(), [](const value& x) { return x.hashable(); });
    case kind::frozenset: return true;  // its elements are hashable by construction
    default: return false;
  }
}

// ---- dict ----

namespace {

constexpr std::size_t linear_limit = 8;

std::vector<std::uint32_t> make_slots(std::size_t n) {
  std::size_t cap = 16;
  while (cap < n * 2) {
    cap *= 2;
  }
  return std::vector<std::uint32_t>(cap, 0);
}

void slots_add(std::vector<std::uint32_t>& slots, std::size_t hash, std::size_t position) {
  std::size_t mask = slots.size() - 1;
  std::size_t i = hash & mask;
  while (slots[i] != 0) {
    i = (i + 1) & mask;
  }
  slots[i] = static_cast<std::uint32_t>(position + 1);
}

// Finds the position whose hash matches and whose element satisfies eq, or npos.
template <class Eq>
std::size_t slots_find(const std::vector<std::uint32_t>& slots, const std::vector<std::size_t>& hashes,
                       std::size_t hash, Eq eq) {
  if (slots.empty()) {
    for (std::size_t i = 0; i < hashes.size(); ++i) {
      if (hashes[i] == hash && eq(i)) {
        return i;
      }
    }
    return std::string::npos;
  }
  std::size_t mask = slots.size() - 1;
  for (std::size_t i = hash & mask; slots[i] != 0; i = (i + 1) & mask) {
    std::size_t pos = slots[i] - 1;
    if (hashes[pos] == hash && eq(pos)) {
      return pos;
    }
  }
  return std::string::npos;
}

// How many positions have this hash and satisfy eq: all of them lie in the probe run that
// starts at the hash's slot (linear probing; erase rebuilds the index).
template <class Eq>
std::size_t slots_count(const std::vector<std::uint32_t>& slots, const std::vector<std::size_t>& hashes,
                        std::size_t hash, Eq eq) {
  std::size_t n = 0;
  if (slots.empty()) {
    for (std::size_t i = 0; i < hashes.size(); ++i) {
      n += (hashes[i] == hash && eq(i)) ? 1 : 0;
    }
    return n;
  }
  std::size_t mask = slots.size() - 1;
  for (std::size_t i = hash & mask; slots[i] != 0; i = (i + 1) & mask) {
    std::size_t pos = slots[i] - 1;
    n += (hashes[pos] == hash && eq(pos)) ? 1 : 0;
  }
  return n;
}

}  // namespace

dict::dict() noexcept = default;
dict::dict(const dict&) = default;
dict::dict(dict&&) noexcept = default;
dict& dict::operator=(const dict&) = default;
dict& dict::operator=(dict&&) noexcept = default;
dict::~dict() = default;

dict::dict(std::initializer_list<std::pair<value, value>> pairs) {
  reserve(pairs.size());
  for (const auto& p : pairs) {
    insert_or_assign(p.first, p.second);
  }
}

std::size_t dict::size() const noexcept { return m_entries.size(); }
const dict::entry* dict::begin() const noexcept { return m_entries.data(); }
const dict::entry* dict::end() const noexcept { return m_entries.data() + m_entries.size(); }

void dict::reserve(std::size_t n) {
  m_entries.reserve(n);
  m_hashes.reserve(n);
}

std::size_t dict::locate(const value& key, std::size_t hash) const noexcept {
  return slots_find(m_slots, m_hashes, hash, [&](std::size_t i) { return value::key_equal(m_entries[i].key, key); });
}

const value* dict::find(const value& key) const noexcept {
  std::size_t pos = locate(key, value::key_hash(key));
  return pos == std::string::npos ? nullptr : &m_entries[pos].mapped;
}

value* dict::find(const value& key) noexcept {
  std::size_t pos = locate(key, value::key_hash(key));
  return pos == std::string::npos ? nullptr : &m_entries[pos].mapped;
}

const value* dict::get(std::string_view key) const noexcept {
  std::size_t hash = hash_bytes(key, tag_str);
  std::size_t pos = slots_find(m_slots, m_hashes, hash, [&](std::size_t i) {
    const std::string* s = m_entries[i].key.if_str();
    return s && *s == key;
  });
  return pos == std::string::npos ? nullptr : &m_entries[pos].mapped;
}

void dict::index_add(std::size_t hash, std::size_t position) {
  if (m_entries.size() <= linear_limit) {
    return;
  }
  if (m_slots.empty() || m_entries.size() * 2 > m_slots.size()) {
    rebuild_index();
    return;
  }
  slots_add(m_slots, hash, position);
}

void dict::rebuild_index() {
  m_slots.clear();
  if (m_entries.size() <= linear_limit) {
    return;
  }
  m_slots = make_slots(m_entries.size());
  for (std::size_t i = 0; i < m_hashes.size(); ++i) {
    slots_add(m_slots, m_hashes[i], i);
  }
}

bool dict::insert_or_assign(value key, value mapped) {
  std::size_t hash = value::key_hash(key);
  std::size_t pos = locate(key, hash);
  if (pos != std::string::npos) {
    m_entries[pos].mapped = std::move(mapped);
    return false;
  }
  m_entries.emplace_back(std::move(key), std::move(mapped));
  m_hashes.push_back(hash);
  index_add(hash, m_entries.size() - 1);
  return true;
}

bool dict::erase(const value& key) {
  std::size_t pos = locate(key, value::key_hash(key));
  if (pos == std::string::npos) {
    return false;
  }
  m_entries.erase(m_entries.begin() + static_cast<std::ptrdiff_t>(pos));
  m_hashes.erase(m_hashes.begin() + static_cast<std::ptrdiff_t>(pos));
  rebuild_index();
  return true;
}

// Identity of dicts: the same multiset of (key, value) pairs, each compared as values. A
// multiset, because keys that are not equal to themselves (NaN, tuples holding one) may
// appear more than once.
bool operator==(const dict& a, const dict& b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.m_entries.size(); ++i) {
    const auto& e = a.m_entries[i];
    auto same = [&](const dict& d) {
      return slots_count(d.m_slots, d.m_hashes, a.m_hashes[i], [&](std::size_t j) {
        return d.m_entries[j].key == e.key && d.m_entries[j].mapped == e.mapped;
      });
    };
    if (same(a) != same(b)) {
      return false;
    }
  }
  return true;
}

// ---- set ----

set::set() noexcept = default;
set::set(const set&) = default;
set::set(set&&) noexcept = default;
set& set::operator=(const set&) = default;
set& set::operator=(set&&) noexcept = default;
set::~set() = default;

set::set(std::initializer_list<value> elements) {
  for (const auto& e : elements) {
    insert(e);
  }
}

const value* set::begin() const noexcept { return m_items.data(); }
const value* set::end() const noexcept { return m_items.data() + m_items.size(); }

std::size_t set::locate(const value& element, std::size_t hash) const noexcept {
  return slots_find(m_slots, m_hashes, hash, [&](std::size_t i) { return value::key_equal(m_items[i], element); });
}

bool set::contains(const value& element) const noexcept {
  return locate(element, value::key_hash(element)) != std::string::npos;
}

void set::index_add(std::size_t hash, std::size_t position) {
  if (m_items.size() <= linear_limit) {
    return;
  }
  if (m_slots.empty() || m_items.size() * 2 > m_slots.size()) {
    rebuild_index();
    return;
  }
  slots_add(m_slots, hash, position);
}

void set::rebuild_index() {
  m_slots.clear();
  if (m_items.size() <= linear_limit) {
    return;
  }
  m_slots = make_slots(m_items.size());
  for (std::size_t i = 0; i < m_hashes.size(); ++i) {
    slots_add(m_slots, m_hashes[i], i);
  }
}

bool set::insert(value element) {
  std::size_t hash = value::key_hash(element);
  if (locate(element, hash) != std::string::npos) {
    return false;
  }
  m_items.push_back(std::move(element));
  m_hashes.push_back(hash);
  index_add(hash, m_items.size() - 1);
  return true;
}

bool set::erase(const value& element) {
  std::size_t pos = locate(element, value::key_hash(element));
  if (pos == std::string::npos) {
    return false;
  }
  m_items.erase(m_items.begin() + static_cast<std::ptrdiff_t>(pos));
  m_hashes.erase(m_hashes.begin() + static_cast<std::ptrdiff_t>(pos));
  rebuild_index();
  return true;
}

// Identity of sets: the same multiset of elements (see dict's operator==).
bool operator==(const set& a, const set& b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.m_items.size(); ++i) {
    const value& x = a.m_items[i];
    auto same = [&](const set& s) {
      return slots_count(s.m_slots, s.m_hashes, a.m_hashes[i], [&](std::size_t j) { return s.m_items[j] == x; });
    };
    if (same(a) != same(b)) {
      return false;
    }
  }
  return true;
}

bool operator==(const object& a, const object& b) noexcept {
  return a.module == b.module && a.name == b.name && a.new_object == b.new_object && a.args == b.args &&
         a.state == b.state;
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
