// corio::ipc::pickle::dict and set: insertion-ordered containers of values with an open
// addressing index (linear probing) over Python's key hashing, linear search below a few
// elements, and their equality as multisets (with a hash of identity for the elements the
// index cannot find).
#include <corio/ipc/pickle.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <corio/ipc/detail/pickle_hash.hpp>
#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

// ---- dict ----

namespace {

using detail::hash_bytes;
using detail::tag_str;

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

// The index of `hashes` (one per entry, in entry order) built anew; none while there
// are at most linear_limit entries (they are searched in order), nor when it cannot be
// allocated: without an index every lookup scans, which is correct (slower), and the
// next append tries again. So an insert has nothing left that throws once its entry is
// in (see reserve_one_more).
void slots_rebuild(std::vector<std::uint32_t>& slots, const std::vector<std::size_t>& hashes) noexcept {
  slots.clear();
  if (hashes.size() <= linear_limit) {
    return;
  }
  try {
    slots = make_slots(hashes.size());
  } catch (const std::bad_alloc&) {
    return;
  }
  for (std::size_t i = 0; i < hashes.size(); ++i) {
    slots_add(slots, hashes[i], i);
  }
}

// The index after an entry was appended (its hash last in `hashes`): grown when more
// than half full.
void slots_appended(std::vector<std::uint32_t>& slots, const std::vector<std::size_t>& hashes) noexcept {
  if (hashes.size() <= linear_limit) {
    return;
  }
  if (slots.empty() || hashes.size() * 2 > slots.size()) {
    slots_rebuild(slots, hashes);
    return;
  }
  slots_add(slots, hashes.back(), hashes.size() - 1);
}

// Before appending to a container's two parallel vectors (its entries or elements, and
// `hashes`): makes room in `hashes` first, so that the append to the other one (strong
// guarantee) is the last step that can throw and the hash's push_back cannot. A failed
// allocation then leaves the container as it was; before, the other vector could grow by
// one while `hashes` did not, and lookups and == read past its end. Doubling, as
// push_back would.
void reserve_one_more(std::vector<std::size_t>& hashes) {
  if (hashes.size() == hashes.capacity()) {
    hashes.reserve(hashes.empty() ? 4 : hashes.size() * 2);
  }
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

bool dict::insert_or_assign(value key, value mapped) {
  std::size_t hash = value::key_hash(key);
  std::size_t pos = locate(key, hash);
  if (pos != std::string::npos) {
    m_entries[pos].mapped = std::move(mapped);
    return false;
  }
  reserve_one_more(m_hashes);
  m_entries.emplace_back(std::move(key), std::move(mapped));
  m_hashes.push_back(hash);  // cannot throw: room was made
  slots_appended(m_slots, m_hashes);  // cannot throw either (slots_rebuild)
  return true;
}

bool dict::erase(const value& key) {
  std::size_t pos = locate(key, value::key_hash(key));
  if (pos == std::string::npos) {
    return false;
  }
  m_entries.erase(m_entries.begin() + static_cast<std::ptrdiff_t>(pos));
  m_hashes.erase(m_hashes.begin() + static_cast<std::ptrdiff_t>(pos));
  slots_rebuild(m_slots, m_hashes);
  return true;
}

namespace {

using detail::mix;

// A hash of identity, consistent with operator== (identical values hash alike), where
// key_hash is consistent with key_equal: a NaN hashes by its bits, as it is identical to
// itself; 1, 1.0 and True, tuple and list, bytes and bytearray, set and frozenset differ.
// Keyed per process like key_hash (the seed, SipHash for str and bytes), so a peer cannot
// choose values that collide. Cost: the value's size.
std::uint64_t identity_hash(const value& v) noexcept {
  std::uint64_t h = mix(detail::hash_seed() ^ (static_cast<std::uint64_t>(v.type()) + 1));
  auto add = [&h](std::uint64_t x) { h = mix(h ^ x) + 0x9e3779b97f4a7c15ULL; };
  switch (v.type()) {
    case kind::none: break;
    case kind::boolean: add(*v.as<bool>() ? 1 : 0); break;
    case kind::integer: add(static_cast<std::uint64_t>(*v.as<std::int64_t>())); break;
    case kind::floating: add(std::bit_cast<std::uint64_t>(*v.as<double>())); break;
    case kind::big_integer: {
      auto le = v.if_big_int()->twos_complement();  // normalized: equal ints, equal bytes
      add(detail::hash_bytes(std::string_view(reinterpret_cast<const char*>(le.data()), le.size()), detail::tag_int));
      break;
    }
    case kind::str: add(detail::hash_bytes(*v.if_str(), detail::tag_str)); break;
    case kind::bytes:
    case kind::bytearray: add(detail::hash_bytes(*v.if_bytes(), detail::tag_bytes)); break;
    case kind::tuple:
    case kind::list:
      for (const value& x : *v.if_sequence()) {
        add(identity_hash(x));
      }
      break;
    case kind::set:
    case kind::frozenset: {
      std::uint64_t sum = 0;  // order-independent, and counts copies
      for (const value& x : *v.if_set()) {
        sum += mix(identity_hash(x));
      }
      add(sum);
      break;
    }
    case kind::dict: {
      std::uint64_t sum = 0;
      for (const auto& e : *v.if_dict()) {
        sum += mix(identity_hash(e.key) ^ mix(identity_hash(e.mapped) + 1));
      }
      add(sum);
      break;
    }
    case kind::object: {
      const object& o = *v.if_object();
      add(detail::hash_bytes(o.module, detail::tag_object));
      add(detail::hash_bytes(o.name, detail::tag_object));
      add(o.new_object ? 1 : 0);
      for (const value& x : o.args) {
        add(identity_hash(x));
      }
      add(identity_hash(o.state));
      break;
    }
  }
  return h;
}

// One element (a set's element, a dict's entry) that is not key-equal to itself (a NaN in
// it): the index never finds it, as its key hash is drawn anew per call (see key_hash).
struct unindexed {
  std::uint64_t hash;  // identity_hash
  std::size_t position;
};

// Whether `in_a` and `in_b` (the unindexed elements of two containers) are the same
// multiset, where same(i, j) says whether position i of a and position j of b hold
// identical elements. Sorted by identity hash, the two lists must hold the same hashes
// (identical elements hash alike); within a run of one hash, each element of a is matched
// with the first unmatched element of b identical to it (greedy matching is exact for an
// equivalence relation). Elements of one hash are identical but for a collision of the
// keyed hash, so each is compared with one element of b: == over containers of identical
// NaN-holding siblings costs their size times their depth (the hashes), not
// 6^depth as when each element was compared with every element of both containers.
template <class Same>
bool unindexed_alike(std::span<unindexed> in_a, std::span<unindexed> in_b, Same same) noexcept {
  if (in_a.size() != in_b.size()) {
    return false;
  }
  auto by_hash = [](const unindexed& x, const unindexed& y) { return x.hash < y.hash; };
  std::sort(in_a.begin(), in_a.end(), by_hash);
  std::sort(in_b.begin(), in_b.end(), by_hash);
  for (std::size_t k = 0; k < in_a.size(); ++k) {
    if (in_a[k].hash != in_b[k].hash) {
      return false;
    }
  }
  for (std::size_t k = 0; k < in_a.size(); ++k) {
    // in_b[k..] holds b's unmatched elements of this run (and the runs after it).
    std::size_t l = k;
    while (l < in_b.size() && in_b[l].hash == in_a[k].hash && !same(in_a[k].position, in_b[l].position)) {
      ++l;
    }
    if (l == in_b.size() || in_b[l].hash != in_a[k].hash) {
      return false;
    }
    std::swap(in_b[k], in_b[l]);
  }
  return true;
}

// The equality of two containers' items (a set's elements or a dict's entries) as
// multisets, where key_of(item) is what the index looks up, same(x, y) whether two items
// are identical and hash(item) an identity hash of one. The items of a whose key is
// key-equal to itself are found through b's index (the hash each got when inserted):
// neither container holds another key-equal to it, so it is there once in each. The
// others are matched by unindexed_alike, their lists on the stack when a holds at most
// kUnindexedOnStack of them (no allocation; 1 KiB of stack, in alike_on_stack's frame, per
// level of nesting that holds such elements: a level without any pays nothing, as its
// frame holds no arrays), on the heap above that. When the heap lists cannot be allocated
// (noexcept), each one's copies are counted in both containers instead: correct, but
// exponential in the depth of identical siblings, so it takes both an allocation failure
// and more than kUnindexedOnStack such elements in one container.
constexpr std::size_t kUnindexedOnStack = 32;

// Runs collected_alike (multisets_alike's) on two lists of `count` (at most
// kUnindexedOnStack) on the stack. Never inlined: the arrays would sit in multisets_alike's
// frame, paid by each level of a deep ==, also by those with no unindexed element.
template <class Collected>
[[gnu::noinline]] bool alike_on_stack(std::size_t count, Collected& collected_alike) noexcept {
  std::array<unindexed, kUnindexedOnStack> on_stack_a;  // (filled before they are read)
  std::array<unindexed, kUnindexedOnStack> on_stack_b;
  return collected_alike(std::span(on_stack_a).first(count), std::span(on_stack_b).first(count));
}

template <class Item, class KeyOf, class Same, class Hash>
bool multisets_alike(const std::vector<Item>& a, const std::vector<std::size_t>& a_hashes, const std::vector<Item>& b,
                     const std::vector<std::uint32_t>& b_slots, const std::vector<std::size_t>& b_hashes,
                     KeyOf key_of, Same same, Hash hash) noexcept {
  auto indexed = [&key_of](const Item& x) { return value::key_equal(key_of(x), key_of(x)); };
  std::size_t unindexed_in_a = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!indexed(a[i])) {
      ++unindexed_in_a;
    } else if (slots_find(b_slots, b_hashes, a_hashes[i], [&](std::size_t j) { return same(b[j], a[i]); }) ==
               std::string::npos) {
      return false;
    }
  }
  if (unindexed_in_a == 0) {
    return true;  // b's items are those found, each once
  }
  // Fills in_a and in_b (room for unindexed_in_a each) and matches them.
  auto collected_alike = [&](std::span<unindexed> in_a, std::span<unindexed> in_b) {
    std::size_t in_b_count = 0;
    for (std::size_t i = 0, in_a_count = 0; i < a.size(); ++i) {
      if (!indexed(a[i])) {
        in_a[in_a_count++] = {hash(a[i]), i};
      }
      if (!indexed(b[i])) {
        if (in_b_count == in_b.size()) {
          return false;  // more of them than in a
        }
        in_b[in_b_count++] = {hash(b[i]), i};
      }
    }
    return unindexed_alike(in_a, in_b.first(in_b_count),
                           [&](std::size_t i, std::size_t j) { return same(a[i], b[j]); });
  };
  if (unindexed_in_a <= kUnindexedOnStack) {
    return alike_on_stack(unindexed_in_a, collected_alike);
  }
  try {
    std::vector<unindexed> in_a(unindexed_in_a);
    std::vector<unindexed> in_b(unindexed_in_a);
    return collected_alike(in_a, in_b);
  } catch (const std::bad_alloc&) {
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (indexed(a[i])) {
      continue;
    }
    std::size_t in_a = 1;  // a[i] itself, not compared (that would double each level's work)
    std::size_t in_b = 0;
    for (std::size_t j = 0; j < a.size(); ++j) {
      in_a += (j != i && same(a[j], a[i])) ? 1 : 0;
      in_b += same(b[j], a[i]) ? 1 : 0;
    }
    if (in_a != in_b) {
      return false;
    }
  }
  return true;
}

}  // namespace
// Identity of dicts: the same multiset of (key, value) pairs, each compared as values. A
// multiset, because keys that are not equal to themselves (NaN, tuples holding one) may
// appear more than once.
bool operator==(const dict& a, const dict& b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  using entry = dict::entry;
  return multisets_alike(
      a.m_entries, a.m_hashes, b.m_entries, b.m_slots, b.m_hashes, [](const entry& e) -> const value& { return e.key; },
      [](const entry& x, const entry& y) { return x.key == y.key && x.mapped == y.mapped; },
      [](const entry& e) { return mix(identity_hash(e.key) ^ mix(identity_hash(e.mapped) + 1)); });
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

bool set::insert(value element) {
  std::size_t hash = value::key_hash(element);
  if (locate(element, hash) != std::string::npos) {
    return false;
  }
  reserve_one_more(m_hashes);
  m_items.push_back(std::move(element));
  m_hashes.push_back(hash);  // cannot throw: room was made
  slots_appended(m_slots, m_hashes);  // cannot throw either (slots_rebuild)
  return true;
}

bool set::erase(const value& element) {
  std::size_t pos = locate(element, value::key_hash(element));
  if (pos == std::string::npos) {
    return false;
  }
  m_items.erase(m_items.begin() + static_cast<std::ptrdiff_t>(pos));
  m_hashes.erase(m_hashes.begin() + static_cast<std::ptrdiff_t>(pos));
  slots_rebuild(m_slots, m_hashes);
  return true;
}

// Identity of sets: the same multiset of elements (see dict's operator==).
bool operator==(const set& a, const set& b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  return multisets_alike(
      a.m_items, a.m_hashes, b.m_items, b.m_slots, b.m_hashes, [](const value& x) -> const value& { return x; },
      [](const value& x, const value& y) { return x == y; }, [](const value& x) { return identity_hash(x); });
}

bool operator==(const object& a, const object& b) noexcept {
  return a.module == b.module && a.name == b.name && a.new_object == b.new_object && a.args == b.args &&
         a.state == b.state;
}

}  // namespace corio::ipc::pickle
