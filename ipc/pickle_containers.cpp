// corio::ipc::pickle::dict and set: insertion-ordered containers of values with an open
// addressing index (linear probing) over Python's key hashing, linear search below a few
// elements, and their equality as multisets.
#include <corio/ipc/pickle.hpp>

#include <cstdint>
#include <new>
#include <string>
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

// Whether the element at position i of `a` (x: an entry's key, or a set's element) occurs
// in `b` as often as in `a`, where same_in_a(j) / same_in_b(j) say whether position j of a /
// b holds an identical element (entry). When x equals itself as a key, neither container
// holds another element key-equal to it, so it is there once in a (i itself, not compared)
// and must be found once in b through b's index. When it does not (a NaN in it: its hash
// is drawn anew per call, see key_hash), identical copies may repeat: both are scanned,
// i itself again not compared. Comparing position i with itself compared nested
// containers twice per level: exponential in their depth.
template <class SameA, class SameB>
bool occurs_alike(const value& x, std::size_t i, std::size_t hash, std::size_t size,
                  const std::vector<std::uint32_t>& b_slots, const std::vector<std::size_t>& b_hashes,
                  SameA same_in_a, SameB same_in_b) {
  if (value::key_equal(x, x)) {
    return slots_find(b_slots, b_hashes, hash, same_in_b) != std::string::npos;
  }
  std::size_t in_a = 1;
  std::size_t in_b = 0;
  for (std::size_t j = 0; j < size; ++j) {
    in_a += (j != i && same_in_a(j)) ? 1 : 0;
    in_b += same_in_b(j) ? 1 : 0;
  }
  return in_a == in_b;
}

}  // namespace

// Identity of dicts: the same multiset of (key, value) pairs, each compared as values. A
// multiset, because keys that are not equal to themselves (NaN, tuples holding one) may
// appear more than once.
bool operator==(const dict& a, const dict& b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.m_entries.size(); ++i) {
    const auto& e = a.m_entries[i];
    auto same_in = [&e](const dict& d) {
      return [&d, &e](std::size_t j) { return d.m_entries[j].key == e.key && d.m_entries[j].mapped == e.mapped; };
    };
    if (!occurs_alike(e.key, i, a.m_hashes[i], a.size(), b.m_slots, b.m_hashes, same_in(a), same_in(b))) {
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
  for (std::size_t i = 0; i < a.m_items.size(); ++i) {
    const value& x = a.m_items[i];
    auto same_in = [&x](const set& s) { return [&s, &x](std::size_t j) { return s.m_items[j] == x; }; };
    if (!occurs_alike(x, i, a.m_hashes[i], a.size(), b.m_slots, b.m_hashes, same_in(a), same_in(b))) {
      return false;
    }
  }
  return true;
}

bool operator==(const object& a, const object& b) noexcept {
  return a.module == b.module && a.name == b.name && a.new_object == b.new_object && a.args == b.args &&
         a.state == b.state;
}

}  // namespace corio::ipc::pickle
