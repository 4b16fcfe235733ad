// Internals shared by the pickle codec's .cpp files (ipc/pickle*.cpp; not installed):
// two's complement helpers, UTF-8 validation as Python's 'surrogatepass' accepts it, and
// the machine state both decoders (the fast path and the general reader) run over.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
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

/// The length of the longest prefix of UTF-8 text `s` that is at most `limit` bytes and
/// does not split a character: a cut inside a sequence moves back to its first byte.
inline std::size_t utf8_prefix_length(std::string_view s, std::size_t limit) noexcept {
  if (s.size() <= limit) {
    return s.size();
  }
  std::size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xc0) == 0x80) {
    --cut;
  }
  return cut;
}

/// What both decoders (fast_reader and reader::impl) run the pickle machine over: the input
/// and how far it is read, the stack with its MARK positions, the memo, and how many values
/// this load has made (checked against load_options::max_values by each decoder). Slot is
/// what the stack holds, Memo what the memo holds. Thread-safety: one thread at a time.
/// Cost: the vectors keep their capacity from load to load until trim.
template <class Slot, class Memo>
struct machine_state {
  const unsigned char* in = nullptr;
  std::size_t size = 0;
  std::size_t pos = 0;
  std::size_t created = 0;
  std::vector<Slot> stack;
  std::vector<std::size_t> marks;  // stack sizes at each open MARK
  std::vector<Memo> memo;
  std::size_t memo_count = 0;  // memo entries set (MEMOIZE's next index)

  // Starts a load of data: nothing read, nothing made, empty stack and memo.
  void start(std::span<const std::byte> data) noexcept {
    in = reinterpret_cast<const unsigned char*>(data.data());
    size = data.size();
    pos = 0;
    created = 0;
    stack.clear();
    marks.clear();
    memo.clear();
    memo_count = 0;
  }

  // Frees a stack or memo a large pickle grew beyond keep entries, and forgets the input.
  void trim(std::size_t keep) {
    if (stack.capacity() > keep) {
      std::vector<Slot>().swap(stack);
    }
    if (memo.capacity() > keep) {
      std::vector<Memo>().swap(memo);
    }
    in = nullptr;
    size = pos = 0;
  }

  std::size_t remaining() const noexcept { return size - pos; }

  // The first stack position above the innermost open MARK (0 without one).
  std::size_t fence() const noexcept { return marks.empty() ? 0 : marks.back(); }

  // The next n bytes of input, or nullptr (nothing read) when fewer are left.
  const unsigned char* take(std::size_t n) noexcept {
    if (n > remaining()) [[unlikely]] {
      return nullptr;
    }
    const unsigned char* p = in + pos;
    pos += n;
    return p;
  }

  // A little-endian unsigned number of n (1, 2, 4 or 8) bytes; false when fewer are left.
  bool take_le(std::size_t n, std::uint64_t& v) noexcept {
    const unsigned char* p = take(n);
    if (!p) [[unlikely]] {
      return false;
    }
    switch (n) {
      case 1: v = p[0]; break;
      case 2: v = static_cast<std::uint64_t>(p[0]) | static_cast<std::uint64_t>(p[1]) << 8; break;
      case 4: {
        std::uint32_t w;
        std::memcpy(&w, p, 4);
        v = std::endian::native == std::endian::big ? __builtin_bswap32(w) : w;
        break;
      }
      default: {
        std::memcpy(&v, p, 8);
        if constexpr (std::endian::native == std::endian::big) {
          v = __builtin_bswap64(v);
        }
      }
    }
    return true;
  }
};

/// The message of errc::too_large when a value would hold more than max_data_bytes.
inline constexpr std::string_view too_much_data = "pickle holds more str/bytes/int data than load_options::max_data_bytes";

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
  // Pushes a value made from args (counted against max_values).
  template <class... A>
  bool push(std::uint32_t depth, std::size_t src_off, std::uint32_t src_len, A&&... args) {
    if (++m_state.created > m_options->max_values) {
      return false;
    }
    m_state.stack.emplace_back(depth, src_off, src_len, std::forward<A>(args)...);
    return true;
  }
  // Counts str/bytes/bytearray and LONG1 bytes pushed (memo copies included) against max_data_bytes;
  // at least as strict as the general reader, which counts only what the result holds.
  bool count_data(std::size_t n) {
    m_data_bytes += n;
    return m_data_bytes <= m_options->max_data_bytes;
  }
  template <class... A>
  bool push_scalar(A&&... args) {
    return push(0, 0, no_source, std::forward<A>(args)...);
  }
  bool push_data(kind k, std::size_t width);
  bool add_items(std::size_t target, std::size_t from);
  bool build(kind k, std::size_t from);
  bool memo_put(std::uint64_t idx);
  bool memo_get(std::uint64_t idx);

  machine_state<entry, memo_entry> m_state;
  const load_options* m_options = nullptr;
  std::size_t m_data_bytes = 0;
};

}  // namespace corio::ipc::pickle::detail
