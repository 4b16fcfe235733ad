// corio::ipc::pickle::reader around the opcode loop: the public entry points, one load
// (reset, the fast path tried first, the buffers trimmed after), and the copy of the
// result's nodes into a `value` tree at STOP (bounded by the depth and size invariants
// described in pickle_reader.cpp). The opcode loop itself (run) is in pickle_reader.cpp.
#include <corio/ipc/pickle.hpp>

#include <span>
#include <string>
#include <vector>

#include <corio/ipc/detail/pickle_machine.hpp>
#include "pickle_detail.hpp"

namespace corio::ipc::pickle {

// Records a failure for fill(), which reports success as a bool.
bool reader::impl::fill_failed(errc e, std::string_view what) {
  (void)fail(e, what);
  fill_error = e;
  return false;
}

// Appends the value of s to items, constructing scalars and strings in place.
bool reader::impl::append(const slot& s, value::items_type& items) {
  switch (s.tag) {
    case slot_tag::none: items.emplace_back(); return true;
    case slot_tag::boolean: items.emplace_back(s.b); return true;
    case slot_tag::integer: items.emplace_back(s.i); return true;
    case slot_tag::floating: items.emplace_back(s.f); return true;
    case slot_tag::node:
      if (nodes[s.n].k == node_kind::str) {
        items.emplace_back(data(nodes[s.n]));
        return true;
      }
      break;
    case slot_tag::empty: break;
  }
  return fill(s, items.emplace_back());
}

// Writes the value of s into out.
bool reader::impl::fill(const slot& s, value& out) {
  switch (s.tag) {
    case slot_tag::none: out = value(); return true;
    case slot_tag::boolean: out = value(s.b); return true;
    case slot_tag::integer: out = value(s.i); return true;
    case slot_tag::floating: out = value(s.f); return true;
    case slot_tag::empty: return fill_failed(errc::malformed, "internal: empty slot");
    case slot_tag::node: break;
  }
  const node& n = nodes[s.n];
  switch (n.k) {
    case node_kind::str: out = value(data(n)); return true;
    case node_kind::bytes: out = value::make_bytes(data(n)); return true;
    case node_kind::bytearray: out = value::make_bytearray(data(n)); return true;
    case node_kind::big: {
      std::string_view d = data(n);
      out = value(big_int::from_twos_complement(std::span(reinterpret_cast<const std::uint8_t*>(d.data()), d.size())));
      return true;
    }
    case node_kind::tuple:
    case node_kind::list: return fill_sequence(n, out);
    case node_kind::dict: return fill_dict(n, out);
    case node_kind::set:
    case node_kind::frozenset: return fill_set(n, out);
    case node_kind::object: return fill_object(n, out);
    case node_kind::global:
      return fill_failed(errc::malformed, "a bare class reference (" + std::string(module_of(n)) + "." +
                                              std::string(name_of(n)) + ") is not a value this codec holds");
  }
  return fill_failed(errc::malformed, "internal: unknown node");
}

// A tuple or a list.
bool reader::impl::fill_sequence(const node& n, value& out) {
  value::items_type items;
  items.reserve(n.items.size());
  for (const slot& c : n.items) {
    if (!append(c, items)) {
      return false;
    }
  }
  out = n.k == node_kind::tuple ? value::make_tuple(std::move(items)) : value::make_list(std::move(items));
  return true;
}

// A dict: its items are key, value, key, value, ...; a key must be hashable.
bool reader::impl::fill_dict(const node& n, value& out) {
  dict d;
  d.reserve(n.items.size() / 2);
  for (std::size_t i = 0; i + 1 < n.items.size(); i += 2) {
    value k;
    value v;
    if (!fill(n.items[i], k)) {
      return false;
    }
    if (!k.hashable()) {
      return fill_failed(errc::unhashable, "unhashable type '" + std::string(k.type_name()) + "' as a dict key");
    }
    if (!fill(n.items[i + 1], v)) {
      return false;
    }
    d.insert_or_assign(std::move(k), std::move(v));
  }
  out = value(std::move(d));
  return true;
}

// A set or a frozenset of hashable elements.
bool reader::impl::fill_set(const node& n, value& out) {
  set st;
  for (const slot& c : n.items) {
    value e;
    if (!fill(c, e)) {
      return false;
    }
    if (!e.hashable()) {
      return fill_failed(errc::unhashable, "unhashable type '" + std::string(e.type_name()) + "' in a set");
    }
    st.insert(std::move(e));
  }
  out = n.k == node_kind::set ? value(std::move(st)) : value::make_frozenset(std::move(st));
  return true;
}

// An allow-listed object: its class name, its arguments and BUILD's state if any.
bool reader::impl::fill_object(const node& n, value& out) {
  object o;
  o.module = module_of(n);
  o.name = name_of(n);
  o.new_object = n.new_object;
  std::size_t nargs = n.items.size() - (n.has_state ? 1 : 0);
  o.args.resize(nargs);
  for (std::size_t i = 0; i < nargs; ++i) {
    if (!fill(n.items[i], o.args[i])) {
      return false;
    }
  }
  if (n.has_state && !fill(n.items.back(), o.state)) {
    return false;
  }
  out = value(std::move(o));
  return true;
}

void reader::impl::reset(std::span<const std::byte> data) {
  start(data);
  op_pos = 0;
  proto = 0;
  latin1_bytes = 0;
  nodes_used = 0;
  arena.clear();
  message.clear();
  error_offset = 0;
}

// Drops buffers a large pickle grew, so one big message does not pin its memory.
void reader::impl::trim_buffers() {
  constexpr std::size_t keep_nodes = 4096;
  // A node kept for the next load keeps a small element vector only: otherwise each of
  // the first keep_nodes nodes would keep the largest one any earlier pickle put at its
  // index, and a peer sending a large list at a new index each time would grow the reader
  // without bound (200 messages of 200 KB: 450 MB). Only the nodes this load used can
  // have grown; each earlier load trimmed its own.
  constexpr std::size_t keep_items = 64;
  for (std::size_t i = 0; i < nodes_used; ++i) {
    if (nodes[i].items.capacity() > keep_items) {
      std::vector<slot>().swap(nodes[i].items);
    }
  }
  if (nodes.size() > keep_nodes) {
    nodes.resize(keep_nodes);
    nodes.shrink_to_fit();
  }
  if (arena.capacity() > (std::size_t{1} << 20)) {
    std::string().swap(arena);
  }
  machine_state::trim(keep_nodes);
  fast.trim();
}

result<value> reader::impl::load(std::span<const std::byte> data) {
  reset(data);
  if (size > options.max_bytes) {
    auto e = fail(errc::too_large, "pickle of " + std::to_string(size) + " bytes is larger than load_options::max_bytes");
    trim_buffers();
    return e;
  }
  if (options.fast_path) {
    if (std::optional<value> v = fast.load(data, options)) {
      trim_buffers();
      return std::move(*v);
    }
  }
  result<value> out = run();
  trim_buffers();
  return out;
}

reader::reader(load_options options) : m_impl(std::make_unique<impl>(options)) {}
reader::reader(reader&&) noexcept = default;
reader& reader::operator=(reader&&) noexcept = default;
reader::~reader() = default;

result<value> reader::load(std::span<const std::byte> data) { return m_impl->load(data); }

result<value> reader::load(std::string_view data) { return m_impl->load(std::as_bytes(std::span(data.data(), data.size()))); }

const std::string& reader::error_message() const noexcept { return m_impl->message; }

std::size_t reader::error_offset() const noexcept { return m_impl->error_offset; }

result<value> loads(std::span<const std::byte> data, const load_options& options) {
  reader r(options);
  return r.load(data);
}

result<value> loads(std::string_view data, const load_options& options) {
  return loads(std::as_bytes(std::span(data.data(), data.size())), options);
}

}  // namespace corio::ipc::pickle
