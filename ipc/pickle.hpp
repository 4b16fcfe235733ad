// corio::ipc::pickle: a safe codec for Python's pickle format (the payload of
// multiprocessing.connection and multiprocessing.managers messages).
//
// Concept: `value` is a Python-like value tree: None, bool, int (64-bit, and arbitrary
// size as `big_int`), float, str (UTF-8), bytes, bytearray, tuple, list, dict (insertion
// ordered), set, frozenset, and `object`: an instance of an allow-listed class, kept as
// data (module, name, constructor arguments, state), e.g. an exception to send back to
// Python. `loads` decodes pickles of protocols 0-5 (Python 3 writes 3 by default up to
// 3.7, 4 from 3.8; multiprocessing uses the default); `dumps` writes protocol 4 (read by
// every Python >= 3.4), or 5 on request.
//
// Safety: decoding never executes, imports or instantiates anything. A GLOBAL or
// STACK_GLOBAL may name only:
//   - the builtins that pickle uses to spell plain values in old protocols (bytes, bytearray,
//     set, frozenset, _codecs.encode): decoded straight to those values, never called; and
//     copyreg._reconstructor(cls, object, None) (protocols 0-1), read as cls.__new__(cls);
//   - a class on the allow-list (load_options::allowed, allow_list::defaults() when null:
//     the builtin exception classes, queue.Empty/Full, multiprocessing's RemoteError,
//     AuthenticationError, BufferTooShort, ProcessError, TimeoutError and managers.Token),
//     which REDUCE/NEWOBJ/NEWOBJ_EX/INST/OBJ and BUILD turn into an `object` value.
// Anything else (os.system, builtins.eval, RebuildProxy, ...) fails with
// errc::forbidden_class and a message naming it. Persistent ids, the extension registry
// and out-of-band buffers are refused (errc::unsupported_opcode). Self-referencing
// structures (a list that contains itself) are refused (errc::recursive): a value is a
// tree. Objects that Python shares (the memo) are copied, within max_values and
// max_data_bytes.
// Limits (load_options, each a clear error): input size (max_bytes, errc::too_large),
// nesting depth (max_depth, errc::too_deep), memo entries (max_memo,
// errc::memo_too_large), values created or expanded from shared ones (max_values,
// errc::too_large) and str/bytes/bytearray/big-int bytes the value holds, each copy of a
// shared one counted, with the latin-1 text decoded while loading (max_data_bytes,
// errc::too_large). Memory used while decoding is O(input size + max_values +
// max_data_bytes + the largest memo index used): the memo is sized to its highest index,
// so a pickle of about ten bytes storing at index 2^20 - 1 (just under max_memo's
// default) costs 16-33 MB while it loads (33 when both the fast path and the general
// decoder size their memo); lower max_memo for untrusted peers that need less.
// Exactness: dict keys and set elements must be hashable as in Python (errc::unhashable
// for a list, dict, set or bytearray); str holds what Python's 'surrogatepass' UTF-8
// holds (lone surrogates survive a round trip); -0.0, NaN payloads and ints of any size
// round-trip exactly.
// Errors: result<T> with pickle::errc codes (category "corio.pickle"). `reader` keeps a
// message for its last failure ("forbidden global os.system (not on the allow-list) at
// byte 0"); value::as<T>() fails with errc::type_mismatch or errc::out_of_range.
// Thread-safety: `value`, `dict`, `set`, `big_int`, `object` are plain values (const
// use from any number of threads; writes need exclusive access). A `reader` is used by
// one thread at a time; loads/dumps are re-entrant.
// Cost: plain data (what multiprocessing sends: scalars, str, bytes, containers, the memo
// for str and bytes) is decoded in one pass straight into values: one allocation per
// container and per str or bytes longer than 15 bytes. Pickles that share a container
// through the memo, name classes (objects, old spellings of bytes and sets) or use text
// opcodes take a second, general pass that builds nodes pointing into the input and then
// copies them into values; any error is reported by that pass. Encoding appends to one
// buffer with no allocation beyond its growth. bench/ipc/pickle_bench compares both with
// Python's C pickle module (figures in the README).
// A value is 40 bytes; dict and set lookups are linear up to 8 entries, hashed above (with
// a per-process random key, so a peer cannot choose numbers that collide; str and bytes go
// through std::hash first, which is not a keyed hash). Copies are deep.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <corio/runtime/result.hpp>

namespace corio::ipc::pickle {

/// Why a pickle could not be decoded or encoded, or a value not converted.
enum class errc {
  truncated = 1,         ///< the input ends inside an opcode or before STOP
  unknown_opcode,        ///< a byte that is not a pickle opcode
  unsupported_opcode,    ///< persistent ids, extension registry, out-of-band buffers
  unsupported_protocol,  ///< PROTO above 5 (reading) or a protocol other than 4/5 (writing)
  forbidden_class,       ///< a global outside the allow-list
  malformed,             ///< a well-formed opcode used wrongly (stack underflow, no MARK, bad operand)
  missing_memo,          ///< GET of a memo slot that was never PUT
  memo_too_large,        ///< a memo index at or above load_options::max_memo
  too_deep,              ///< nesting deeper than max_depth
  too_large,             ///< input above max_bytes, or more than max_values values
  recursive,             ///< a self-referencing structure (values are trees)
  unhashable,            ///< a list, dict, set or bytearray as a dict key or set element
  invalid_string,        ///< a str that is not (surrogatepass) UTF-8
  trailing_data,         ///< bytes after STOP
  type_mismatch,         ///< value::as<T>() on a value of another type
  out_of_range,          ///< value::as<T>() of a number that does not fit T
};

/// The category of errc ("corio.pickle").
const std::error_category& category() noexcept;

/// Lets an errc compare with and convert to std::error_code.
inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

/// The type of a value; each is one Python type (big_integer is Python's int too).
enum class kind : std::uint8_t {
  none,
  boolean,
  integer,      ///< an int that fits std::int64_t
  big_integer,  ///< an int that does not (held as a big_int)
  floating,
  str,
  bytes,
  bytearray,
  tuple,
  list,
  dict,
  set,
  frozenset,
  object,  ///< an allow-listed class instance, kept as data
};

/// Python's name for the type of a kind: "NoneType", "bool", "int", "float", "str", ...
std::string_view type_name(kind k) noexcept;

class value;
class dict;
class set;
struct object;

/// An integer of any size, held as its minimal little-endian two's complement (the
/// encoding of pickle's LONG1/LONG4). Cost: size/8 bytes; to_string() is quadratic in the
/// size (it prints at most 4300 digits, Python's own default limit, else "<int of N bits>").
class big_int {
 public:
  /// Zero.
  big_int() noexcept = default;
  /// The value `v`.
  explicit big_int(std::int64_t v);
  /// The value `v`.
  static big_int from_unsigned(std::uint64_t v);
  /// From little-endian two's complement bytes (any length; normalized).
  static big_int from_twos_complement(std::span<const std::uint8_t> le);
  /// From decimal digits with an optional sign (at most 4300 digits, as Python).
  static result<big_int> from_decimal(std::string_view text);
  /// The exact value of a finite, integral double (nullopt otherwise).
  static std::optional<big_int> from_double(double d);

  /// Minimal little-endian two's complement (empty for zero).
  [[nodiscard]] std::span<const std::uint8_t> twos_complement() const noexcept { return m_bytes; }
  /// True below zero.
  [[nodiscard]] bool negative() const noexcept { return !m_bytes.empty() && (m_bytes.back() & 0x80) != 0; }
  /// True for zero.
  [[nodiscard]] bool is_zero() const noexcept { return m_bytes.empty(); }
  /// The value, if it fits std::int64_t.
  [[nodiscard]] std::optional<std::int64_t> to_int64() const noexcept;
  /// The value, if it fits std::uint64_t (never for a negative one).
  [[nodiscard]] std::optional<std::uint64_t> to_uint64() const noexcept;
  /// The nearest double (±infinity when out of range).
  [[nodiscard]] double to_double() const noexcept;
  /// Python's int.bit_length() (of the magnitude).
  [[nodiscard]] std::size_t bit_length() const noexcept;
  /// Decimal digits with a leading '-' when negative.
  [[nodiscard]] std::string to_string() const;

  friend bool operator==(const big_int&, const big_int&) = default;

 private:
  std::vector<std::uint8_t> m_bytes;
};

namespace detail {

/// Key equality and hashing of sets (pickle_equality.cpp): they read the hash each element
/// got when it was inserted instead of hashing the element again.
struct set_access;

/// Deep-copying owner of a heap value: keeps `value` small and lets it hold types that
/// are defined after it.
template <class T>
class box {
 public:
  box() : m_ptr(std::make_unique<T>()) {}
  explicit box(T v) : m_ptr(std::make_unique<T>(std::move(v))) {}
  box(const box& o) : m_ptr(std::make_unique<T>(*o.m_ptr)) {}
  box(box&&) noexcept = default;
  box& operator=(const box& o) {
    if (this != &o) {
      m_ptr = std::make_unique<T>(*o.m_ptr);
    }
    return *this;
  }
  box& operator=(box&&) noexcept = default;
  ~box() = default;
  T& operator*() noexcept { return *m_ptr; }
  const T& operator*() const noexcept { return *m_ptr; }
  T* operator->() noexcept { return m_ptr.get(); }
  const T* operator->() const noexcept { return m_ptr.get(); }

 private:
  std::unique_ptr<T> m_ptr;
};

template <class T>
inline constexpr bool is_char_v = std::is_same_v<T, char> || std::is_same_v<T, wchar_t> ||
                                  std::is_same_v<T, char8_t> || std::is_same_v<T, char16_t> ||
                                  std::is_same_v<T, char32_t>;

template <class T>
concept integer_type = std::integral<T> && !std::is_same_v<T, bool> && !is_char_v<T>;

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};
template <class T>
struct is_tuple : std::false_type {};
template <class... T>
struct is_tuple<std::tuple<T...>> : std::true_type {};

}  // namespace detail

/// A Python value (see the header comment). Default-constructed it is None.
class value {
 public:
  /// The elements of a tuple or list.
  using items_type = std::vector<value>;

  /// None.
  value() noexcept : m_int(0) {}
  ///@{
  /// Values from C++ scalars and strings: nullptr is None; bool; any integer type is an
  /// int (an unsigned one above INT64_MAX becomes a big_integer); float and double are a
  /// float; strings are a str (UTF-8). Implicit, so `value v = 42;` works.
  value(std::nullptr_t) noexcept : m_int(0) {}
  value(bool b) noexcept : m_kind(kind::boolean), m_bool(b) {}
  template <detail::integer_type I>
  value(I i) : m_kind(kind::integer), m_int(static_cast<std::int64_t>(i)) {
    if constexpr (std::is_unsigned_v<I> && sizeof(I) >= sizeof(std::int64_t)) {
      if (i > static_cast<std::uint64_t>(INT64_MAX)) {
        m_kind = kind::big_integer;
        new (&m_big) big_int(big_int::from_unsigned(i));
      }
    }
  }
  value(double d) noexcept : m_kind(kind::floating), m_float(d) {}
  value(float f) noexcept : value(static_cast<double>(f)) {}
  value(const char* s) : m_kind(kind::str), m_text(s) {}
  value(std::string_view s) : m_kind(kind::str), m_text(s) {}
  value(std::string s) noexcept : m_kind(kind::str), m_text(std::move(s)) {}
  ///@}
  /// A deep copy.
  value(const value& o);
  /// A moved-from value is None, or keeps its value if it is None, a bool, an int that
  /// fits int64 or a float.
  value(value&& o) noexcept;
  /// Deep copy assignment (`o` may be an element of this value).
  value& operator=(const value& o);
  /// Move assignment (`o` may be an element of this value); `o` is left as after a move.
  value& operator=(value&& o) noexcept;
  /// Destroys the contents (containers recursively).
  ~value();
  /// An int; stored as kind::integer when it fits std::int64_t.
  value(big_int b);
  /// A dict.
  value(dict d);
  /// A set (for a frozenset use make_frozenset).
  value(set s);
  /// An object (an instance of an allow-listed class).
  value(object o);

  ///@{
  /// bytes / bytearray holding a copy of `data`.
  static value make_bytes(std::string_view data);
  static value make_bytes(std::span<const std::byte> data);
  static value make_bytearray(std::string_view data);
  static value make_bytearray(std::span<const std::byte> data);
  ///@}
  ///@{
  /// tuple / list of `items`; tuple_of / list_of convert each argument to a value.
  static value make_tuple(items_type items) { return value(kind::tuple, std::move(items)); }
  static value make_list(items_type items) { return value(kind::list, std::move(items)); }
  template <class... T>
  static value tuple_of(T&&... items) {
    return make_tuple(items_of(std::forward<T>(items)...));
  }
  template <class... T>
  static value list_of(T&&... items) {
    return make_list(items_of(std::forward<T>(items)...));
  }
  ///@}
  /// The arguments converted to values, in order: a call's positional arguments for
  /// manager_proxy::call / manager_client::create (`q.call("put", value::items_of(job))`).
  /// A function rather than a braced list because g++ 12 rejects a braced list inside a
  /// `co_await` expression (README, "Known compiler bugs").
  template <class... T>
  static items_type items_of(T&&... items) {
    items_type v;
    v.reserve(sizeof...(T));
    (v.emplace_back(std::forward<T>(items)), ...);
    return v;
  }
  /// A dict of the pairs in order (a later duplicate key replaces the earlier value).
  static value make_dict(std::initializer_list<std::pair<value, value>> pairs);
  /// A frozenset.
  static value make_frozenset(set elements);

  /// The value's kind (its Python type).
  [[nodiscard]] kind type() const noexcept { return m_kind; }
  /// Python's name of this value's type (an object's "module.name" is object::qualified_name()).
  [[nodiscard]] std::string_view type_name() const noexcept { return pickle::type_name(type()); }
  /// None.
  [[nodiscard]] bool is_none() const noexcept { return type() == kind::none; }
  /// int of either representation.
  [[nodiscard]] bool is_int() const noexcept { return type() == kind::integer || type() == kind::big_integer; }
  ///@{
  /// Whether the value is of that kind.
  [[nodiscard]] bool is_str() const noexcept { return type() == kind::str; }
  [[nodiscard]] bool is_tuple() const noexcept { return type() == kind::tuple; }
  [[nodiscard]] bool is_dict() const noexcept { return type() == kind::dict; }
  [[nodiscard]] bool is_object() const noexcept { return type() == kind::object; }
  ///@}

  /// A checked conversion to T:
  ///   bool                      from bool
  ///   integral types            from int (errc::out_of_range when it does not fit)
  ///   double, float             from float and int
  ///   big_int                   from int
  ///   std::string, string_view  from str (the view points into this value)
  ///   std::vector<std::byte>, std::span<const std::byte>   from bytes and bytearray
  ///   std::optional<U>          nullopt from None, else as<U>()
  ///   std::vector<U>            from tuple and list, each element as<U>()
  ///   std::tuple<U...>          from a tuple or list of exactly that many elements
  ///   value                     a copy
  /// Anything else fails with errc::type_mismatch.
  template <class T>
  [[nodiscard]] result<T> as() const;

  ///@{
  /// Direct access; null when this value is of another kind.
  [[nodiscard]] const std::string* if_str() const noexcept { return m_kind == kind::str ? &m_text : nullptr; }
  /// The bytes of a bytes or bytearray value.
  [[nodiscard]] const std::string* if_bytes() const noexcept;
  [[nodiscard]] std::string* if_bytes() noexcept;
  [[nodiscard]] const items_type* if_tuple() const noexcept { return m_kind == kind::tuple ? &m_items : nullptr; }
  [[nodiscard]] items_type* if_tuple() noexcept { return m_kind == kind::tuple ? &m_items : nullptr; }
  [[nodiscard]] const items_type* if_list() const noexcept { return m_kind == kind::list ? &m_items : nullptr; }
  [[nodiscard]] items_type* if_list() noexcept { return m_kind == kind::list ? &m_items : nullptr; }
  /// The elements of a tuple or list.
  [[nodiscard]] const items_type* if_sequence() const noexcept;
  [[nodiscard]] const dict* if_dict() const noexcept;
  [[nodiscard]] dict* if_dict() noexcept;
  /// The elements of a set or frozenset.
  [[nodiscard]] const set* if_set() const noexcept;
  [[nodiscard]] set* if_set() noexcept;
  [[nodiscard]] const object* if_object() const noexcept;
  [[nodiscard]] object* if_object() noexcept;
  /// An int outside std::int64_t (kind::big_integer).
  [[nodiscard]] const big_int* if_big_int() const noexcept;
  ///@}

  /// Python's len(): characters are counted as UTF-8 bytes for str; 0 for scalars.
  [[nodiscard]] std::size_t size() const noexcept;
  /// The i-th element of a tuple or list (null when out of range or not a sequence).
  [[nodiscard]] const value* at(std::size_t i) const noexcept;
  /// The value under `key` in a dict (null when absent or not a dict).
  [[nodiscard]] const value* find(const value& key) const noexcept;
  /// The value under the str key `key` in a dict (null when absent or not a dict).
  [[nodiscard]] const value* get(std::string_view key) const noexcept;

  /// Python's repr() of this value, cut at `max_chars` characters ("..." marks the cut).
  [[nodiscard]] std::string repr(std::size_t max_chars = 4096) const;

  /// Identity of values: the same kind and the same contents. Floats compare by their bits
  /// (NaN equals the same NaN, -0.0 differs from 0.0); dicts and sets ignore order; 1,
  /// 1.0 and True differ (unlike Python) except as dict keys and set elements, which use
  /// Python's equality to find each other.
  friend bool operator==(const value& a, const value& b) noexcept;

  ///@{
  /// Python's hash-equality for dict keys and set elements (1 == 1.0 == True, 0.0 ==
  /// -0.0), and a hash consistent with it. Lists and dicts get a structural hash here (the
  /// reader and writer refuse them as keys, as Python does). The hash is keyed per process
  /// (SipHash for str and bytes), so a peer cannot choose keys that collide; a NaN, never
  /// equal to itself, gets a fresh hash on every call. Cost: ~70 ns per str or bytes.
  [[nodiscard]] static bool key_equal(const value& a, const value& b) noexcept;
  [[nodiscard]] static std::size_t key_hash(const value& v) noexcept;
  ///@}
  /// Whether Python could use this value as a dict key (None, numbers, str, bytes,
  /// tuples and frozensets of hashable values).
  [[nodiscard]] bool hashable() const noexcept;

 private:
  value(kind k, std::string_view bytes) : m_kind(k), m_text(bytes) {}
  value(kind k, items_type items) noexcept : m_kind(k), m_items(std::move(items)) {}
  template <class T>
  result<T> as_number() const;
  // The steps of as<T>() for T = big_int, std::optional, std::vector and std::tuple.
  result<big_int> as_big_int() const;
  template <class U>
  result<U> as_optional() const;
  template <class U>
  result<U> as_vector() const;
  template <class U>
  result<U> as_tuple() const;
  // None, bool, int64 and float: nothing to destroy, moved by copying 8 bytes.
  bool trivial() const noexcept {
    constexpr unsigned scalars = 1u << static_cast<unsigned>(kind::none) | 1u << static_cast<unsigned>(kind::boolean) |
                                 1u << static_cast<unsigned>(kind::integer) |
                                 1u << static_cast<unsigned>(kind::floating);
    return ((1u << static_cast<unsigned>(m_kind)) & scalars) != 0;
  }
  // Ends the lifetime of the live member (nothing for a scalar); m_kind is left as is.
  void destroy() noexcept {
    if (!trivial()) {
      destroy_contents();
    }
  }
  // destroy() for the kinds that own memory (out of line: scalars and moved-from values,
  // the common case, cost one test).
  void destroy_contents() noexcept;
  // Moves o's contents into this value's (unconstructed) storage; o becomes None unless
  // it is a scalar (which keeps its value).
  void take(value& o) noexcept;
  // Copies o's contents into this value's (unconstructed) storage.
  void copy(const value& o);

  // A tagged union (not std::variant: its out-of-line visits made every move of a value
  // cost ~25 instructions; a switch on the kind inlines). m_kind says which member lives.
  kind m_kind = kind::none;
  union {
    bool m_bool;
    std::int64_t m_int;
    double m_float;
    big_int m_big;
    std::string m_text;  // str, bytes, bytearray
    items_type m_items;  // tuple, list
    detail::box<dict> m_dict;
    detail::box<set> m_set;  // set, frozenset
    detail::box<object> m_object;
  };
};

/// A dict: keys in insertion order, Python's key equality (value::key_equal).
/// Cost: lookups are linear up to 8 entries and hashed above; erase is linear.
class dict {
 public:
  struct entry;

  dict() noexcept;
  /// The pairs in order (a later duplicate key replaces the earlier value).
  dict(std::initializer_list<std::pair<value, value>> pairs);
  ///@{
  /// Copies (deeply) and moves.
  dict(const dict&);
  dict(dict&&) noexcept;
  dict& operator=(const dict&);
  dict& operator=(dict&&) noexcept;
  ///@}
  ~dict();

  /// How many entries.
  [[nodiscard]] std::size_t size() const noexcept;
  /// No entries.
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }
  ///@{
  /// The entries in insertion order.
  [[nodiscard]] const entry* begin() const noexcept;
  [[nodiscard]] const entry* end() const noexcept;
  ///@}
  ///@{
  /// The value under `key` (Python's key equality), or null.
  [[nodiscard]] const value* find(const value& key) const noexcept;
  [[nodiscard]] value* find(const value& key) noexcept;
  ///@}
  /// Looks up a str key without building a value.
  [[nodiscard]] const value* get(std::string_view key) const noexcept;
  /// Sets key to mapped: a new key is appended, an existing one keeps its place (and its
  /// original key object, as in Python). Returns true when the key was new.
  bool insert_or_assign(value key, value mapped);
  /// Removes key; returns whether it was present.
  bool erase(const value& key);
  /// Makes room for `n` entries.
  void reserve(std::size_t n);

  friend bool operator==(const dict& a, const dict& b) noexcept;

 private:
  std::size_t locate(const value& key, std::size_t hash) const noexcept;

  std::vector<entry> m_entries;
  std::vector<std::size_t> m_hashes;  // key_hash of each entry, in entry order
  std::vector<std::uint32_t> m_slots;  // open-addressed index: position + 1, 0 = empty
};

/// A set (or frozenset): unique elements in insertion order, Python's key equality.
/// Cost: as dict. As a key (value::key_hash, value::key_equal) it uses the hash each
/// element got when inserted, so a lookup of a nested frozenset costs its size once.
class set {
 public:
  set() noexcept;
  /// The elements in order (a later duplicate is dropped).
  set(std::initializer_list<value> elements);
  ///@{
  /// Copies (deeply) and moves.
  set(const set&);
  set(set&&) noexcept;
  set& operator=(const set&);
  set& operator=(set&&) noexcept;
  ///@}
  ~set();

  /// How many elements.
  [[nodiscard]] std::size_t size() const noexcept { return m_items.size(); }
  /// No elements.
  [[nodiscard]] bool empty() const noexcept { return m_items.empty(); }
  ///@{
  /// The elements in insertion order.
  [[nodiscard]] const value* begin() const noexcept;
  [[nodiscard]] const value* end() const noexcept;
  ///@}
  /// Whether an element equal to `element` (Python's key equality) is in the set.
  [[nodiscard]] bool contains(const value& element) const noexcept;
  /// Adds element; returns false when an equal one was there already.
  bool insert(value element);
  /// Removes element; returns whether it was present.
  bool erase(const value& element);

  friend bool operator==(const set& a, const set& b) noexcept;

 private:
  friend struct detail::set_access;

  std::size_t locate(const value& element, std::size_t hash) const noexcept;

  std::vector<value> m_items;
  std::vector<std::size_t> m_hashes;
  std::vector<std::uint32_t> m_slots;
};

/// An instance of an allow-listed class, as data. Python rebuilds it as
/// `module.name(*args)` (new_object false: REDUCE) or `module.name.__new__(cls, *args)`
/// (NEWOBJ), then applies `state` when it is not None (BUILD: __setstate__ or __dict__).
/// An exception is `builtins.ValueError` with args ("message",).
struct object {
  std::string module;         ///< the class's module, e.g. "builtins"
  std::string name;           ///< the class's name, e.g. "ValueError"
  value::items_type args;     ///< the constructor's (or __new__'s) arguments
  value state;                ///< what BUILD applies; None for nothing
  bool new_object = false;    ///< built with NEWOBJ (`__new__`) rather than REDUCE (a call)

  /// "module.name".
  [[nodiscard]] std::string qualified_name() const { return module + "." + name; }
  /// True for the class `mod.nm`.
  [[nodiscard]] bool is(std::string_view mod, std::string_view nm) const noexcept {
    return module == mod && name == nm;
  }
  friend bool operator==(const object& a, const object& b) noexcept;
};

/// One key and its value in a dict.
struct dict::entry {
  /// Takes both values (an entry is built by moving them in).
  entry(value&& k, value&& m) noexcept : key(std::move(k)), mapped(std::move(m)) {}
  value key;     ///< the key, as first inserted
  value mapped;  ///< the value
};

inline void value::take(value& o) noexcept {
  m_kind = o.m_kind;
  if (o.trivial()) {
    std::memcpy(static_cast<void*>(&m_int), static_cast<const void*>(&o.m_int), sizeof m_int);  // the scalar's bytes
    return;  // a moved-from scalar keeps its value
  }
  switch (m_kind) {
    case kind::big_integer: new (&m_big) big_int(std::move(o.m_big)); break;
    case kind::str:
    case kind::bytes:
    case kind::bytearray: new (&m_text) std::string(std::move(o.m_text)); break;
    case kind::tuple:
    case kind::list: new (&m_items) items_type(std::move(o.m_items)); break;
    case kind::dict: new (&m_dict) detail::box<dict>(std::move(o.m_dict)); break;
    case kind::set:
    case kind::frozenset: new (&m_set) detail::box<set>(std::move(o.m_set)); break;
    case kind::object: new (&m_object) detail::box<object>(std::move(o.m_object)); break;
    default: break;  // the scalars, handled above
  }
  o.destroy();
  o.m_kind = kind::none;
  o.m_int = 0;
}

inline void value::copy(const value& o) {
  switch (o.m_kind) {
    case kind::none: m_int = 0; break;
    case kind::boolean: m_bool = o.m_bool; break;
    case kind::integer: m_int = o.m_int; break;
    case kind::floating: m_float = o.m_float; break;
    case kind::big_integer: new (&m_big) big_int(o.m_big); break;
    case kind::str:
    case kind::bytes:
    case kind::bytearray: new (&m_text) std::string(o.m_text); break;
    case kind::tuple:
    case kind::list: new (&m_items) items_type(o.m_items); break;
    case kind::dict: new (&m_dict) detail::box<dict>(o.m_dict); break;
    case kind::set:
    case kind::frozenset: new (&m_set) detail::box<set>(o.m_set); break;
    case kind::object: new (&m_object) detail::box<object>(o.m_object); break;
  }
  m_kind = o.m_kind;  // set last: a throwing copy leaves this value None
}

inline value::value(const value& o) : m_int(0) { copy(o); }
inline value::value(value&& o) noexcept { take(o); }
inline value::~value() { destroy(); }

inline value& value::operator=(const value& o) {
  if (this != &o) {
    value tmp(o);  // o may live inside this value
    destroy();
    take(tmp);
  }
  return *this;
}

inline value& value::operator=(value&& o) noexcept {
  if (this != &o) {
    value tmp(std::move(o));  // o may live inside this value
    destroy();
    take(tmp);
  }
  return *this;
}

/// Classes a pickle may name (and thereby have decoded to an `object`).
/// Thread-safety: const use from any thread. Cost: a sorted vector of "module.name".
class allow_list {
 public:
  allow_list() = default;
  /// The given (module, name) classes.
  allow_list(std::initializer_list<std::pair<std::string_view, std::string_view>> classes);
  /// The builtin exception classes (Exception, ValueError, KeyError, ...), queue.Empty and
  /// queue.Full (also as _queue.Empty), multiprocessing's RemoteError,
  /// AuthenticationError, BufferTooShort, ProcessError, TimeoutError, and
  /// multiprocessing.managers.Token.
  static const allow_list& defaults();
  /// Allows the class `module.name`.
  void add(std::string_view module, std::string_view name);
  /// Whether the class `module.name` is allowed.
  [[nodiscard]] bool contains(std::string_view module, std::string_view name) const noexcept;
  /// How many classes are allowed.
  [[nodiscard]] std::size_t size() const noexcept { return m_names.size(); }

 private:
  std::vector<std::string> m_names;  // "module.name", sorted
};

/// Limits and the allow-list for decoding.
struct load_options {
  std::size_t max_bytes = std::size_t{16} << 20;  ///< largest input accepted
  std::size_t max_depth = 1000;                   ///< deepest container nesting (Python writes up to ~1000)
  std::size_t max_memo = std::size_t{1} << 20;    ///< memo indices must be below this
  std::size_t max_values = std::size_t{1} << 20;  ///< values created, counting each copy of a shared one
  /// Bytes of str, bytes, bytearray and big int data (and class names) the value holds,
  /// counting each copy of a shared one, and bytes that latin-1 text decodes into while
  /// loading: a pickle that references one large string or int many times through the memo
  /// is refused (errc::too_large) instead of expanding to gigabytes.
  std::size_t max_data_bytes = std::size_t{64} << 20;
  const allow_list* allowed = nullptr;            ///< null: allow_list::defaults(); must outlive the call
  /// Try the single-pass decoder for plain data first (falls back to the general one on
  /// anything else; the value is identical either way). false: always the general one.
  bool fast_path = true;
};

/// How dumps writes.
struct dump_options {
  int protocol = 4;              ///< 4 (Python >= 3.4 reads it) or 5 (>= 3.8; bytearray as BYTEARRAY8)
  std::size_t max_depth = 1000;  ///< deeper values fail with errc::too_deep (Python's limit is similar)
};

/// A decoder that keeps its buffers between loads and a message for its last failure.
/// Thread-safety: one thread at a time. Cost: its buffers grow to the largest pickle's
/// needs and are reused.
class reader {
 public:
  /// A reader with these limits and allow-list.
  explicit reader(load_options options = {});
  ///@{
  /// Moves the reader with its buffers.
  reader(reader&&) noexcept;
  reader& operator=(reader&&) noexcept;
  ///@}
  ~reader();

  ///@{
  /// Decodes one pickle, as loads() does, reusing this reader's buffers.
  [[nodiscard]] result<value> load(std::span<const std::byte> data);
  [[nodiscard]] result<value> load(std::string_view data);
  ///@}
  /// What went wrong in the last failed load, with the byte offset; empty after a success.
  [[nodiscard]] const std::string& error_message() const noexcept;
  /// The offset of the opcode that failed.
  [[nodiscard]] std::size_t error_offset() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> m_impl;
};

///@{
/// Decodes one pickle (which must end at its STOP opcode).
[[nodiscard]] result<value> loads(std::span<const std::byte> data, const load_options& options = {});
[[nodiscard]] result<value> loads(std::string_view data, const load_options& options = {});
///@}

/// Appends the pickle of v to out (on failure out is as it was).
/// Errors: too_deep, unhashable (a dict key or set element Python could not hash),
/// invalid_string (a str that is not surrogatepass UTF-8), unsupported_protocol.
result<void> dump(const value& v, std::vector<std::byte>& out, const dump_options& options = {});
/// The pickle of v as a new byte vector. Errors: dump()'s.
[[nodiscard]] result<std::vector<std::byte>> dumps(const value& v, const dump_options& options = {});

/// An exception instance as Python pickles it: module.name(*args).
[[nodiscard]] value make_exception(std::string_view module, std::string_view name, value::items_type args);
/// `builtins.<name>(message)`: "ValueError", "KeyError", "RuntimeError", ...
[[nodiscard]] value builtin_exception(std::string_view name, std::string_view message);
///@{
/// queue.Empty() and queue.Full(): what queue.Queue.get/put raise (Python 3.7+ spells
/// Empty as _queue.Empty; both names load the same class everywhere).
[[nodiscard]] value queue_empty();
[[nodiscard]] value queue_full();
///@}

// ---- value::as<T> ----

template <class T>
result<T> value::as_number() const {
  if constexpr (std::is_floating_point_v<T>) {
    switch (type()) {
      case kind::floating: return static_cast<T>(m_float);
      case kind::integer: return static_cast<T>(m_int);
      case kind::big_integer: {
        double d = m_big.to_double();
        if (d - d != 0.0) {
          return unexpected(make_error_code(errc::out_of_range));
        }
        return static_cast<T>(d);
      }
      default: return unexpected(make_error_code(errc::type_mismatch));
    }
  } else {
    if (type() == kind::big_integer) {
      return unexpected(make_error_code(errc::out_of_range));
    }
    if (type() != kind::integer) {
      return unexpected(make_error_code(errc::type_mismatch));
    }
    std::int64_t v = m_int;
    if (!std::in_range<T>(v)) {
      return unexpected(make_error_code(errc::out_of_range));
    }
    return static_cast<T>(v);
  }
}

inline result<big_int> value::as_big_int() const {
  if (type() == kind::integer) {
    return big_int(m_int);
  }
  if (auto* b = if_big_int()) {
    return *b;
  }
  return unexpected(make_error_code(errc::type_mismatch));
}

template <class U>
result<U> value::as_optional() const {
  if (is_none()) {
    return U{};
  }
  auto inner = as<typename U::value_type>();
  if (!inner) {
    return unexpected(inner.error());
  }
  return U(std::move(*inner));
}

template <class U>
result<U> value::as_vector() const {
  const items_type* items = if_sequence();
  if (!items) {
    return unexpected(make_error_code(errc::type_mismatch));
  }
  U out;
  out.reserve(items->size());
  for (const value& item : *items) {
    auto e = item.as<typename U::value_type>();
    if (!e) {
      return unexpected(e.error());
    }
    out.push_back(std::move(*e));
  }
  return out;
}

template <class U>
result<U> value::as_tuple() const {
  const items_type* items = if_sequence();
  if (!items || items->size() != std::tuple_size_v<U>) {
    return unexpected(make_error_code(errc::type_mismatch));
  }
  std::error_code first;
  auto convert = [&]<std::size_t... I>(std::index_sequence<I...>) {
    auto one = [&]<std::size_t J>(std::integral_constant<std::size_t, J>) {
      using E = std::tuple_element_t<J, U>;
      auto r = (*items)[J].template as<E>();
      if (!r) {
        if (!first) {
          first = r.error();
        }
        return E{};
      }
      return std::move(*r);
    };
    return U(one(std::integral_constant<std::size_t, I>{})...);
  };
  U out = convert(std::make_index_sequence<std::tuple_size_v<U>>{});
  if (first) {
    return unexpected(first);
  }
  return out;
}

template <class T>
result<T> value::as() const {
  using U = std::remove_cvref_t<T>;
  auto mismatch = [] { return unexpected(make_error_code(errc::type_mismatch)); };
  if constexpr (std::is_same_v<U, value>) {
    return *this;
  } else if constexpr (std::is_same_v<U, bool>) {
    if (m_kind == kind::boolean) {
      return m_bool;
    }
    return mismatch();
  } else if constexpr (std::is_integral_v<U> && std::is_unsigned_v<U> && sizeof(U) == 8) {
    if (auto* b = if_big_int()) {
      if (auto u = b->to_uint64()) {
        return *u;
      }
      return unexpected(make_error_code(errc::out_of_range));
    }
    return as_number<U>();
  } else if constexpr (detail::integer_type<U> || std::is_floating_point_v<U>) {
    return as_number<U>();
  } else if constexpr (std::is_same_v<U, big_int>) {
    return as_big_int();
  } else if constexpr (std::is_same_v<U, std::string> || std::is_same_v<U, std::string_view>) {
    if (auto* s = if_str()) {
      return U(*s);
    }
    return mismatch();
  } else if constexpr (std::is_same_v<U, std::vector<std::byte>> || std::is_same_v<U, std::span<const std::byte>>) {
    if (auto* s = if_bytes()) {
      auto* p = reinterpret_cast<const std::byte*>(s->data());
      return U(p, p + s->size());
    }
    return mismatch();
  } else if constexpr (detail::is_optional<U>::value) {
    return as_optional<U>();
  } else if constexpr (detail::is_vector<U>::value) {
    return as_vector<U>();
  } else if constexpr (detail::is_tuple<U>::value) {
    return as_tuple<U>();
  } else {
    static_assert(sizeof(U) == 0, "value::as<T>: unsupported target type");
  }
}

}  // namespace corio::ipc::pickle

template <>
struct std::is_error_code_enum<corio::ipc::pickle::errc> : std::true_type {};
