// Internals shared by the pickle codec's .cpp files (ipc/pickle*.cpp; not installed):
// two's complement helpers and UTF-8 validation as Python's 'surrogatepass' accepts it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include <corio/ipc/pickle.hpp>

namespace corio::ipc::pickle::detail {

/// Drops redundant sign bytes; zero becomes empty.
void normalize_twos_complement(std::vector<std::uint8_t>& b);

/// A big_int from a magnitude (32-bit limbs, least significant first) and a sign.
big_int big_int_from_magnitude(const std::vector<std::uint32_t>& magnitude, bool negative);

/// Whether s is UTF-8 in which surrogate code points (U+D800..U+DFFF, as three bytes)
/// are allowed: what Python's str.encode('utf-8', 'surrogatepass') produces. Overlong
/// forms and code points above U+10FFFF are refused.
inline bool valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t n;
    std::uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) <= n) {
      return false;
    }
    for (std::size_t i = 1; i <= n; ++i) {
      unsigned cc = p[i];
      if ((cc & 0xc0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff))) {
      return false;
    }
    p += n + 1;
  }
  return true;
}

/// The single-pass decoder of plain data that reader::load tries first (pickle_fast.cpp):
/// a value, or nullopt when the general reader must decode the pickle (it then reports
/// any error). Thread-safety: one thread at a time. Cost: its stack and memo are reused.
class fast_reader {
 public:
  std::optional<value> load(std::span<const std::byte> data, const load_options& options);
  /// Frees buffers a large pickle grew.
  void trim();

 private:
  struct entry {
    template <class... A>
    entry(std::uint32_t d, std::size_t off, std::uint32_t len, A&&... a)
        : v(std::forward<A>(a)...), depth(d), src_len(len), src_off(off) {}
    value v;
    std::uint32_t depth;    // container nesting, as the general reader counts it
    std::uint32_t src_len;  // str/bytes/bytearray: where in the input it came from (for the memo)
    std::size_t src_off;
  };
  static constexpr std::uint32_t no_source = ~std::uint32_t{0};
  enum class memo_kind : std::uint8_t { empty, str, bytes, bytearray, other };
  struct memo_entry {
    memo_kind k = memo_kind::empty;
    std::uint32_t len = 0;
    std::size_t off = 0;
  };

  std::optional<value> run();
  std::size_t fence() const noexcept { return m_marks.empty() ? 0 : m_marks.back(); }
  // Pushes a value made from args (counted against max_values).
  template <class... A>
  bool push(std::uint32_t depth, std::size_t src_off, std::uint32_t src_len, A&&... args) {
    if (++m_created > m_options->max_values) {
      return false;
    }
    m_stack.emplace_back(depth, src_off, src_len, std::forward<A>(args)...);
    return true;
  }
  // Counts str/bytes/bytearray bytes pushed (memo copies included) against max_data_bytes;
  // at least as strict as the general reader, which counts only what the result holds.
  bool count_data(std::size_t n) {
    m_data_bytes += n;
    return m_data_bytes <= m_options->max_data_bytes;
  }
  template <class... A>
  bool push_scalar(A&&... args) {
    return push(0, 0, no_source, std::forward<A>(args)...);
  }
  bool read(std::size_t n, const unsigned char*& p);
  bool read_le(std::size_t n, std::uint64_t& v);
  bool push_data(kind k, std::size_t width);
  bool add_items(std::size_t target, std::size_t from);
  bool build(kind k, std::size_t from);
  bool memo_put(std::uint64_t idx);
  bool memo_get(std::uint64_t idx);

  const unsigned char* m_in = nullptr;
  std::size_t m_size = 0;
  std::size_t m_pos = 0;
  const load_options* m_options = nullptr;
  std::size_t m_created = 0;
  std::size_t m_data_bytes = 0;
  std::vector<entry> m_stack;
  std::vector<std::size_t> m_marks;
  std::vector<memo_entry> m_memo;
  std::size_t m_memo_count = 0;
};

}  // namespace corio::ipc::pickle::detail
