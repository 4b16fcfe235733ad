// pickle::dict and pickle::set when an allocation fails in the middle of an insert. This
// program replaces the global operator new (replaced_new.hpp; its own executable: tests/meson.build,
// separate_tests): once armed on a thread, the n-th allocation from then on throws
// std::bad_alloc.
#include <corio/ipc/pickle.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdlib>
#include <new>

#include "replaced_new.hpp"

namespace {
thread_local int t_fail_in = 0;  // 0: disarmed; k: the k-th allocation from now fails

void* counted_malloc(std::size_t n) noexcept {
  if (t_fail_in > 0 && --t_fail_in == 0) {
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
