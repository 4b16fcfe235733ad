// http_hello's request parser: the framing of an HTTP/1.1 request head (parse_head), the
// answer to one (respond) or to a refused one (refuse), and the skipping of a chunked body
// as it arrives (chunked_skipper). Pure functions of the bytes given: no I/O, no state
// beyond a chunked_skipper's own, so any thread may call them; the cost is one pass over
// the head (and over each chunk line).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace http_hello {

inline constexpr std::string_view kBody = "Hello, World!";
inline constexpr std::string_view kNotFound = "not found\n";
inline constexpr std::size_t kMaxHead = 16 * 1024;
inline constexpr std::uint64_t kMaxBody = 1ull << 30;

// How the body of a request is framed.
enum class body_kind { none, length, chunked };

struct request {
  int error = 0;  // 0, or the status to refuse it with (400, 431, 501)
  std::size_t head_size = 0;
  body_kind body = body_kind::none;
  std::uint64_t length = 0;
  bool close = false;
};

// Parses the request head at the front of `in`: nullopt while it is incomplete.
std::optional<request> parse_head(std::string_view in);

// Appends the answer to a parsed request.
void respond(std::string_view in, std::string& out, bool close);

// Appends the refusal with `status` (400, 431, 501 or 503), which closes the connection.
void refuse(std::string& out, int status);

// Skips a chunked body as it arrives (RFC 9112 section 7.1): hex sizes up to 1 GiB,
// extensions ignored, trailers dropped; lines end in CRLF and are at most 4 KiB long.
class chunked_skipper {
 public:
  enum class status { more, done, bad };

  // Consumes the body's bytes at the front of `in`; `used` tells how many.
  status feed(std::string_view in, std::size_t& used);

 private:
  enum class state { size, data, data_end, trailer };

  status line_done(std::string_view line);

  state m_state = state::size;
  std::uint64_t m_left = 0;
  std::string m_line;
  std::size_t m_trailer_bytes = 0;
};

}  // namespace http_hello
