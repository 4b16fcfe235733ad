// corio::ipc::pickle values compared and hashed: operator== (identity of types and
// contents) and Python's key equality and hashing (1 == 1.0 == True as keys), which dict
// and set use; the hash primitives are in detail/pickle_hash.hpp.
#include <corio/ipc/pickle.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <corio/ipc/detail/pickle_hash.hpp>
#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

// Sets as keys, through the hash each element got when it was inserted: hashing an element
// again costs its whole size, and sets nested in sets would hash their inner elements once
// per level (a chain of n frozensets: n^2 hashes for one key comparison, as many per
// lookup of such a key; a small pickle could spend seconds in one dict).
struct detail::set_access {
  // Whether every element of `of` has a key-equal element in `in`.
  static bool contains_all(const set& in, const set& of) noexcept {
    for (std::size_t i = 0; i < of.m_items.size(); ++i) {
      if (in.locate(of.m_items[i], of.m_hashes[i]) == std::string::npos) {
        return false;
      }
    }
    return true;
  }
  // The hash of a set: order-independent over its elements' hashes.
  static std::size_t hash(const set& s) noexcept {
    std::uint64_t h = 0;
    for (std::size_t x : s.m_hashes) {
      h += mix(x);
    }
    return static_cast<std::size_t>(mix(h ^ tag_set));
  }
};

namespace {

using detail::hash_bytes;
using detail::hash_number;
using detail::mix;
using detail::tag_bytes;
using detail::tag_dict;
using detail::tag_int;
using detail::tag_list;
using detail::tag_none;
using detail::tag_object;
using detail::tag_set;
using detail::tag_str;
using detail::tag_tuple;

bool is_numeric(kind k) noexcept {
  return k == kind::boolean || k == kind::integer || k == kind::big_integer || k == kind::floating;
}

std::int64_t small_int_of(const value& v) noexcept {
  if (v.type() == kind::boolean) {
    return *v.as<bool>() ? 1 : 0;
  }
  return *v.as<std::int64_t>();
}

// An integer's hash. By its double when a double holds it exactly, so that it equals the
// hash of that float (2**60 == 2.0**60 in Python); otherwise by its exact bytes through the
// keyed hash: distinct integers that round to one double must not share a hash (2**60 + k
// for every k below 256 would all collide in an index).
std::size_t hash_int64(std::int64_t v) noexcept {
  const double d = static_cast<double>(v);
  if (d < 9223372036854775808.0 && static_cast<std::int64_t>(d) == v) {
    return hash_number(d);
  }
  char bytes[sizeof v];
  std::memcpy(bytes, &v, sizeof v);
  return hash_bytes(std::string_view(bytes, sizeof bytes), tag_int);
}

// The bits of `b` from bit `from` on, as an int64 (sign-extended past the last byte).
std::int64_t bits_from(std::span<const std::uint8_t> le, std::size_t from, bool negative) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 64; ++i) {
    const std::size_t bit = from + i;
    const bool set = bit / 8 < le.size() ? ((le[bit / 8] >> (bit % 8)) & 1) != 0 : negative;
    v |= static_cast<std::uint64_t>(set) << i;
  }
  return static_cast<std::int64_t>(v);
}

// The double that holds `b` exactly, if one does (at most 53 significant bits, finite).
// Reads the two's complement bytes only: no allocation (key_hash is noexcept).
std::optional<double> exact_double(const big_int& b) noexcept {
  auto le = b.twos_complement();
  const bool negative = b.negative();
  std::size_t trailing_zeros = 0;  // -x has the trailing zeros of x
  for (std::uint8_t byte : le) {
    if (byte != 0) {
      trailing_zeros += static_cast<std::size_t>(std::countr_zero(byte));
      break;
    }
    trailing_zeros += 8;
  }
  // b >> trailing_zeros is odd; b is exact when that fits 53 bits (with its sign).
  const std::int64_t odd = bits_from(le, trailing_zeros, negative);
  const std::int64_t limit = std::int64_t{1} << 53;
  if (trailing_zeros > 1024 || odd >= limit || odd <= -limit ||
      bits_from(le, trailing_zeros + 63, negative) != (negative ? -1 : 0)) {
    return std::nullopt;  // more than 64 significant bits, or more than 53
  }
  const double d = std::ldexp(static_cast<double>(odd), static_cast<int>(trailing_zeros));
  if (std::isinf(d)) {
    return std::nullopt;
  }
  return d;
}

std::size_t hash_big(const big_int& b) noexcept {
  if (auto small = b.to_int64()) {
    return hash_int64(*small);
  }
  if (auto d = exact_double(b)) {
    return hash_number(*d);
  }
  auto bytes = b.twos_complement();
  return hash_bytes(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), tag_int);
}

// A NaN is never key_equal to anything, itself included, so any hash is consistent; a
// fresh one per call keeps NaN keys from sharing one probe run (a pickle can repeat one
// memoized NaN as every key of a dict: n keys would cost n^2 probes).
std::size_t hash_nan() noexcept {
  // relaxed: only distinctness matters; nothing is published.
  static std::atomic<std::uint64_t> counter{0};
  return static_cast<std::size_t>(mix(counter.fetch_add(1, std::memory_order_relaxed) ^ detail::hash_seed()));
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

// The parts of value::key_equal for containers; the kinds are already known to match.

bool sequence_key_equal(const value& a, const value& b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  const auto& xa = *a.if_sequence();
  const auto& xb = *b.if_sequence();
  for (std::size_t i = 0; i < xa.size(); ++i) {
    if (!value::key_equal(xa[i], xb[i])) {
      return false;
    }
  }
  return true;
}

bool set_key_equal(const value& a, const value& b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  return detail::set_access::contains_all(*b.if_set(), *a.if_set());
}

bool dict_key_equal(const value& a, const value& b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  const dict& db = *b.if_dict();
  for (const auto& e : *a.if_dict()) {
    const value* other = db.find(e.key);
    if (!other || !value::key_equal(e.mapped, *other)) {
      return false;
    }
  }
  return true;
}

bool object_key_equal(const object& oa, const object& ob) noexcept {
  if (oa.module != ob.module || oa.name != ob.name || oa.new_object != ob.new_object ||
      oa.args.size() != ob.args.size() || !value::key_equal(oa.state, ob.state)) {
    return false;
  }
  for (std::size_t i = 0; i < oa.args.size(); ++i) {
    if (!value::key_equal(oa.args[i], ob.args[i])) {
      return false;
    }
  }
  return true;
}

}  // namespace

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
    case kind::list: return ka == kb && sequence_key_equal(a, b);
    case kind::set:
    case kind::frozenset: return (kb == kind::set || kb == kind::frozenset) && set_key_equal(a, b);
    case kind::dict: return kb == kind::dict && dict_key_equal(a, b);
    case kind::object: return kb == kind::object && object_key_equal(*a.if_object(), *b.if_object());
    default: return false;
  }
}

std::size_t value::key_hash(const value& v) noexcept {
  switch (v.type()) {
    case kind::none: return static_cast<std::size_t>(mix(tag_none));
    case kind::boolean:
    case kind::integer: return hash_int64(small_int_of(v));
    case kind::big_integer: return hash_big(*v.if_big_int());
    case kind::floating: {
      double d = *v.as<double>();
      if (std::isnan(d)) {
        return hash_nan();
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
    case kind::frozenset: return detail::set_access::hash(*v.if_set());
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

}  // namespace corio::ipc::pickle
