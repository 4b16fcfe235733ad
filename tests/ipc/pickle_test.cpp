// Tests for ipc/pickle.hpp: the value type, every opcode family of the reader, the
// writer, and every kind of bad input (truncated, too deep, unknown opcode, missing memo
// slot, forbidden class, oversize, self-reference, ...). The pickles here are written by
// hand, opcode by opcode; pickle_python_test.cpp checks real Pythons' pickles.
#include <corio/ipc/pickle.hpp>

#include <catch2/catch.hpp>

#include <malloc.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string_view>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace pk = corio::ipc::pickle;
using pk::errc;
using pk::value;

namespace {

// P(0x80, 4, 'K', 5, '.') and P(0x8c, 3, "abc"): bytes from opcodes, numbers and strings.
void append(std::string& s, int c) { s.push_back(static_cast<char>(c)); }
void append(std::string& s, const char* t) { s += t; }
template <class... A>
std::string P(A... a) {
  std::string s;
  (append(s, a), ...);
  return s;
}

std::string le32(std::uint32_t v) {
  std::string s;
  for (int i = 0; i < 4; ++i) {
    s.push_back(static_cast<char>(v >> (8 * i)));
  }
  return s;
}

std::string le64(std::uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) {
    s.push_back(static_cast<char>(v >> (8 * i)));
  }
  return s;
}

// A protocol 4 pickle of body then STOP.
std::string p4(const std::string& body) { return P(0x80, 4) + body + "."; }

value load_ok(const std::string& bytes, const pk::load_options& o = {}) {
  pk::reader r(o);
  auto v = r.load(bytes);
  INFO("error: " << r.error_message());
  REQUIRE(v.has_value());
  return *v;
}

// Loads bytes expecting failure with e; returns the reader's message.
std::string load_fails(const std::string& bytes, errc e, const pk::load_options& o = {}) {
  pk::reader r(o);
  auto v = r.load(bytes);
  INFO("decoded " << (v ? v->repr() : std::string("(error)")));
  REQUIRE_FALSE(v.has_value());
  INFO("message: " << r.error_message());
  CHECK(v.error() == e);
  CHECK_FALSE(r.error_message().empty());
  return r.error_message();
}

std::string encode(const value& v, int protocol = 4) {
  pk::dump_options o;
  o.protocol = protocol;
  auto b = pk::dumps(v, o);
  REQUIRE(b.has_value());
  return std::string(reinterpret_cast<const char*>(b->data()), b->size());
}

std::string short_str(std::string_view s) { return P(0x8c, static_cast<int>(s.size())) + std::string(s); }

}  // namespace

// ---- the value type ----

static_assert(sizeof(value) == 40, "the header documents a value as 40 bytes");

TEST_CASE("value converts C++ values both ways with checked ranges and types", "[pickle]") {
  CHECK(value().is_none());
  CHECK(value(nullptr).is_none());
  CHECK(value(true).type() == pk::kind::boolean);
  CHECK(value(7).type() == pk::kind::integer);
  CHECK(value(std::uint64_t{1} << 63).type() == pk::kind::big_integer);
  CHECK(value(1.5f).type() == pk::kind::floating);
  CHECK(value("text").type() == pk::kind::str);
  CHECK(value(std::string("text")).type() == pk::kind::str);

  CHECK(*value(300).as<int>() == 300);
  CHECK(value(300).as<std::int8_t>().error() == errc::out_of_range);
  CHECK(value(-1).as<unsigned>().error() == errc::out_of_range);
  CHECK(*value(std::uint64_t{1} << 63).as<std::uint64_t>() == std::uint64_t{1} << 63);
  CHECK(value(std::uint64_t{1} << 63).as<std::int64_t>().error() == errc::out_of_range);
  CHECK(value(true).as<int>().error() == errc::type_mismatch);
  CHECK(value(1).as<bool>().error() == errc::type_mismatch);
  CHECK(*value(2).as<double>() == 2.0);  // Python passes ints where floats are expected
  CHECK(value(2.5).as<int>().error() == errc::type_mismatch);
  CHECK(*value("abc").as<std::string>() == "abc");
  CHECK(*value("abc").as<std::string_view>() == "abc");
  CHECK(value(value::make_bytes("abc")).as<std::string>().error() == errc::type_mismatch);
  CHECK(value::make_bytes("abc").as<std::span<const std::byte>>()->size() == 3);
  CHECK(value::make_bytearray("ab").as<std::vector<std::byte>>()->size() == 2);

  CHECK(*value().as<std::optional<double>>() == std::nullopt);
  CHECK(**value(1.5).as<std::optional<double>>() == 1.5);
  CHECK(*value::list_of(1, 2, 3).as<std::vector<int>>() == std::vector<int>{1, 2, 3});
  CHECK(value::list_of(1, "x").as<std::vector<int>>().error() == errc::type_mismatch);

  value request = value::tuple_of("7f00", "get", value::tuple_of(), value::make_dict({{"block", false}}));
  auto fields = request.as<std::tuple<std::string, std::string, value, value>>();
  REQUIRE(fields.has_value());
  auto& [id, method, args, kwds] = *fields;
  CHECK(id == "7f00");
  CHECK(method == "get");
  CHECK(args.size() == 0);
  CHECK(*kwds.get("block")->as<bool>() == false);
  CHECK(request.as<std::tuple<std::string, int, value, value>>().error() == errc::type_mismatch);
  CHECK(request.as<std::tuple<std::string, std::string>>().error() == errc::type_mismatch);

  CHECK(request.at(1)->if_str() != nullptr);
  CHECK(request.at(4) == nullptr);
  CHECK(value(3).at(0) == nullptr);
}

TEST_CASE("dict keeps insertion order, replaces a duplicate key in place and finds keys by Python equality",
          "[pickle]") {
  pk::dict d;
  CHECK(d.insert_or_assign(1, "one"));
  CHECK(d.insert_or_assign("b", 2));
  CHECK_FALSE(d.insert_or_assign(1.0, "uno"));  // 1 == 1.0 in Python: same key
  CHECK_FALSE(d.insert_or_assign(true, "yes"));
  REQUIRE(d.size() == 2);
  CHECK(d.begin()->key.type() == pk::kind::integer);  // the first key object is kept
  CHECK(*d.begin()->mapped.as<std::string>() == "yes");
  CHECK(d.get("b") != nullptr);
  CHECK(d.find(value(0.0)) == nullptr);

  // Above 8 entries the index takes over; lookups, -0.0 == 0.0 and erase still work.
  for (int i = 0; i < 100; ++i) {
    d.insert_or_assign(value::tuple_of(i, "k"), i);
  }
  d.insert_or_assign(0.0, "zero");
  CHECK(*d.find(value(-0.0))->as<std::string>() == "zero");
  CHECK(*d.find(value::tuple_of(57, "k"))->as<int>() == 57);
  CHECK(d.erase(value::tuple_of(57, "k")));
  CHECK(d.find(value::tuple_of(57, "k")) == nullptr);
  CHECK(*d.find(value::tuple_of(58, "k"))->as<int>() == 58);
  CHECK(d.size() == 102);
  CHECK(d.get("b") != nullptr);

  value big_key = value(*pk::big_int::from_decimal("18446744073709551616"));  // 2**64
  d.insert_or_assign(big_key, "big");
  CHECK(d.find(value(18446744073709551616.0)) != nullptr);  // == float(2**64)
}

TEST_CASE("set drops elements equal in Python's sense and compares without order", "[pickle]") {
  pk::set s{1, 1.0, true, "a", value::tuple_of(1, 2)};
  CHECK(s.size() == 3);
  CHECK(s.contains(value::tuple_of(1.0, 2)));
  pk::set t{value::tuple_of(1, 2), "a", 1};
  CHECK(s == t);
  CHECK(value(s) == value(t));
  CHECK_FALSE(value(s) == value::make_frozenset(t));  // set and frozenset differ as values
}

TEST_CASE("big_int converts between two's complement, int64, decimal and double", "[pickle]") {
  auto b = *pk::big_int::from_decimal("-1180591620717411303424");  // -(2**70)
  CHECK(b.negative());
  CHECK(b.bit_length() == 71);
  CHECK(b.to_string() == "-1180591620717411303424");
  CHECK_FALSE(b.to_int64().has_value());
  CHECK(b.to_double() == -1180591620717411303424.0);
  CHECK(*pk::big_int::from_double(-1180591620717411303424.0) == b);
  CHECK_FALSE(pk::big_int::from_double(0.5).has_value());
  CHECK(*pk::big_int(INT64_MIN).to_int64() == INT64_MIN);
  CHECK(pk::big_int(-1).twos_complement().size() == 1);
  CHECK(pk::big_int(128).twos_complement().size() == 2);  // 0x80 0x00
  CHECK(pk::big_int().to_string() == "0");
  CHECK(pk::big_int::from_decimal(std::string(4301, '9')).error() == errc::out_of_range);
  CHECK(pk::big_int::from_decimal("12x").error() == errc::malformed);
  CHECK(pk::big_int::from_decimal("1234567890123x").error() == errc::malformed);
  CHECK(pk::big_int::from_decimal("-").error() == errc::malformed);
  // Digits are taken nine at a time: lengths around those boundaries, leading zeros.
  CHECK(pk::big_int::from_decimal("999999999")->to_int64() == 999999999);
  CHECK(pk::big_int::from_decimal("1000000000")->to_int64() == 1000000000);
  CHECK(pk::big_int::from_decimal("000000000000000000042")->to_int64() == 42);
  CHECK(pk::big_int::from_decimal("+9223372036854775807")->to_int64() == INT64_MAX);
  CHECK(pk::big_int::from_decimal("-9223372036854775808")->to_int64() == INT64_MIN);
  CHECK(pk::big_int::from_decimal("123456789012345678901234567890")->to_string() == "123456789012345678901234567890");
  const std::string long_digits = [] {
    std::string d;
    for (int i = 0; i < 4000; ++i) {
      d += static_cast<char>('1' + i % 9);
    }
    return d;
  }();
  CHECK(pk::big_int::from_decimal(long_digits)->to_string() == long_digits);
  // value() normalizes: a big_int that fits is an int64.
  CHECK(value(pk::big_int(5)).type() == pk::kind::integer);
}

TEST_CASE("big_int converts to the nearest double, rounded once as Python's float()", "[pickle]") {
  auto to_double = [](const char* decimal) { return pk::big_int::from_decimal(decimal)->to_double(); };
  const double base = std::ldexp(1.0, 95);
  CHECK(to_double("39614081257132173194818486273") == base + std::ldexp(1.0, 43));   // 2**95 + 2**42 + 1: above the tie
  CHECK(to_double("-39614081257132173194818486273") == -(base + std::ldexp(1.0, 43)));
  CHECK(to_double("39614081257132173194818486272") == base);                         // 2**95 + 2**42: tie, to even
  CHECK(to_double("39614081257132181990911508480") == base + std::ldexp(1.0, 44));   // 2**95 + 3 * 2**42: tie, to even
  CHECK(to_double("18446744073709551617") == std::ldexp(1.0, 64));                   // 2**64 + 1
  CHECK(to_double("1180591620717411303423") == std::ldexp(1.0, 70));                 // 2**70 - 1
  const std::string max_finite = "1797693134862315807937289714053034150799341327100378269361737789804449682927647509466490"
                                 "1797758720709633028641669288791094655554785194040263065748867150582068190890200070838367"
                                 "6273854845817711531764475730270069855571366959622842914819860834936475292719074168444365"
                                 "510704342711559699508093042880177904174497791";  // 2**1024 - 2**970 - 1
  CHECK(pk::big_int::from_decimal(max_finite)->to_double() == std::numeric_limits<double>::max());
  CHECK(std::isinf(pk::big_int::from_decimal(std::string(400, '9'))->to_double()));
}

TEST_CASE("value equality is exact: floats by bits, 1 differs from 1.0 and True, dict order is ignored", "[pickle]") {
  CHECK(value(1) != value(1.0));
  CHECK(value(1) != value(true));
  CHECK(value(0.0) != value(-0.0));
  double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(value(nan) == value(nan));
  CHECK(value::make_bytes("a") != value::make_bytearray("a"));
  CHECK(value::tuple_of(1) != value::list_of(1));
  CHECK(value::make_dict({{"a", 1}, {"b", 2}}) == value::make_dict({{"b", 2}, {"a", 1}}));
  CHECK(value::make_dict({{"a", 1}}) != value::make_dict({{"a", 1.0}}));
  CHECK(value::make_dict({{1, "x"}}) != value::make_dict({{1.0, "x"}}));  // same key, other key object
  CHECK(value::key_equal(value(1), value(1.0)));
  CHECK(value::key_hash(value(1)) == value::key_hash(value(true)));
  CHECK(value::key_hash(value(0.0)) == value::key_hash(value(-0.0)));
}

TEST_CASE("sets and dicts holding NaN (never equal to itself as a key) equal their copies and nothing else",
          "[pickle]") {
  // Found by fuzz_pickle: {nan, nan} (two NaN objects, as Python can hold) did not equal
  // its own copy, because lookups by Python key equality never find a NaN.
  double nan = std::numeric_limits<double>::quiet_NaN();
  pk::set s;
  s.insert(nan);
  s.insert(nan);
  s.insert(1);
  REQUIRE(s.size() == 3);
  value v(s);
  value copy = v;
  CHECK(v == copy);
  pk::set other;
  other.insert(nan);
  other.insert(1);
  other.insert(2);
  CHECK(v != value(other));  // same size, same NaN, but one NaN against a 2
  pk::dict d;
  d.insert_or_assign(nan, 1);
  d.insert_or_assign(nan, 2);
  REQUIRE(d.size() == 2);
  value dv(d);
  CHECK(dv == value(d));
  pk::dict e;
  e.insert_or_assign(nan, 2);
  e.insert_or_assign(nan, 2);
  CHECK(dv != value(e));  // values 1 and 2 against 2 and 2
  for (int i = 0; i < 20; ++i) {  // and with the hashed index
    s.insert(i + 100);
    other.insert(i + 100);
  }
  CHECK(value(s) == value(pk::set(s)));
  CHECK(value(s) != value(other));
  CHECK(load_ok(encode(value(s))) == value(s));
}

TEST_CASE("equality of dicts and sets nested 64 deep compares each level once", "[pickle]") {
  // Each level used to compare its element with itself as well as with the other side's:
  // two comparisons of the level below, 2^64 at the bottom (a 200-byte pickle).
  auto nest = [](value inner, int depth, auto wrap) {
    for (int i = 0; i < depth; ++i) {
      inner = wrap(std::move(inner));
    }
    return inner;
  };
  auto in_dict = [](value v) { return value::make_dict({{"k", std::move(v)}}); };
  auto in_frozenset = [](value v) {
    pk::set s;
    s.insert(std::move(v));
    return value::make_frozenset(std::move(s));
  };
  auto in_set_with_nan = [](value v) {  // a NaN tuple beside it: the scanned path
    pk::set s;
    s.insert(value::tuple_of(std::numeric_limits<double>::quiet_NaN()));
    s.insert(value::tuple_of(std::move(v)));
    return value(std::move(s));
  };
  const value d = nest(value(1), 64, in_dict);
  CHECK(d == value(d));
  CHECK(d != nest(value(2), 64, in_dict));
  const value f = nest(value(1), 64, in_frozenset);
  CHECK(f == value(f));
  CHECK(f != nest(value(2), 64, in_frozenset));
  const value n = nest(value(1), 64, in_set_with_nan);
  CHECK(n == value(n));
  CHECK(n != nest(value(2), 64, in_set_with_nan));
  CHECK(load_ok(encode(f)) == f);
}

// Frames are larger under a sanitizer and without optimisation (the default build is -O0):
// there the stack below is 8 times larger (an -O0 ASan build needs about 1.5 MiB for the
// 990-deep dicts), and the test checks only that both compare equal.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__OPTIMIZE__)
constexpr bool large_frames = true;
#elif defined(__has_feature)
constexpr bool large_frames = __has_feature(address_sanitizer) || __has_feature(thread_sanitizer);
#else
constexpr bool large_frames = false;
#endif

// Computes a == b on a new thread whose stack is `stack_bytes`: 0 equal, 1 not equal, 2 no
// such thread could run.
static int equal_on_thread(const value& a, const value& b, std::size_t stack_bytes) {
  struct job {
    const value* a;
    const value* b;
    bool equal = false;
  } j{&a, &b};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, stack_bytes);
  pthread_t t;
  auto run = [](void* p) -> void* {
    auto* jp = static_cast<job*>(p);
    jp->equal = *jp->a == *jp->b;
    return nullptr;
  };
  const bool ran = pthread_create(&t, &attr, run, &j) == 0 && pthread_join(t, nullptr) == 0;
  pthread_attr_destroy(&attr);
  return !ran ? 2 : j.equal ? 0 : 1;
}

// Whether a == b holds when computed on a thread whose stack is `stack_bytes`. With small
// frames it runs in a forked child: a stack overflow kills the child (SIGSEGV), which the
// parent sees. With large frames (the stack is then ample) it runs here, with no fork: a
// ThreadSanitizer build may refuse a thread started in the child of a threaded process.
static bool equal_on_small_stack(const value& a, const value& b, std::size_t stack_bytes) {
  if (large_frames) {
    const int got = equal_on_thread(a, b, stack_bytes);
    REQUIRE(got != 2);
    return got == 0;
  }
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::_exit(equal_on_thread(a, b, stack_bytes));
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  INFO("child status " << status);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) != 2);
  return WEXITSTATUS(status) == 0;
}

TEST_CASE("equality of dicts nested 990 deep, and of nested NaN sets, fits a 512 KiB stack", "[pickle]") {
  // The lists that match NaN-holding elements on the stack (1 KiB) sat in the frame of
  // every dict or set comparison, also of those holding no such element: two dicts nested
  // 990 deep took over 1 MiB of stack to compare (a reviewer's probe: 160 KiB without the
  // lists). Now only a level holding such elements pays for them.
  // (With large frames, see above, it checks only that both compare equal.)
  constexpr std::size_t stack = (large_frames ? 8 : 1) * 512 * 1024;
  value d(1);
  for (int i = 0; i < 990; ++i) {
    d = value::make_dict({{"k", std::move(d)}});
  }
  const value d_copy = d;
  CHECK(equal_on_small_stack(d, d_copy, stack));
  value n(1);
  for (int i = 0; i < 100; ++i) {  // each level a NaN tuple beside the level below
    pk::set s;
    s.insert(value::tuple_of(std::numeric_limits<double>::quiet_NaN()));
    s.insert(value::tuple_of(std::move(n)));
    n = value(std::move(s));
  }
  const value n_copy = n;
  CHECK(equal_on_small_stack(n, n_copy, stack));
}

TEST_CASE("equality of sets of identical NaN tuples nested 24 deep compares each element once", "[pickle]") {
  // Each of the 15 inner levels is a frozenset of two identical tuples (nan, level below),
  // as a 400-byte pickle makes with memo GETs (below). A NaN is not key-equal to itself, so
  // such an element cannot be found through the other set's index; == used to count each
  // element's copies in both sets by comparing it with every other element of both: 3
  // comparisons of the level below per element, 6 per level, 6^15 (about 5e11: hours) for
  // this value, whose 2^15 leaves are compared in a blink now. Elements like these are
  // matched by a hash of their identity: each is compared with one element of the other
  // set, so == costs the values' size times their depth (the hashes).
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto doubled = [nan](const value& first, const value& second) {
    pk::set s;
    s.insert(value::tuple_of(nan, first));
    s.insert(value::tuple_of(nan, second));
    return value::make_frozenset(std::move(s));
  };
  auto single = [nan](value inner) {  // a set of one NaN tuple, 9 more levels
    pk::set s;
    s.insert(value::tuple_of(nan, std::move(inner)));
    return value(std::move(s));
  };
  // The value with `leaf` at the bottom, and with `other_leaf` at its last leaf only.
  auto build = [&](const value& leaf, const value& other_leaf) {
    value same = leaf;
    value last = other_leaf;
    for (int level = 0; level < 15; ++level) {
      value next_last = doubled(same, last);
      same = doubled(same, same);
      last = std::move(next_last);
    }
    for (int level = 0; level < 9; ++level) {
      same = single(std::move(same));
      last = single(std::move(last));
    }
    return std::pair(std::move(same), std::move(last));
  };
  const auto [a, a_last_leaf_2] = build(value(1), value(2));
  REQUIRE(a.if_set()->size() == 1);
  CHECK(a.if_set()->begin()->at(1)->if_set()->size() == 1);
  CHECK(a == value(a));
  CHECK(a != a_last_leaf_2);  // one leaf of 2^15 differs
  CHECK(a_last_leaf_2 != a);
  const auto [b, b_other_nan] = build(value(2), value(std::bit_cast<double>(0x7ff8000000000001ULL)));
  CHECK(a != b);  // every leaf differs
  CHECK(b != b_other_nan);  // one leaf is another NaN (an identical NaN only equals itself)

  // The pickle: LONG_BINPUT/LONG_BINGET 0 hold the level below, each level is
  // MARK (nan, below) (nan, below) FROZENSET.
  const std::string put0 = "r" + le32(0);
  const std::string get0 = "j" + le32(0);
  const std::string nan_tuple = P('G', 0x7f, 0xf8, 0, 0, 0, 0, 0, 0) + get0 + P(0x86);
  std::string body = P('K', 1);
  for (int level = 0; level < 15; ++level) {
    body += put0 + "(" + nan_tuple + nan_tuple + P(0x91);
  }
  const value loaded = load_ok(p4(body));
  CHECK(loaded == load_ok(p4(body)));
  CHECK(load_ok(encode(loaded)) == loaded);
  const value* doubled_levels = &a;
  for (int level = 0; level < 9; ++level) {
    doubled_levels = doubled_levels->if_set()->begin()->at(1);
  }
  CHECK(loaded == *doubled_levels);
}

TEST_CASE("equality of dicts with identical NaN tuple keys nested 15 deep compares each entry once", "[pickle]") {
  // The dict form of the case above: each level {(nan,): level below, (nan,): level below}
  // (two entries: the keys are not key-equal), 6^15 comparisons of the level below before.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto build = [nan](value leaf) {
    for (int level = 0; level < 15; ++level) {
      pk::dict d;
      d.insert_or_assign(value::tuple_of(nan), leaf);
      d.insert_or_assign(value::tuple_of(nan), leaf);
      leaf = value(std::move(d));
    }
    return leaf;
  };
  const value a = build(value(1));
  REQUIRE(a.size() == 2);
  CHECK(a == value(a));
  CHECK(a != build(value(2)));
}

// Multiplicities count for elements that are not key-equal to themselves: the same
// elements in another number of copies differ, the same copies in another order do not.
TEST_CASE("sets and dicts of NaN tuples compare as multisets of identical elements", "[pickle]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double other_nan = std::bit_cast<double>(0x7ff8000000000001ULL);
  auto set_of = [](std::initializer_list<value> elements) {
    pk::set s;
    for (const value& e : elements) {
      s.insert(e);
    }
    return value(std::move(s));
  };
  const value n1 = value::tuple_of(nan, 1);
  const value n2 = value::tuple_of(nan, 2);
  CHECK(set_of({n1, n1, n2}) == set_of({n2, n1, n1}));
  CHECK(set_of({n1, n1, n2}) != set_of({n1, n2, n2}));
  CHECK(set_of({n1, n1, value(3)}) != set_of({n1, value(3), value(4)}));
  CHECK(set_of({value(nan), value(nan)}) == set_of({value(nan), value(nan)}));
  CHECK(set_of({value(nan), value(nan)}) != set_of({value(nan), value(other_nan)}));
  CHECK(set_of({value(nan), value(1)}) != set_of({value(nan), value(1.0)}));  // 1 and 1.0 are not identical
  pk::dict d;
  d.insert_or_assign(n1, 1);
  d.insert_or_assign(n1, 2);
  d.insert_or_assign(n2, 1);
  pk::dict e;  // the same entries in another order
  e.insert_or_assign(n2, 1);
  e.insert_or_assign(n1, 2);
  e.insert_or_assign(n1, 1);
  pk::dict f;  // the same keys, other values paired with them
  f.insert_or_assign(n1, 1);
  f.insert_or_assign(n1, 1);
  f.insert_or_assign(n2, 2);
  CHECK(value(d) == value(e));
  CHECK(value(d) != value(f));
  CHECK(value(f) != value(d));
}

TEST_CASE("repr prints values as Python does", "[pickle]") {
  CHECK(value().repr() == "None");
  CHECK(value::tuple_of(1, "a'b", 1.0, true).repr() == "(1, \"a'b\", 1.0, True)");
  CHECK(value::tuple_of(1).repr() == "(1,)");
  CHECK(value(1e16).repr() == "1e+16");
  CHECK(value(1e15).repr() == "1000000000000000.0");
  CHECK(value(0.0001).repr() == "0.0001");
  CHECK(value(1e-5).repr() == "1e-05");
  CHECK(value(-std::numeric_limits<double>::infinity()).repr() == "-inf");
  CHECK(value::make_bytes(std::string_view("a\x00", 2)).repr() == "b'a\\x00'");
  CHECK(value::make_dict({{"k", value::list_of()}}).repr() == "{'k': []}");
  CHECK(value(pk::set{}).repr() == "set()");
  CHECK(pk::builtin_exception("ValueError", "bad").repr() == "ValueError('bad')");
  CHECK(pk::queue_empty().repr() == "queue.Empty()");
  CHECK(value(std::string(100, 'x')).repr(10) == "'xxxxxxxxx...");
}

TEST_CASE("repr cut inside a multi-byte character stays UTF-8 (it may be sent back as a str)", "[pickle]") {
  std::string text;
  for (int i = 0; i < 100; ++i) {
    text += "\xc3\xa9";  // U+00E9, two bytes
  }
  text += "\xe2\x82\xac\xf0\x9f\x98\x80";  // U+20AC (three bytes), U+1F600 (four)
  for (std::size_t limit = 1; limit < 2 * text.size(); ++limit) {
    std::string r = value(text).repr(limit);
    INFO("limit " << limit << ": " << r);
    REQUIRE(pk::dumps(value(r)).has_value());
    CHECK(r.size() <= limit + 3);
  }
  CHECK(value(text).repr(4) == "'\xc3\xa9...");  // the cut at byte 4 would split the second character
}

// ---- the reader, opcode family by family ----

TEST_CASE("reader decodes None, bools and ints of every width", "[pickle]") {
  CHECK(load_ok(p4("N")).is_none());
  CHECK(load_ok(p4(P(0x88))) == value(true));
  CHECK(load_ok(p4(P(0x89))) == value(false));
  CHECK(load_ok(p4(P('K', 0xff))) == value(255));
  CHECK(load_ok(p4(P('M', 0x01, 0x02))) == value(0x0201));
  CHECK(load_ok(p4("J" + le32(0xfffffffe))) == value(-2));
  CHECK(load_ok(p4(P(0x8a, 0))) == value(0));                       // LONG1, zero bytes
  CHECK(load_ok(p4(P(0x8a, 1, 0xff))) == value(-1));                // LONG1, sign-extended
  CHECK(load_ok(p4(P(0x8a, 8) + le64(0x8000000000000000ULL))) == value(INT64_MIN));
  value two_64 = load_ok(p4(P(0x8a, 9) + le64(0) + P(1)));          // 2**64
  CHECK(two_64.type() == pk::kind::big_integer);
  CHECK(two_64.if_big_int()->to_string() == "18446744073709551616");
  CHECK(load_ok(p4(P(0x8a, 9) + le64(5) + P(0))) == value(5));       // non-minimal, still 5
  value long4 = load_ok(p4(P(0x8b) + le32(300) + std::string(299, '\0') + P(0x40)));
  CHECK(long4.if_big_int()->bit_length() == 299 * 8 + 7);
  // Protocol 0 text forms.
  CHECK(load_ok("I01\n.") == value(true));
  CHECK(load_ok("I00\n.") == value(false));
  CHECK(load_ok("I-42\n.") == value(-42));
  CHECK(load_ok("L123456789012345678901234567890L\n.").if_big_int()->to_string() == "123456789012345678901234567890");
  CHECK(load_ok("L7\n.") == value(7));
}

TEST_CASE("reader decodes floats in binary and text form", "[pickle]") {
  CHECK(load_ok(p4(P('G', 0x3f, 0xf8, 0, 0, 0, 0, 0, 0))) == value(1.5));
  CHECK(load_ok(p4(P('G', 0x80, 0, 0, 0, 0, 0, 0, 0))) == value(-0.0));
  CHECK(std::isnan(*load_ok(p4(P('G', 0x7f, 0xf8, 0, 0, 0, 0, 0, 0))).as<double>()));
  CHECK(load_ok("F2.25\n.") == value(2.25));
  CHECK(std::isinf(*load_ok("Finf\n.").as<double>()));
}

TEST_CASE("reader decodes str and bytes opcodes of every width", "[pickle]") {
  CHECK(load_ok(p4(short_str("h\xc3\xa9"))) == value("h\xc3\xa9"));
  CHECK(load_ok(p4("X" + le32(3) + "abc")) == value("abc"));
  CHECK(load_ok(p4(P(0x8d) + le64(2) + "ab")) == value("ab"));
  CHECK(load_ok(p4(P(0x8c, 3) + "\xed\xa0\x80")) == value("\xed\xa0\x80"));  // a lone surrogate
  CHECK(load_ok(p4(P('C', 2) + std::string("\x00\x01", 2))) == value::make_bytes(std::string_view("\x00\x01", 2)));
  CHECK(load_ok(p4("B" + le32(1) + "z")) == value::make_bytes("z"));
  CHECK(load_ok(p4(P(0x8e) + le64(1) + "z")) == value::make_bytes("z"));
  CHECK(load_ok(p4(P(0x96) + le64(2) + "zz")) == value::make_bytearray("zz"));
  // Python 2 str: decoded as ASCII, as Python 3 does by default.
  CHECK(load_ok(p4(P('U', 2) + "hi")) == value("hi"));
  CHECK(load_ok(p4("T" + le32(2) + "hi")) == value("hi"));
}

TEST_CASE("reader decodes protocol 0 text strings: STRING with backslash escapes, UNICODE as raw-unicode-escape",
          "[pickle]") {
  CHECK(load_ok(R"(S'a\x41\n\101\'b'
.)") == value("aA\nA'b"));
  CHECK(load_ok(R"(S"it's"
.)") == value("it's"));
  CHECK(load_ok(R"(S'x\q'
.)") == value(R"(x\q)"));  // an unknown escape keeps its backslash
  load_fails(R"(S'\xe9'
.)", errc::invalid_string);  // non-ASCII Python 2 str
  load_fails("S'x\n.", errc::malformed);  // not quoted
  load_fails(R"(S'\x4'
.)", errc::malformed);
  load_fails(R"(S'a\'
.)", errc::malformed);  // trailing backslash
  // What Python 3 writes for 'a\\b€😀\n' with protocol 0.
  CHECK(load_ok(R"(Va\u005cb\u20ac\U0001f600\u000a
.)") == value("a\\b\u20ac\U0001F600\n"));
  CHECK(load_ok(P('V', 0xff, '\n', '.')) == value("\u00ff"));  // latin-1 bytes are code points
  CHECK(load_ok(R"(V\ud800
.)") == value("\xed\xa0\x80"));                               // a lone surrogate
  CHECK(load_ok(R"(V\\u0041
.)") == value(R"(\\u0041)"));  // an even run of backslashes escapes nothing
  load_fails(R"(V\u12
.)", errc::malformed);
  load_fails(R"(V\U00110000
.)", errc::malformed);
  load_fails(R"(V\uXYZW
.)", errc::malformed);
}

TEST_CASE("reader decodes copyreg._reconstructor(cls, object, None) of an allow-listed class as cls.__new__(cls)",
          "[pickle]") {
  // multiprocessing.managers.Token('Q', ('h', 1), 'x') as Python 3 writes it with protocol 0.
  std::string token0 =
      "ccopy_reg\n_reconstructor\np0\n(cmultiprocessing.managers\nToken\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n"
      "(VQ\np5\n(Vh\np6\nI1\ntp7\nVx\np8\ntp9\nb.";
  value t = load_ok(token0);
  REQUIRE(t.if_object() != nullptr);
  CHECK(t.if_object()->is("multiprocessing.managers", "Token"));
  CHECK(t.if_object()->new_object);
  CHECK(t.if_object()->args.empty());
  CHECK(t.if_object()->state == value::tuple_of("Q", value::tuple_of("h", 1), "x"));
  // Any other base than object would call that base's constructor: refused.
  load_fails("ccopy_reg\n_reconstructor\n(cbuiltins\nKeyError\ncbuiltins\nKeyError\nNtR.", errc::malformed);
  // A class outside the allow-list is refused by name before the reconstructor is reached.
  CHECK(load_fails("ccopy_reg\n_reconstructor\n(cos\n_wrap_close\nc__builtin__\nobject\nNtR.", errc::forbidden_class)
            .find("os._wrap_close") != std::string::npos);
}

TEST_CASE("reader builds tuples, lists, dicts, sets and frozensets with every opcode that makes them", "[pickle]") {
  CHECK(load_ok(p4(")")) == value::tuple_of());
  CHECK(load_ok(p4(P('K', 1, 0x85))) == value::tuple_of(1));
  CHECK(load_ok(p4(P('K', 1, 'K', 2, 0x86))) == value::tuple_of(1, 2));
  CHECK(load_ok(p4(P('K', 1, 'K', 2, 'K', 3, 0x87))) == value::tuple_of(1, 2, 3));
  CHECK(load_ok(p4(P('(', 'K', 1, 'K', 2, 'K', 3, 'K', 4, 't'))) == value::tuple_of(1, 2, 3, 4));
  CHECK(load_ok(p4("]")) == value::list_of());
  CHECK(load_ok(p4(P(']', 'K', 1, 'a'))) == value::list_of(1));
  CHECK(load_ok(p4(P(']', '(', 'K', 1, 'K', 2, 'e', '(', 'K', 3, 'e'))) == value::list_of(1, 2, 3));
  CHECK(load_ok(p4(P('(', 'K', 1, 'N', 'l'))) == value::list_of(1, nullptr));
  CHECK(load_ok(p4("}")) == value::make_dict({}));
  CHECK(load_ok(p4(P('}', 'K', 1, 'K', 2, 's'))) == value::make_dict({{1, 2}}));
  CHECK(load_ok(p4(P('}', '(', 'K', 1, 'K', 2, 'K', 3, 'N', 'u'))) == value::make_dict({{1, 2}, {3, nullptr}}));
  CHECK(load_ok(p4(P('(', 'K', 1, 'K', 2, 'd'))) == value::make_dict({{1, 2}}));
  // A duplicate key keeps its first place and takes the last value, as in Python.
  value dup = load_ok(p4(P('}', '(', 'K', 1, 'K', 2, 'K', 3, 'K', 4, 'K', 1, 'K', 5, 'u')));
  CHECK(dup.size() == 2);
  CHECK(*dup.if_dict()->begin()->mapped.as<int>() == 5);
  CHECK(load_ok(p4(P(0x8f))) == value(pk::set{}));
  CHECK(load_ok(p4(P(0x8f, '(', 'K', 1, 'K', 1, 'K', 2, 0x90))) == value(pk::set{1, 2}));
  CHECK(load_ok(p4(P('(', 'K', 1, 0x91))) == value::make_frozenset({1}));
  // POP, POP_MARK and DUP.
  CHECK(load_ok(p4(P('K', 1, 'K', 2, '0'))) == value(1));
  CHECK(load_ok(p4(P('K', 1, '(', 'K', 2, 'K', 3, '1'))) == value(1));
  CHECK(load_ok(p4(P('K', 7, '(', '0'))) == value(7));  // POP of an empty mark drops the mark
  CHECK(load_ok(p4(P(']', '2', 0x86))) == value::tuple_of(value::list_of(), value::list_of()));
}

TEST_CASE("reader follows the memo through every PUT and GET opcode, copying shared values", "[pickle]") {
  // [a, a, (a,)] with a = [1, 2]: MEMOIZE / BINGET as Python 3.8+ writes it.
  value shared = load_ok(p4(P(']', 0x94, '(', ']', 0x94, '(', 'K', 1, 'K', 2, 'e', 'h', 1, 'h', 1, 0x85, 0x94, 'e')));
  value a = value::list_of(1, 2);
  CHECK(shared == value::list_of(a, a, value::tuple_of(a)));
  CHECK(load_ok(p4(P('K', 9, 'q', 3, '0', 'h', 3))) == value(9));                  // BINPUT / BINGET
  CHECK(load_ok(p4(P('K', 9, 'r') + le32(70000) + P('0', 'j') + le32(70000))) == value(9));  // LONG_*
  CHECK(load_ok(p4(P('K', 9) + "p5\n" + P('0') + "g5\n")) == value(9));            // text PUT / GET
  // MEMOIZE counts the entries stored, wherever PUT placed them.
  CHECK(load_ok(p4(P('K', 1, 'q', 9, 'K', 2, 0x94, '0', '0', 'h', 1))) == value(2));
}

TEST_CASE("reader skips PROTO and FRAME headers as Python's reader does", "[pickle]") {
  CHECK(load_ok(P(0x80, 5, 0x95) + le64(2) + P('N', '.')).is_none());
  CHECK(load_ok(P(0x80, 2, 'N', 0x80, 4, '.')).is_none());  // PROTO may repeat
  CHECK(load_ok("N.").is_none());                            // no header at all
}

TEST_CASE("reader decodes the builtins that old protocols use to spell bytes, bytearray and sets, without calling "
          "them",
          "[pickle]") {
  // Python 3, protocol 2: bytes as _codecs.encode(str, 'latin1').
  CHECK(load_ok(P(0x80, 2) + "c_codecs\nencode\nX" + le32(2) + "\xc3\xbf" + "X" + le32(6) + "latin1" + P(0x86, 'R', '.')) ==
        value::make_bytes("\xff"));
  // b'' as __builtin__.bytes().
  CHECK(load_ok(P(0x80, 2) + "c__builtin__\nbytes\n)R.") == value::make_bytes(""));
  // set and frozenset from a list.
  CHECK(load_ok(P(0x80, 2) + "c__builtin__\nset\n]" + P('(', 'K', 1, 'K', 2, 'e', 0x85, 'R', '.')) ==
        value(pk::set{1, 2}));
  CHECK(load_ok(P(0x80, 3) + "cbuiltins\nfrozenset\n]" + P('K', 1, 'a', 0x85, 'R', '.')) ==
        value::make_frozenset({1}));
  // bytearray: (str, 'latin-1') in protocol 2, (bytes,) in 3 and 4.
  CHECK(load_ok(P(0x80, 2) + "c__builtin__\nbytearray\nX" + le32(1) + "a" + "X" + le32(7) + "latin-1" +
                P(0x86, 'R', '.')) == value::make_bytearray("a"));
  CHECK(load_ok(p4(short_str("builtins") + short_str("bytearray") + P(0x93, 'C', 1, 'z', 0x85, 'R'))) ==
        value::make_bytearray("z"));
  // Only latin-1 text can spell bytes.
  load_fails(P(0x80, 2) + "c_codecs\nencode\nX" + le32(3) + "\xe2\x82\xac" + "X" + le32(6) + "latin1" +
                 P(0x86, 'R', '.'),
             errc::malformed);
  load_fails(P(0x80, 2) + "c_codecs\nencode\nX" + le32(1) + "a" + "X" + le32(5) + "utf-8" + P(0x86, 'R', '.'),
             errc::malformed);
}

TEST_CASE("reader turns allow-listed classes into object values with REDUCE, NEWOBJ, NEWOBJ_EX, BUILD, INST and OBJ",
          "[pickle]") {
  std::string value_error = short_str("builtins") + short_str("ValueError") + P(0x93);
  value e = load_ok(p4(value_error + short_str("bad") + P(0x85, 'R')));
  REQUIRE(e.if_object() != nullptr);
  CHECK(e == pk::builtin_exception("ValueError", "bad"));
  CHECK(e.if_object()->is("builtins", "ValueError"));

  // Python's own ('#ERROR', Empty()) reply, byte for byte as 3.11's manager sends it.
  std::string reply = P(0x80, 4, 0x95) + le64(34) + short_str("#ERROR") + P(0x94) + short_str("_queue") + P(0x94) +
                      short_str("Empty") + P(0x94, 0x93, 0x94, ')', 'R', 0x94, 0x86, 0x94, '.');
  value r = load_ok(reply);
  CHECK(*r.at(0)->as<std::string>() == "#ERROR");
  CHECK(r.at(1)->if_object()->is("_queue", "Empty"));

  // NEWOBJ + BUILD (multiprocessing.managers.Token).
  std::string token = short_str("multiprocessing.managers") + short_str("Token") + P(0x93, ')', 0x81) +
                      short_str("Queue") + short_str("127.0.0.1") + P('M', 0xe9, 0x03, 0x86) + short_str("7f00") +
                      P(0x87, 'b');
  value t = load_ok(p4(token));
  REQUIRE(t.if_object() != nullptr);
  CHECK(t.if_object()->new_object);
  CHECK(t.if_object()->state == value::tuple_of("Queue", value::tuple_of("127.0.0.1", 1001), "7f00"));

  // NEWOBJ_EX with no keywords; with keywords it is refused.
  CHECK(load_ok(p4(value_error + P(')', '}', 0x92))).if_object()->new_object);
  load_fails(p4(value_error + P(')', '}', 'K', 1, 'K', 2, 's', 0x92)), errc::malformed);

  // Protocol 0/1 INST and OBJ; Python 2's exceptions module maps to builtins below protocol 3.
  CHECK(load_ok(P('(', 'K', 4) + "ibuiltins\nKeyError\n.") == pk::make_exception("builtins", "KeyError", {4}));
  CHECK(load_ok(P('(') + "cexceptions\nKeyError\n" + P('K', 4, 'o', '.')) ==
        pk::make_exception("builtins", "KeyError", {4}));

  // A caller's own allow-list.
  pk::allow_list mine{{"myapp", "Point"}};
  pk::load_options o;
  o.allowed = &mine;
  CHECK(load_ok(p4(short_str("myapp") + short_str("Point") + P(0x93, 'K', 1, 'K', 2, 0x86, 'R')), o).if_object()->is(
      "myapp", "Point"));
  load_fails(p4(value_error + short_str("x") + P(0x85, 'R')), errc::forbidden_class, o);
}

// ---- bad input ----

TEST_CASE("reader reports every prefix of a valid pickle as truncated", "[pickle]") {
  std::string whole = encode(value::tuple_of("#RETURN", value::tuple_of("7f00", value::list_of(1, 2.5, nullptr)),
                                             value::make_dict({{"k", value::make_bytes("v")}}),
                                             pk::builtin_exception("KeyError", "k")));
  REQUIRE(pk::loads(whole).has_value());
  for (std::size_t n = 0; n < whole.size(); ++n) {
    auto v = pk::loads(std::string_view(whole).substr(0, n));
    INFO("prefix of " << n << " bytes");
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error() == errc::truncated);
  }
  // Lengths that run past the end.
  load_fails(p4(P(0x8c, 10) + "abc"), errc::truncated);
  load_fails(P(0x80, 4, 0x8e) + le64(~0ULL) + "x", errc::truncated);
  load_fails(P(0x80, 4, 0x95) + le64(100) + "N.", errc::truncated);
  load_fails("I12", errc::truncated);  // a text argument without its newline
}

TEST_CASE("reader refuses unknown opcodes and names them", "[pickle]") {
  CHECK(load_fails(p4(P(0xff)), errc::unknown_opcode).find("0xff") != std::string::npos);
  load_fails(p4("z"), errc::unknown_opcode);
  load_fails(p4(P(0x99)), errc::unknown_opcode);
}

TEST_CASE("reader refuses opcodes that would need outside help: persistent ids, extensions, out-of-band buffers",
          "[pickle]") {
  load_fails(p4("Pid\n"), errc::unsupported_opcode);
  load_fails(p4(P('N', 'Q')), errc::unsupported_opcode);
  load_fails(p4(P(0x82, 1)), errc::unsupported_opcode);
  load_fails(p4(P(0x97)), errc::unsupported_opcode);
  load_fails(p4(P(0x98)), errc::unsupported_opcode);
  load_fails(P(0x80, 6, 'N', '.'), errc::unsupported_protocol);
}

TEST_CASE("reader refuses a GET of a memo slot that was never stored", "[pickle]") {
  CHECK(load_fails(p4(P('h', 0)), errc::missing_memo).find("memo entry 0") != std::string::npos);
  load_fails(p4(P('K', 1, 0x94, 'j') + le32(1)), errc::missing_memo);
  load_fails(p4("g7\n"), errc::missing_memo);
}

TEST_CASE("reader refuses globals outside the allow-list and names them, before anything else happens",
          "[pickle]") {
  // The classic attack: os.system('...') through GLOBAL + REDUCE.
  std::string msg = load_fails("cos\nsystem\n(S'echo pwned'\ntR.", errc::forbidden_class);
  CHECK(msg.find("os.system") != std::string::npos);
  CHECK(msg.find("at byte 0") != std::string::npos);
  msg = load_fails(p4(short_str("builtins") + short_str("eval") + P(0x93) + short_str("1") + P(0x85, 'R')),
                   errc::forbidden_class);
  CHECK(msg.find("builtins.eval") != std::string::npos);
  // A proxy passed as an argument: RebuildProxy would run code in Python.
  msg = load_fails(p4(short_str("multiprocessing.managers") + short_str("RebuildProxy") + P(0x93)),
                   errc::forbidden_class);
  CHECK(msg.find("multiprocessing.managers.RebuildProxy") != std::string::npos);
  load_fails(p4(P('(') + "ios\nsystem\n"), errc::forbidden_class);  // INST
  // An empty allow-list refuses even exceptions.
  pk::allow_list none;
  pk::load_options o;
  o.allowed = &none;
  load_fails(p4(short_str("builtins") + short_str("ValueError") + P(0x93, ')', 'R')), errc::forbidden_class, o);
}

TEST_CASE("reader refuses nesting deeper than max_depth, whether by containers or by MARKs", "[pickle]") {
  pk::load_options o;
  o.max_depth = 50;
  auto nested = [](int depth) {
    std::string body;
    for (int i = 0; i < depth; ++i) {
      body += "]";
    }
    for (int i = 0; i < depth - 1; ++i) {
      body += "a";
    }
    return p4(body);
  };
  CHECK(load_ok(nested(50), o).size() == 1);
  load_fails(nested(51), errc::too_deep, o);
  load_fails(p4(std::string(60, '(')), errc::too_deep, o);
  // The default limit is Python's recursion limit.
  load_fails(nested(100'000), errc::too_deep);
}

TEST_CASE("reader refuses memo indices at or above max_memo", "[pickle]") {
  pk::load_options o;
  o.max_memo = 100;
  CHECK(load_ok(p4(P('K', 1, 'q', 99)), o) == value(1));
  load_fails(p4(P('K', 1, 'q', 100)), errc::memo_too_large, o);
  load_fails(p4(P('K', 1, 'r') + le32(0xffffffff)), errc::memo_too_large);
}

TEST_CASE("reader refuses input larger than max_bytes and pickles that make more than max_values values",
          "[pickle]") {
  pk::load_options o;
  o.max_bytes = 10;
  load_fails(p4(short_str("0123456789")), errc::too_large, o);
  o = {};
  o.max_values = 1000;
  std::string many = P(0x80, 4, ']', '(');
  for (int i = 0; i < 1001; ++i) {
    many += "N";
  }
  load_fails(many + "e.", errc::too_large, o);
  // "Billion laughs": each level holds the previous one twice through the memo. 40 levels
  // are 200 bytes of pickle and would copy 2**40 values.
  std::string laughs = P(0x80, 4, ']', 'q', 0);
  for (int i = 1; i <= 40; ++i) {
    laughs += P('h', i - 1, 'h', i - 1, 0x86, 'q', i);
  }
  CHECK(laughs.size() < 300);
  load_fails(laughs + ".", errc::too_large);
}

TEST_CASE("reader refuses pickles whose shared str or bytes copies exceed max_data_bytes", "[pickle]") {
  // [b'x' * 65536] * 2048 as Python writes it: the bytes once (BINBYTES, MEMOIZE), then
  // 2,047 BINGETs: 64 KiB of pickle that would decode to 128 MiB of bytes, well within
  // max_values. Both decoders (the fast path and the general reader) refuse it.
  const std::string big = P('B') + le32(65536) + std::string(65536, 'x');
  auto list_of_copies = [&](int n) {
    std::string list = P(']', 0x94, '(') + big + P(0x94);  // the list is memo 0, the bytes memo 1
    for (int i = 1; i < n; ++i) {
      list += P('h', 1);
    }
    return p4(list + P('e'));
  };
  for (bool fast : {true, false}) {
    INFO("fast_path " << fast);
    pk::load_options o;
    o.fast_path = fast;
    CHECK(load_fails(list_of_copies(2048), errc::too_large, o).find("max_data_bytes") != std::string::npos);
    // 64 copies (4 MiB) are within the default limit, and the value is whole.
    value ok = load_ok(list_of_copies(64), o);
    REQUIRE(ok.if_list() != nullptr);
    REQUIRE(ok.if_list()->size() == 64);
    CHECK((*ok.if_list())[63] == value::make_bytes(std::string(65536, 'x')));
    // A caller's lower limit applies to a single str too.
    o.max_data_bytes = 100;
    load_fails(p4(short_str(std::string(200, 'a'))), errc::too_large, o);
    CHECK(load_ok(p4(short_str(std::string(100, 'a'))), o) == value(std::string(100, 'a')));
  }
  // Sharing through containers (only the general reader decodes a shared tuple): 64 KiB
  // inside 11 levels of (x, x) is 2,048 copies.
  std::string tree = big + P(0x94);
  for (int i = 1; i <= 11; ++i) {
    tree += P('h', i - 1, 0x86, 0x94);
  }
  CHECK(load_fails(p4(tree), errc::too_large).find("max_data_bytes") != std::string::npos);
  // A big int shared through the memo is copied per reference too: a 64 KiB LONG4 (its top
  // byte 0x01: positive, no shorter form) in a list 2,048 times.
  std::string big_int = P(0x8b) + le32(65536) + std::string(65535, '\xff') + P(1);
  std::string ints = P(']', 0x94, '(') + big_int + P(0x94);
  for (int i = 1; i < 2048; ++i) {
    ints += P('h', 1);
  }
  CHECK(load_fails(p4(ints + P('e')), errc::too_large).find("max_data_bytes") != std::string::npos);
  // bytes spelled as latin-1 text (_codecs.encode(s, 'latin1'), protocol 2): a memoized str
  // and argument tuple reduced again and again, each result popped, would grow the
  // decoder's arena by 64 KiB for every 6 bytes of input; the decodes are bounded as made.
  std::string latin = P(0x80, 2, 'c', "_codecs\nencode\n", 'q', 0, 'X') + le32(65536) + std::string(65536, 'a') +
                      P('U', 6, "latin1", 0x86, 'q', 1, 'R', '0');
  for (int i = 0; i < 2048; ++i) {
    latin += P('h', 0, 'h', 1, 'R', '0');
  }
  CHECK(load_fails(latin + P('N', '.'), errc::too_large).find("max_data_bytes") != std::string::npos);
}

TEST_CASE("reader refuses self-referencing structures instead of building cycles", "[pickle]") {
  // l = []; l.append(l) as Python writes it.
  CHECK(load_fails(p4(P(']', 0x94, 'h', 0, 'a')), errc::recursive).find("self-referencing") != std::string::npos);
  // d = {}; d['self'] = d
  load_fails(p4(P('}', 0x94, '(') + short_str("self") + P('h', 0, 'u')), errc::recursive);
  // Through DUP, and through a container that was already placed in another.
  load_fails(p4(P(']', '2', 'a')), errc::recursive);
  load_fails(p4(P(']', 'q', 0, 0x85, 'h', 0, 'K', 1, 'a')), errc::recursive);
}

TEST_CASE("reader refuses unhashable dict keys and set elements as Python does", "[pickle]") {
  CHECK(load_fails(p4(P('}', ']', 'K', 1, 's')), errc::unhashable).find("list") != std::string::npos);
  load_fails(p4(P(0x8f, '(', '}', 0x90)), errc::unhashable);
  load_fails(p4(P('(', 'K', 1, ']', 0x85, 0x91)), errc::unhashable);  // a tuple holding a list
}

TEST_CASE("reader refuses a str that is not UTF-8 and non-ASCII Python 2 strings", "[pickle]") {
  load_fails(p4(P(0x8c, 1, 0xff)), errc::invalid_string);
  load_fails(p4(P(0x8c, 2, 0xc0, 0x80)), errc::invalid_string);  // overlong NUL
  load_fails(p4(P(0x8c, 4, 0xf4, 0x90, 0x80, 0x80)), errc::invalid_string);  // above U+10FFFF
  load_fails(p4(P('U', 1, 0xe9)), errc::invalid_string);
}

TEST_CASE("reader refuses opcodes applied to the wrong operands", "[pickle]") {
  load_fails(p4(""), errc::malformed);                        // STOP on an empty stack
  load_fails(p4(P('K', 1, 'a')), errc::malformed);            // APPEND with nothing below
  load_fails(p4(P('K', 1, 'K', 2, 'a')), errc::malformed);    // APPEND to an int
  load_fails(p4(P(']', 'e')), errc::malformed);               // APPENDS without MARK
  load_fails(p4(P('(', 'K', 1, 'e')), errc::malformed);       // APPENDS with no list below the mark
  load_fails(p4(P('}', '(', 'K', 1, 'u')), errc::malformed);  // SETITEMS of an odd count
  load_fails(p4(P('(', 'K', 1, 'd')), errc::malformed);       // DICT of an odd count
  load_fails(p4(P('K', 1, ')', 'R')), errc::malformed);       // REDUCE of an int
  load_fails(p4(short_str("builtins") + short_str("KeyError") + P(0x93, 'K', 1, 'R')), errc::malformed);
  load_fails(p4(short_str("builtins") + short_str("KeyError") + P(0x93, ')', 'R', 'N', 'b', 'N', 'b')),
             errc::malformed);                                // BUILD twice
  load_fails(p4(P(']', 'N', 'b')), errc::malformed);          // BUILD of a list
  load_fails(p4(P('K', 1, 'K', 2, 0x93)), errc::malformed);   // STACK_GLOBAL of ints
  load_fails(p4(P(0x8b) + le32(0x80000000)), errc::malformed);  // negative LONG4 length
  load_fails(p4(P('(', 0x85)), errc::malformed);              // TUPLE1 across a MARK
  load_fails(p4(short_str("builtins") + short_str("KeyError") + P(0x93)), errc::malformed);  // a bare class
  load_fails("Ix\n.", errc::malformed);
  load_fails("F1.5x\n.", errc::malformed);
  load_fails(p4("N") + "N", errc::trailing_data);
}

TEST_CASE("reader frees the element vectors a large pickle grew, at whatever node they were", "[pickle]") {
  // Each pickle puts a list of 100000 ints at a new node index (i empty lists before it);
  // DUP sends it down the general reader. Its nodes used to keep their element vectors
  // from load to load: 2 MB more held by the reader per pickle, without bound.
  auto in_use = [] {
    struct mallinfo2 m = mallinfo2();  // (zeros under a sanitizer's allocator: then nothing to see)
    return static_cast<long long>(m.uordblks + m.hblkhd);
  };
  pk::reader r;
  const long long before = in_use();
  for (int i = 0; i < 20; ++i) {
    std::string body = "(";
    body.append(static_cast<std::size_t>(i), ']');
    body += "](";
    for (int k = 0; k < 100000; ++k) {
      body += P('K', 1);
    }
    auto v = r.load(p4(body + "e2t"));
    INFO("error: " << r.error_message());
    REQUIRE(v.has_value());
  }
  CHECK(in_use() - before < (4LL << 20));
}

TEST_CASE("reader cuts an error message that quotes a long class name", "[pickle]") {
  // STACK_GLOBAL of a 100000-byte module name (of two-byte characters): the message names
  // its start, stays short and stays UTF-8 (a manager server sends it back in a str).
  std::string module;
  for (int i = 0; i < 50'000; ++i) {
    module += "\xc3\xa9";
  }
  std::string message =
      load_fails(p4(P(0x8d) + le64(module.size()) + module + short_str("x") + P(0x93)), errc::forbidden_class);
  CHECK(message.rfind("forbidden global \xc3\xa9\xc3\xa9", 0) == 0);
  CHECK(message.size() < 1100);
  CHECK(message.find("... at byte 100014") != std::string::npos);  // STACK_GLOBAL's offset
  CHECK(pk::dumps(value(message)).has_value());
}

TEST_CASE("reader reports its last error with the offset and recovers for the next pickle", "[pickle]") {
  pk::reader r;
  auto bad = r.load(p4(P('K', 1, 'h', 5)));
  REQUIRE_FALSE(bad.has_value());
  CHECK(r.error_offset() == 4);
  CHECK(r.error_message().find("at byte 4") != std::string::npos);
  auto good = r.load(p4(P('K', 1, 0x85)));
  REQUIRE(good.has_value());
  CHECK(*good == value::tuple_of(1));
  CHECK(r.error_message().empty());
  CHECK(bad.error().message() == "pickle refers to a memo entry that was never stored");
  CHECK(std::string(bad.error().category().name()) == "corio.pickle");
}

// ---- the writer ----

TEST_CASE("writer emits protocol 4 with the smallest opcode for each value", "[pickle]") {
  CHECK(encode(value()) == P(0x80, 4, 'N', '.'));
  CHECK(encode(value(true)) == P(0x80, 4, 0x88, '.'));
  CHECK(encode(value(255)) == P(0x80, 4, 'K', 0xff, '.'));
  CHECK(encode(value(256)) == P(0x80, 4, 'M', 0, 1, '.'));
  CHECK(encode(value(-1)) == P(0x80, 4, 'J') + le32(0xffffffff) + ".");
  CHECK(encode(value(std::int64_t{1} << 40)) == P(0x80, 4, 0x8a, 6, 0, 0, 0, 0, 0, 1, '.'));
  CHECK(encode(value(1.5)) == P(0x80, 4, 'G', 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, '.'));
  CHECK(encode(value("ab")) == P(0x80, 4, 0x8c, 2, "ab", '.'));
  CHECK(encode(value(std::string(256, 'x'))).substr(2, 5) == "X" + le32(256));
  CHECK(encode(value::make_bytes("ab")) == P(0x80, 4, 'C', 2, "ab", '.'));
  CHECK(encode(value::tuple_of()) == P(0x80, 4, ')', '.'));
  CHECK(encode(value::tuple_of(1, 2)) == P(0x80, 4, 'K', 1, 'K', 2, 0x86, '.'));
  CHECK(encode(value::list_of(1)) == P(0x80, 4, ']', 'K', 1, 'a', '.'));
  CHECK(encode(value::make_dict({{1, 2}})) == P(0x80, 4, '}', 'K', 1, 'K', 2, 's', '.'));
  CHECK(encode(value::make_frozenset({})) == P(0x80, 4, '(', 0x91, '.'));
  CHECK(encode(pk::queue_empty()) ==
        P(0x80, 4) + short_str("queue") + short_str("Empty") + P(0x93, ')', 'R', '.'));
  CHECK(encode(value::make_bytearray("z")) ==
        P(0x80, 4) + short_str("builtins") + short_str("bytearray") + P(0x93, 'C', 1, 'z', 0x85, 'R', '.'));
  CHECK(encode(value::make_bytearray("z"), 5) == P(0x80, 5, 0x96) + le64(1) + "z.");
}

TEST_CASE("writer output decodes to the same value, for every kind of value", "[pickle]") {
  pk::object token;
  token.module = "multiprocessing.managers";
  token.name = "Token";
  token.new_object = true;
  token.state = value::tuple_of("Queue", value::tuple_of("127.0.0.1", 1001), "7f00");
  value::items_type many;
  for (int i = 0; i < 3000; ++i) {
    many.emplace_back(i * 1000003LL);
  }
  value v = value::tuple_of(
      nullptr, true, false, 0, -5, INT64_MIN, INT64_MAX, value(*pk::big_int::from_decimal("-" + std::string(700, '7'))),
      0.1, -0.0, std::numeric_limits<double>::infinity(), "", "\xf0\x9f\x98\x80", std::string(70000, 'q'),
      value::make_bytes(std::string(70000, '\0')), value::make_bytearray("ba"), value::tuple_of(value::tuple_of()),
      value::list_of(value::list_of(), value::make_dict({})), value::make_list(std::move(many)),
      value::make_dict({{"k", 1}, {value::tuple_of(1, "x"), value::list_of()}, {nullptr, 2.5}}), value(pk::set{1, "a"}),
      value::make_frozenset({value::make_frozenset({1})}), pk::builtin_exception("TypeError", "t"),
      value(std::move(token)));
  for (int protocol : {4, 5}) {
    std::string bytes = encode(v, protocol);
    CHECK(load_ok(bytes) == v);
  }
}

TEST_CASE("writer refuses what Python could not load: deep nesting, unhashable keys, bad UTF-8, unknown protocols",
          "[pickle]") {
  value deep = value::list_of();
  for (int i = 0; i < 1001; ++i) {
    deep = value::list_of(std::move(deep));
  }
  CHECK(pk::dumps(deep).error() == errc::too_deep);
  pk::dump_options o;
  o.max_depth = 2000;
  CHECK(pk::dumps(deep, o).has_value());

  pk::dict d;
  d.insert_or_assign(value::list_of(1), 2);
  CHECK(pk::dumps(value(d)).error() == errc::unhashable);
  CHECK(pk::dumps(value(pk::set{value::make_dict({})})).error() == errc::unhashable);
  CHECK(pk::dumps(value(std::string("\xff"))).error() == errc::invalid_string);
  o = {};
  o.protocol = 3;
  CHECK(pk::dumps(value(), o).error() == errc::unsupported_protocol);

  // A failed dump leaves the caller's buffer as it was.
  std::vector<std::byte> out(3, std::byte{7});
  CHECK_FALSE(pk::dump(value::tuple_of(1, std::string("\xff")), out).has_value());
  CHECK(out.size() == 3);
  CHECK(pk::dump(value(1), out).has_value());
  CHECK(out.size() == 3 + 5);
}

// ---- hash flooding ----

namespace {

// libstdc++'s std::hash of a string (its MurmurHash64A with a fixed seed) folds each
// 8-byte block b as h = (h ^ f(b)) * m, with f invertible: for any first block, the
// second block that brings h back to a chosen value can be solved for. So an attacker can
// make as many 16-byte keys with one std::hash as it likes.
constexpr std::uint64_t murmur_m = 0xc6a4a7935bd1e995ULL;

std::uint64_t inverse_of(std::uint64_t a) {  // modulo 2^64, a odd (Newton's iteration)
  std::uint64_t x = a;
  for (int i = 0; i < 6; ++i) {
    x *= 2 - a * x;
  }
  return x;
}

std::uint64_t block_mix(std::uint64_t k) {
  k *= murmur_m;
  k ^= k >> 47;
  return k * murmur_m;
}

std::uint64_t block_unmix(std::uint64_t y) {
  const std::uint64_t m_inv = inverse_of(murmur_m);
  std::uint64_t z = y * m_inv;
  z ^= z >> 47;  // undoes k ^= k >> 47 (47 >= 32: one step)
  return z * m_inv;
}

// 16-byte strings whose two blocks drive the state to the same value: equal std::hash.
std::vector<std::string> colliding_keys(std::size_t n) {
  const std::uint64_t start = 0xc70f6907ULL ^ (16 * murmur_m);  // the state before the blocks
  const std::uint64_t target = 0x0123456789abcdefULL;            // the state after them
  std::vector<std::string> keys;
  for (std::uint64_t first = 1; keys.size() < n; ++first) {
    const std::uint64_t after_first = (start ^ block_mix(first)) * murmur_m;
    const std::uint64_t second = block_unmix(after_first ^ (target * inverse_of(murmur_m)));
    char key[16];  // (not a std::string moved into the vector: g++ 12 -O2 warns falsely)
    std::memcpy(key, &first, 8);
    std::memcpy(key + 8, &second, 8);
    keys.emplace_back(key, sizeof key);
  }
  return keys;
}

}  // namespace

TEST_CASE("pickle: bytes keys that collide under std::hash get distinct hashes",
          "[ipc][pickle][hash]") {
  auto keys = colliding_keys(2000);
  const std::size_t first_std_hash = std::hash<std::string_view>{}(keys[0]);
  std::size_t equal_std_hashes = 0;
  std::vector<std::size_t> ours;
  for (const auto& k : keys) {
    equal_std_hashes += std::hash<std::string_view>{}(k) == first_std_hash ? 1 : 0;
    ours.push_back(value::key_hash(value::make_bytes(k)));
  }
#if defined(__GLIBCXX__)
  REQUIRE(equal_std_hashes == keys.size());  // the attack works on libstdc++'s std::hash
#endif
  std::sort(ours.begin(), ours.end());
  CHECK(std::unique(ours.begin(), ours.end()) == ours.end());  // and not on the keys' hash
  pk::dict d;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    d.insert_or_assign(value::make_bytes(keys[i]), value(static_cast<int>(i)));
  }
  REQUIRE(d.size() == keys.size());
  const value* found = d.find(value::make_bytes(keys[1234]));
  REQUIRE(found != nullptr);
  CHECK(*found->as<int>() == 1234);
}

TEST_CASE("pickle: integers that round to one double get distinct hashes; integral floats hash as their integers",
          "[ipc][pickle][hash]") {
  const std::int64_t base = std::int64_t{1} << 60;
  std::vector<std::size_t> small;
  for (std::int64_t k = 0; k < 512; ++k) {
    small.push_back(value::key_hash(value(base + k)));  // every one is 2.0**60 as a double
  }
  std::sort(small.begin(), small.end());
  CHECK(std::unique(small.begin(), small.end()) == small.end());
  CHECK(value::key_hash(value(base)) == value::key_hash(value(std::ldexp(1.0, 60))));
  CHECK(value::key_equal(value(base), value(std::ldexp(1.0, 60))));
  CHECK_FALSE(value::key_equal(value(base + 1), value(std::ldexp(1.0, 60))));

  auto big = [](std::uint64_t low) {  // 2**100 + low
    std::vector<std::uint8_t> le(14, 0);
    std::memcpy(le.data(), &low, sizeof low);
    le[12] = 0x10;  // bit 100
    return value(pk::big_int::from_twos_complement(le));
  };
  std::vector<std::size_t> large;
  for (std::uint64_t k = 0; k < 512; ++k) {
    large.push_back(value::key_hash(big(k)));
  }
  std::sort(large.begin(), large.end());
  CHECK(std::unique(large.begin(), large.end()) == large.end());
  CHECK(value::key_hash(big(0)) == value::key_hash(value(std::ldexp(1.0, 100))));
  CHECK(value::key_equal(big(0), value(std::ldexp(1.0, 100))));
  CHECK(value::key_hash(value(-base)) == value::key_hash(value(-std::ldexp(1.0, 60))));
}

TEST_CASE("pickle: NaN keys never share a probe run, and each stays its own key as in Python", "[ipc][pickle][hash]") {
  const value nan(std::nan(""));
  CHECK(value::key_hash(nan) != value::key_hash(nan));  // never key_equal, so never the same slot run
  CHECK_FALSE(value::key_equal(nan, nan));
  pk::dict d;
  for (int i = 0; i < 2000; ++i) {
    d.insert_or_assign(nan, value(i));  // one memoized NaN repeated as every key
  }
  CHECK(d.size() == 2000);  // Python: {nan: 0, nan: 1} from two NaN objects has two entries
  CHECK(d.find(nan) == nullptr);
}

TEST_CASE("pickle: big integers that a double holds exactly hash as that double, negative ones too",
          "[ipc][pickle][hash]") {
  auto from_decimal = [](const char* text) { return value(*pk::big_int::from_decimal(text)); };
  // 2**64, -2**64, 3 * 2**70, 2**1023, -(2**53 - 1) * 2**100
  CHECK(value::key_hash(from_decimal("18446744073709551616")) == value::key_hash(value(std::ldexp(1.0, 64))));
  CHECK(value::key_hash(from_decimal("-18446744073709551616")) == value::key_hash(value(-std::ldexp(1.0, 64))));
  CHECK(value::key_hash(from_decimal("3541774862152233910272")) == value::key_hash(value(3 * std::ldexp(1.0, 70))));
  const value huge(std::ldexp(1.0, 1023));
  CHECK(value::key_hash(value(*pk::big_int::from_double(std::ldexp(1.0, 1023)))) == value::key_hash(huge));
  const double odd = -(std::ldexp(1.0, 53) - 1) * std::ldexp(1.0, 100);
  CHECK(value::key_hash(value(*pk::big_int::from_double(odd))) == value::key_hash(value(odd)));
  CHECK(value::key_equal(value(*pk::big_int::from_double(odd)), value(odd)));
  // 2**64 + 1 is no double: not the hash of 2.0**64 (and not key_equal to it).
  CHECK(value::key_hash(from_decimal("18446744073709551617")) != value::key_hash(value(std::ldexp(1.0, 64))));
  CHECK_FALSE(value::key_equal(from_decimal("18446744073709551617"), value(std::ldexp(1.0, 64))));
}

TEST_CASE("pickle: frozensets nested 990 deep hash and compare as keys in time linear in their size",
          "[ipc][pickle][hash]") {
  // Each level a frozenset of the level below and 8 ints (above 8 elements: hashed
  // lookups); one memoized chain repeated as 100 dict keys: a 29 KB pickle. Key equality
  // used to hash every inner element again at every level (depth^2 hashes per comparison):
  // seconds for this pickle, minutes for the lookups below. (Python: a millisecond.)
  const std::string memo0 = "r" + le32(0);
  const std::string get0 = "j" + le32(0);
  std::string ints;
  for (int i = 0; i < 8; ++i) {
    ints += P('K', i);
  }
  std::string body = "(" + ints + P('K', 8, 0x91);
  for (int level = 1; level < 990; ++level) {
    body += memo0 + "0(" + get0 + ints + P(0x91);
  }
  body += memo0 + "0}(";
  for (int k = 0; k < 100; ++k) {
    body += get0 + "N";
  }
  body += "u";
  value d = load_ok(p4(body));
  REQUIRE(d.size() == 1);
  const value& key = d.if_dict()->begin()->key;
  int found = 0;
  for (int i = 0; i < 3000; ++i) {
    found += d.find(key) != nullptr ? 1 : 0;
  }
  CHECK(found == 3000);
}
