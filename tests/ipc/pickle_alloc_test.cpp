// pickle::dict and pickle::set when an allocation fails in the middle of an insert, and
// their == when every allocation fails. This program replaces the global operator new
// (replaced_new.hpp; its own executable: tests/meson.build, separate_tests): once armed on
// a thread, the n-th allocation from then on (or every one) throws std::bad_alloc.
#include <corio/ipc/pickle.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

#include "replaced_new.hpp"

namespace {
thread_local int t_fail_in = 0;  // 0: disarmed; k: the k-th allocation from now fails
thread_local bool t_fail_all = false;  // every allocation fails

void* counted_malloc(std::size_t n) noexcept {
  if (t_fail_all || (t_fail_in > 0 && --t_fail_in == 0)) {
    return nullptr;
  }
  return std::malloc(n == 0 ? 1 : n);
}

/// The k-th allocation on this thread (from now, while it lives) fails.
struct fail_allocation {
  explicit fail_allocation(int k) { t_fail_in = k; }
  ~fail_allocation() { t_fail_in = 0; }
  fail_allocation(const fail_allocation&) = delete;
  fail_allocation& operator=(const fail_allocation&) = delete;
};

/// Every allocation on this thread (while it lives) fails.
struct fail_every_allocation {
  fail_every_allocation() { t_fail_all = true; }
  ~fail_every_allocation() { t_fail_all = false; }
  fail_every_allocation(const fail_every_allocation&) = delete;
  fail_every_allocation& operator=(const fail_every_allocation&) = delete;
};
}  // namespace

void* corio_test_allocate(std::size_t n) noexcept { return counted_malloc(n); }  // replaced_new.hpp

using corio::ipc::pickle::dict;
using corio::ipc::pickle::set;
using corio::ipc::pickle::value;

TEST_CASE("pickle set: an insert whose allocation fails leaves the set as it was", "[pickle][alloc]") {
  // The element vector grew and the hash vector's growth then failed: the set counted an
  // element it had no hash for, and key lookups and == read past the hashes. And the 9th
  // element builds the index: its allocation failing reported a failed insert of an
  // element that was in.
  const int start = GENERATE(1, 8);
  // Each allocation the insert makes, failed in turn (k past the last: no failure).
  for (int k = 1; k <= 5; ++k) {
    INFO(start << " elements, failing allocation " << k);
    set s;
    for (int i = 0; i < start; ++i) {
      REQUIRE(s.insert(value(i)));
    }
    const set before = s;
    bool threw = false;
    try {
      fail_allocation fail(k);
      (void)s.insert(value(100));
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    if (threw) {
      CHECK(s.size() == static_cast<std::size_t>(start));
      CHECK_FALSE(s.contains(value(100)));
      CHECK(s == before);
      REQUIRE(s.insert(value(100)));  // and it still works
    }
    CHECK(s.size() == static_cast<std::size_t>(start) + 1);
    CHECK(s.contains(value(0)));
    CHECK(s.contains(value(100)));
  }
}

TEST_CASE("pickle dict: an insert whose allocation fails leaves the dict as it was", "[pickle][alloc]") {
  const int start = GENERATE(1, 8);
  for (int k = 1; k <= 5; ++k) {
    INFO(start << " entries, failing allocation " << k);
    dict d;
    for (int i = 0; i < start; ++i) {
      REQUIRE(d.insert_or_assign(value(i), value(i * 10)));
    }
    const dict before = d;
    bool threw = false;
    try {
      fail_allocation fail(k);
      (void)d.insert_or_assign(value(100), value(1000));
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    if (threw) {
      CHECK(d.size() == static_cast<std::size_t>(start));
      CHECK(d.find(value(100)) == nullptr);
      CHECK(d == before);
      REQUIRE(d.insert_or_assign(value(100), value(1000)));  // and it still works
    }
    CHECK(d.size() == static_cast<std::size_t>(start) + 1);
    CHECK((d.find(value(100)) != nullptr && *d.find(value(100)) == value(1000)));
    CHECK((d.find(value(0)) != nullptr && *d.find(value(0)) == value(0)));
  }
}

namespace {
// The value a pickle holds. (Values are loaded, not built or copied here: a value copy
// inlined into this file pairs the replaced operator new with a delete GCC calls mismatched.)
value loaded(const std::string& pickle) {
  auto v = corio::ipc::pickle::loads(pickle);
  REQUIRE(v.has_value());
  return std::move(*v);
}

// A protocol 4 pickle: `body`, then STOP.
std::string p4(const std::string& body) { return std::string("\x80\x04", 2) + body + "."; }

// BINFLOAT of a quiet NaN whose payload's low byte is `low` (big-endian, as pickle writes).
std::string nan_float(unsigned char low) { return std::string("G\x7f\xf8\0\0\0\0\0", 8) + static_cast<char>(low); }
}  // namespace

TEST_CASE("pickle set: == with every allocation failing stays exact and quick for identical NaN siblings",
          "[pickle][alloc]") {
  // Each of 15 levels is a frozenset of two identical tuples (nan, level below), the level
  // below shared through the memo: a ~400-byte pickle. Such elements (a NaN: never found
  // through an index) are matched by a hash of identity in lists that == used to allocate;
  // when that failed, it counted each element's copies in both sets instead, 6 comparisons
  // of the level below per level: 6^15 (hours). Up to 32 of them per container, the lists
  // are on the stack now.
  auto nested = [](char leaf) {
    const std::string put0 = std::string("r\0\0\0\0", 5);  // LONG_BINPUT 0
    const std::string get0 = std::string("j\0\0\0\0", 5);  // LONG_BINGET 0
    const std::string nan_tuple = nan_float(0) + get0 + "\x86";  // (nan, memo 0)
    std::string body = std::string("K") + leaf;                  // BININT1 leaf
    for (int level = 0; level < 15; ++level) {
      body += put0 + "(" + nan_tuple + nan_tuple + "\x91";  // MARK ... FROZENSET
    }
    return p4(body);
  };
  const value a = loaded(nested(1));
  const value copy = loaded(nested(1));
  const value other = loaded(nested(2));  // every leaf differs
  bool equal = false;
  bool other_equal = true;
  {
    fail_every_allocation fail;
    equal = a == copy;
    other_equal = a == other;
  }
  CHECK(equal);
  CHECK_FALSE(other_equal);
}

TEST_CASE("pickle set: == of more than 32 NaN-holding elements, with allocation and without", "[pickle][alloc]") {
  // Above 32 such elements the identity lists are on the heap, and with no memory the
  // copies are counted pairwise: the same answers either way. A set of 40 (nan_k, k).
  auto forty = [](int changed) {
    std::string body = "\x8f(";  // EMPTY_SET MARK
    for (int k = 0; k < 40; ++k) {
      body += nan_float(static_cast<unsigned char>(k + 1)) + "K" + static_cast<char>(k == changed ? 99 : k) + "\x86";
    }
    return p4(body + "\x90");  // ADDITEMS
  };
  const value a = loaded(forty(-1));
  const value copy = loaded(forty(-1));
  const value other = loaded(forty(39));
  REQUIRE(a.if_set() != nullptr);
  REQUIRE(a.if_set()->size() == 40);
  const bool equal = a == copy;
  const bool other_equal = a == other;
  CHECK(equal);
  CHECK_FALSE(other_equal);
  bool equal_no_memory = false;
  bool other_equal_no_memory = true;
  {
    fail_every_allocation fail;
    equal_no_memory = a == copy;
    other_equal_no_memory = a == other;
  }
  CHECK(equal_no_memory);
  CHECK_FALSE(other_equal_no_memory);
}
