// corio::ipc::pickle::detail::fast_reader: the single-pass decoder that reader::load tries
// first. It builds values directly on its stack, for the opcodes that plain data uses
// (protocols 2-5: scalars, str, bytes, bytearray, tuples, lists, dicts, sets, frozensets,
// the memo for str and bytes) and gives up — returning nullopt, so that the general
// reader (pickle_reader.cpp) decodes the pickle again and reports any error — on anything
// else: globals and objects, a GET of a memoized container (sharing), DUP, text opcodes,
// any malformed input and any limit reached. Without shared containers no value can be
// reached twice, so no cycle can form and no copy is needed.
// Invariant: whenever it returns a value, the general reader returns an identical value
// for the same input and options (it enforces the same limits at least as strictly:
// every pushed value counts against max_values, every pushed str/bytes/bytearray/int byte
// against max_data_bytes, depths and MARKs against max_depth, memo indices against
// max_memo). fuzz/pickle_fuzz.cpp checks this on every input.
#include <algorithm>
#include <bit>

#include "pickle_detail.hpp"

namespace corio::ipc::pickle::detail {

std::optional<value> fast_reader::load(std::span<const std::byte> data, const load_options& o) {
  m_state.start(data);
  m_options = &o;
  m_data_bytes = 0;
  std::optional<value> out = run();
  m_state.stack.clear();
  return out;
}

void fast_reader::trim() {
  m_state.trim(4096);
}

bool fast_reader::push_data(kind k, std::size_t width) {
  std::uint64_t n;
  if (!m_state.take_le(width, n) || n > m_state.remaining() || n >= no_source) {
    return false;
  }
  std::size_t off = m_state.pos;
  std::string_view s(reinterpret_cast<const char*>(m_state.in) + off, n);
  m_state.pos += n;
  if (!count_data(n)) {
    return false;
  }
  switch (k) {
    case kind::str:
      if (!valid_utf8(s)) {
        return false;
      }
      return push(0, off, static_cast<std::uint32_t>(n), s);
    case kind::bytes: return push(0, off, static_cast<std::uint32_t>(n), value::make_bytes(s));
    default: return push(0, off, static_cast<std::uint32_t>(n), value::make_bytearray(s));
  }
}

// Moves stack[from..] into the container `target` (a stack index below from), pairwise
// for a dict; refuses what the general reader would refuse (unhashable keys) by giving up.
bool fast_reader::add_items(std::size_t target, std::size_t from) {
  entry& t = m_state.stack[target];
  std::uint32_t depth = t.depth;
  for (std::size_t i = from; i < m_state.stack.size(); ++i) {
    depth = std::max(depth, m_state.stack[i].depth + 1);
  }
  if (depth > m_options->max_depth) {
    return false;
  }
  t.depth = depth;
  switch (t.v.type()) {
    case kind::list: {
      auto& items = *t.v.if_list();
      items.reserve(items.size() + (m_state.stack.size() - from));
      for (std::size_t i = from; i < m_state.stack.size(); ++i) {
        items.push_back(std::move(m_state.stack[i].v));
      }
      break;
    }
    case kind::dict: {
      if ((m_state.stack.size() - from) % 2 != 0) {
        return false;
      }
      dict& d = *t.v.if_dict();
      d.reserve(d.size() + (m_state.stack.size() - from) / 2);
      for (std::size_t i = from; i < m_state.stack.size(); i += 2) {
        if (!m_state.stack[i].v.hashable()) {
          return false;
        }
        d.insert_or_assign(std::move(m_state.stack[i].v), std::move(m_state.stack[i + 1].v));
      }
      break;
    }
    case kind::set: {
      set& s = *t.v.if_set();
      for (std::size_t i = from; i < m_state.stack.size(); ++i) {
        if (!m_state.stack[i].v.hashable()) {
          return false;
        }
        s.insert(std::move(m_state.stack[i].v));
      }
      break;
    }
    default: return false;
  }
  m_state.stack.erase(m_state.stack.begin() + static_cast<std::ptrdiff_t>(from), m_state.stack.end());
  return true;
}

// A new container of kind k from stack[from..]; the stack is cut back to from.
bool fast_reader::build(kind k, std::size_t from) {
  std::uint32_t depth = 1;
  for (std::size_t i = from; i < m_state.stack.size(); ++i) {
    depth = std::max(depth, m_state.stack[i].depth + 1);
  }
  if (depth > m_options->max_depth || ++m_state.created > m_options->max_values) {
    return false;
  }
  value v;
  switch (k) {
    case kind::tuple:
    case kind::list: {
      value::items_type items;
      items.reserve(m_state.stack.size() - from);
      for (std::size_t i = from; i < m_state.stack.size(); ++i) {
        items.push_back(std::move(m_state.stack[i].v));
      }
      v = k == kind::tuple ? value::make_tuple(std::move(items)) : value::make_list(std::move(items));
      break;
    }
    case kind::dict: {
      if ((m_state.stack.size() - from) % 2 != 0) {
        return false;
      }
      dict d;
      d.reserve((m_state.stack.size() - from) / 2);
      for (std::size_t i = from; i < m_state.stack.size(); i += 2) {
        if (!m_state.stack[i].v.hashable()) {
          return false;
        }
        d.insert_or_assign(std::move(m_state.stack[i].v), std::move(m_state.stack[i + 1].v));
      }
      v = value(std::move(d));
      break;
    }
    case kind::frozenset: {
      set st;
      for (std::size_t i = from; i < m_state.stack.size(); ++i) {
        if (!m_state.stack[i].v.hashable()) {
          return false;
        }
        st.insert(std::move(m_state.stack[i].v));
      }
      v = value::make_frozenset(std::move(st));
      break;
    }
    default: return false;
  }
  m_state.stack.erase(m_state.stack.begin() + static_cast<std::ptrdiff_t>(from), m_state.stack.end());
  m_state.stack.emplace_back(depth, 0, no_source, std::move(v));
  return true;
}

bool fast_reader::memo_put(std::uint64_t idx) {
  if (m_state.stack.size() <= m_state.fence() || idx >= m_options->max_memo) {
    return false;
  }
  if (idx == m_state.memo.size()) {
    m_state.memo.emplace_back();
  } else if (idx > m_state.memo.size()) {
    m_state.memo.resize(idx + 1);
  }
  memo_entry& m = m_state.memo[idx];
  if (m.k == memo_kind::empty) {
    ++m_state.memo_count;
  }
  const entry& top = m_state.stack.back();
  m.k = memo_kind::other;
  if (top.src_len != no_source) {
    m.k = top.v.type() == kind::str ? memo_kind::str : top.v.type() == kind::bytes ? memo_kind::bytes
                                                                                  : memo_kind::bytearray;
    m.off = top.src_off;
    m.len = top.src_len;
  }
  return true;
}

bool fast_reader::memo_get(std::uint64_t idx) {
  if (idx >= m_state.memo.size()) {
    return false;
  }
  const memo_entry& m = m_state.memo[idx];
  std::string_view s(reinterpret_cast<const char*>(m_state.in) + m.off, m.len);
  if (m.k != memo_kind::empty && m.k != memo_kind::other && !count_data(m.len)) {
    return false;  // every copy counts: the general reader reports the limit
  }
  switch (m.k) {
    case memo_kind::str: return push(0, m.off, m.len, s);
    case memo_kind::bytes: return push(0, m.off, m.len, value::make_bytes(s));
    case memo_kind::bytearray: return push(0, m.off, m.len, value::make_bytearray(s));
    default: return false;  // a shared container (or an empty slot): the general reader
  }
}

// long: the decoder's hot loop, one case per opcode of plain data, most of them a line or
// two; the loop's state (position, stack) stays in registers across the cases. Split into
// handlers, the table would be read in pieces and each opcode would pay a call where the
// compiler does not inline (bench/ipc/pickle_bench measures this loop).
std::optional<value> fast_reader::run() {
  std::uint64_t n = 0;
  while (m_state.pos < m_state.size) {
    unsigned char op = m_state.in[m_state.pos++];
    switch (op) {
      case 0x80:  // PROTO
        if (!m_state.take_le(1, n) || n > 5) {
          return std::nullopt;
        }
        break;
      case 0x95:  // FRAME
        if (!m_state.take_le(8, n) || n > m_state.remaining()) {
          return std::nullopt;
        }
        break;
      case '.':
        if (m_state.stack.size() <= m_state.fence() || m_state.pos != m_state.size) {
          return std::nullopt;
        }
        return std::move(m_state.stack.back().v);
      case '(':
        if (m_state.marks.size() > m_options->max_depth) {
          return std::nullopt;
        }
        m_state.marks.push_back(m_state.stack.size());
        break;
      case '0':  // POP
        if (!m_state.marks.empty() && m_state.marks.back() == m_state.stack.size()) {
          m_state.marks.pop_back();
        } else if (m_state.stack.size() > m_state.fence()) {
          m_state.stack.pop_back();
        } else {
          return std::nullopt;
        }
        break;
      case '1':  // POP_MARK
        if (m_state.marks.empty()) {
          return std::nullopt;
        }
        m_state.stack.erase(m_state.stack.begin() + static_cast<std::ptrdiff_t>(m_state.marks.back()), m_state.stack.end());
        m_state.marks.pop_back();
        break;
      case 'N':
        if (!push_scalar()) {
          return std::nullopt;
        }
        break;
      case 0x88:
      case 0x89:
        if (!push_scalar(op == 0x88)) {
          return std::nullopt;
        }
        break;
      case 'K':
      case 'M':
        if (!m_state.take_le(op == 'K' ? 1 : 2, n) || !push_scalar(static_cast<std::int64_t>(n))) {
          return std::nullopt;
        }
        break;
      case 'J':
        if (!m_state.take_le(4, n) || !push_scalar(static_cast<std::int32_t>(static_cast<std::uint32_t>(n)))) {
          return std::nullopt;
        }
        break;
      case 0x8a: {  // LONG1
        const unsigned char* p;
        if (!m_state.take_le(1, n) || !(p = m_state.take(n)) || !count_data(n)) {  // counted as the general reader counts a big int
          return std::nullopt;
        }
        if (!push_scalar(big_int::from_twos_complement(std::span(p, n)))) {
          return std::nullopt;
        }
        break;
      }
      case 'G': {
        std::uint64_t be;
        if (!m_state.take_le(8, be)) {
          return std::nullopt;
        }
        if (!push_scalar(std::bit_cast<double>(__builtin_bswap64(be)))) {
          return std::nullopt;
        }
        break;
      }
      case 0x8c:
      case 'X':
      case 0x8d:
        if (!push_data(kind::str, op == 0x8c ? 1 : op == 'X' ? 4 : 8)) {
          return std::nullopt;
        }
        break;
      case 'C':
      case 'B':
      case 0x8e:
        if (!push_data(kind::bytes, op == 'C' ? 1 : op == 'B' ? 4 : 8)) {
          return std::nullopt;
        }
        break;
      case 0x96:
        if (!push_data(kind::bytearray, 8)) {
          return std::nullopt;
        }
        break;
      case ')':
        if (!push(1, 0, no_source, value::make_tuple({}))) {
          return std::nullopt;
        }
        break;
      case ']':
        if (!push(1, 0, no_source, value::make_list({}))) {
          return std::nullopt;
        }
        break;
      case '}':
        if (!push(1, 0, no_source, dict{})) {
          return std::nullopt;
        }
        break;
      case 0x8f:
        if (!push(1, 0, no_source, set{})) {
          return std::nullopt;
        }
        break;
      case 0x85:
      case 0x86:
      case 0x87: {
        std::size_t k = static_cast<std::size_t>(op - 0x84);
        if (m_state.stack.size() < m_state.fence() + k || !build(kind::tuple, m_state.stack.size() - k)) {
          return std::nullopt;
        }
        break;
      }
      case 't':
      case 'l':
      case 'd':
      case 0x91: {
        if (m_state.marks.empty()) {
          return std::nullopt;
        }
        std::size_t from = m_state.marks.back();
        m_state.marks.pop_back();
        kind k = op == 't' ? kind::tuple : op == 'l' ? kind::list : op == 'd' ? kind::dict : kind::frozenset;
        if (!build(k, from)) {
          return std::nullopt;
        }
        break;
      }
      case 'a':
      case 's': {
        std::size_t k = op == 'a' ? 1 : 2;
        if (m_state.stack.size() < m_state.fence() + k + 1) {
          return std::nullopt;
        }
        std::size_t from = m_state.stack.size() - k;
        kind want = op == 'a' ? kind::list : kind::dict;
        if (m_state.stack[from - 1].v.type() != want || !add_items(from - 1, from)) {
          return std::nullopt;
        }
        break;
      }
      case 'e':
      case 'u':
      case 0x90: {
        if (m_state.marks.empty()) {
          return std::nullopt;
        }
        std::size_t from = m_state.marks.back();
        m_state.marks.pop_back();
        kind want = op == 'e' ? kind::list : op == 'u' ? kind::dict : kind::set;
        if (from <= m_state.fence() || m_state.stack[from - 1].v.type() != want || !add_items(from - 1, from)) {
          return std::nullopt;
        }
        break;
      }
      case 0x94:
        if (!memo_put(m_state.memo_count)) {
          return std::nullopt;
        }
        break;
      case 'q':
      case 'r':
        if (!m_state.take_le(op == 'q' ? 1 : 4, n) || !memo_put(n)) {
          return std::nullopt;
        }
        break;
      case 'h':
      case 'j':
        if (!m_state.take_le(op == 'h' ? 1 : 4, n) || !memo_get(n)) {
          return std::nullopt;
        }
        break;
      default: return std::nullopt;  // the general reader decides
    }
  }
  return std::nullopt;
}

}  // namespace corio::ipc::pickle::detail
