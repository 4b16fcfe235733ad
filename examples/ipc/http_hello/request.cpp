// http_hello's request parser (request.hpp): request heads (the request line, header
// fields, the body's framing and the refusals of ambiguous framing), the responses, and
// the chunked-body skipper.
#include "request.hpp"

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <ctime>

namespace http_hello {
namespace {

// "Date: ..." for the current second, cached per thread.
std::string_view date_header() {
  thread_local std::time_t cached = 0;
  thread_local char buf[64];
  thread_local std::size_t len = 0;
  std::time_t now = std::time(nullptr);
  if (now != cached) {
    cached = now;
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    len = std::strftime(buf, sizeof buf, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  }
  return {buf, len};
}

// A response; for HEAD, the headers of `body` without it.
void append_response(std::string& out, std::string_view status, std::string_view body, bool close, bool head = false,
                     std::string_view extra = {}) {
  out += "HTTP/1.1 ";
  out += status;
  out += "\r\nServer: corio\r\nContent-Type: text/plain\r\n";
  out += date_header();
  out += extra;
  out += "Content-Length: ";
  out += std::to_string(body.size());
  out += close ? "\r\nConnection: close\r\n\r\n" : "\r\n\r\n";
  if (!head) {
    out += body;
  }
}

// ---------------------------------------------------------------------------------------
// Request heads

bool is_tchar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_tchar(static_cast<unsigned char>(c)); });
}

// Control characters other than a horizontal tab (a bare CR or LF included), and DEL.
bool has_ctl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return (c < 0x20 && c != '\t') || c == 0x7f;
  });
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
    v.remove_prefix(1);
  }
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
    v.remove_suffix(1);
  }
  return v;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Whether a comma-separated list holds `token` (case-insensitive).
bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    if (iequals(trim(list.substr(0, comma)), token)) {
      return true;
    }
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  return false;
}

// A Content-Length value: digits only (no sign, no list), at most kMaxBody.
bool parse_length(std::string_view v, std::uint64_t* out) {
  if (v.empty() || v.size() > 10) {
    return false;
  }
  std::uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') {
      return false;
    }
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (n > kMaxBody) {
    return false;
  }
  *out = n;
  return true;
}
// Transfer-Encoding: a list of codings; only a single "chunked" is implemented.
int check_transfer_encoding(std::string_view v, int* chunked_seen) {
  while (!v.empty()) {
    std::size_t comma = v.find(',');
    std::string_view coding = trim(v.substr(0, comma));
    v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
    if (coding.empty()) {
      continue;
    }
    if (!iequals(coding, "chunked") || ++*chunked_seen > 1) {
      return 501;
    }
  }
  return 0;
}

}  // namespace

// Parses the request head at the front of `in`: nullopt while it is incomplete.
std::optional<request> parse_head(std::string_view in) {
  std::size_t end = in.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (in.size() > kMaxHead) {
      return request{.error = 431};
    }
    return std::nullopt;
  }
  if (end + 4 > kMaxHead) {
    return request{.error = 431};
  }
  request r;
  r.head_size = end + 4;
  std::string_view head = in.substr(0, end);
  std::size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  std::size_t sp1 = line.find(' ');
  std::size_t sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1 || has_ctl(line)) {
    r.error = 400;
    return r;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method) || target.empty() || target.find(' ') != std::string_view::npos ||
      (version != "HTTP/1.1" && version != "HTTP/1.0")) {
    r.error = 400;
    return r;
  }
  bool keep_alive = version == "HTTP/1.1";
  bool has_length = false;
  int chunked_seen = 0;
  bool has_te = false;
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
  while (!rest.empty()) {
    std::size_t e = rest.find("\r\n");
    std::string_view h = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    std::size_t colon = h.find(':');
    // A folded line (leading space), a name that is not a token ("Host :"), or a control
    // character (a bare CR or LF, NUL, ...) anywhere: 400.
    if (colon == std::string_view::npos || !is_token(h.substr(0, colon)) || has_ctl(h)) {
      r.error = 400;
      return r;
    }
    std::string_view name = h.substr(0, colon);
    std::string_view value = trim(h.substr(colon + 1));
    if (iequals(name, "Connection")) {
      if (has_token(value, "close")) {
        keep_alive = false;
      } else if (has_token(value, "keep-alive")) {
        keep_alive = true;
      }
    } else if (iequals(name, "Content-Length")) {
      if (has_length || !parse_length(value, &r.length)) {
        r.error = 400;
        return r;
      }
      has_length = true;
    } else if (iequals(name, "Transfer-Encoding")) {
      has_te = true;
      if (int status = check_transfer_encoding(value, &chunked_seen); status != 0) {
        r.error = status;
        return r;
      }
    }
  }
  // Both framings, chunked in HTTP/1.0, or an empty coding list: the framing is
  // ambiguous (request smuggling).
  if (has_te && (has_length || version == "HTTP/1.0" || chunked_seen == 0)) {
    r.error = 400;
    return r;
  }
  r.body = has_te ? body_kind::chunked : has_length && r.length > 0 ? body_kind::length : body_kind::none;
  r.close = !keep_alive;
  return r;
}

// Appends the answer to a parsed request.
void respond(std::string_view in, std::string& out, bool close) {
  std::string_view line = in.substr(0, in.find("\r\n"));
  std::string_view method = line.substr(0, line.find(' '));
  std::string_view target = line.substr(method.size() + 1, line.rfind(' ') - method.size() - 1);
  bool head = method == "HEAD";
  if (method != "GET" && !head) {
    append_response(out, "405 Method Not Allowed", "", close, false, "Allow: GET, HEAD\r\n");
  } else if (target != "/") {
    append_response(out, "404 Not Found", kNotFound, close, head);
  } else {
    append_response(out, "200 OK", kBody, close, head);
  }
}

void refuse(std::string& out, int status) {
  switch (status) {
    case 431: append_response(out, "431 Request Header Fields Too Large", "request head too large\n", true); break;
    case 501: append_response(out, "501 Not Implemented", "transfer coding not implemented\n", true); break;
    case 503: append_response(out, "503 Service Unavailable", "too many connections\n", true); break;
    default: append_response(out, "400 Bad Request", "bad request\n", true); break;
  }
}

// ---------------------------------------------------------------------------------------
// Bodies

chunked_skipper::status chunked_skipper::feed(std::string_view in, std::size_t& used) {
  used = 0;
  while (used < in.size()) {
    if (m_state == state::data) {
      std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(m_left, in.size() - used));
      used += take;
      m_left -= take;
      if (m_left == 0) {
        m_state = state::data_end;
      }
      continue;
    }
    std::size_t nl = in.find('\n', used);
    std::size_t upto = nl == std::string_view::npos ? in.size() : nl + 1;
    m_line.append(in.substr(used, upto - used));
    if (m_state == state::trailer) {
      m_trailer_bytes += upto - used;
    }
    used = upto;
    if (m_line.size() > 4096 || m_trailer_bytes > kMaxHead) {
      return status::bad;
    }
    if (nl == std::string_view::npos) {
      return status::more;
    }
    if (m_line.size() < 2 || m_line[m_line.size() - 2] != '\r') {
      return status::bad;  // a bare LF
    }
    std::string_view line(m_line.data(), m_line.size() - 2);
    status s = line_done(line);
    m_line.clear();
    if (s != status::more) {
      return s;
    }
  }
  return status::more;
}

chunked_skipper::status chunked_skipper::line_done(std::string_view line) {
  switch (m_state) {
    case state::size: {
      std::uint64_t n = 0;
      std::size_t i = 0;
      for (; i < line.size() && std::isxdigit(static_cast<unsigned char>(line[i])); ++i) {
        n = n * 16 + static_cast<std::uint64_t>(std::isdigit(static_cast<unsigned char>(line[i]))
                                                    ? line[i] - '0'
                                                    : (line[i] | 0x20) - 'a' + 10);
        if (n > kMaxBody) {
          return status::bad;
        }
      }
      if (i == 0 || (i < line.size() && line[i] != ';' && line[i] != ' ' && line[i] != '\t') || has_ctl(line)) {
        return status::bad;
      }
      m_left = n;
      m_state = n == 0 ? state::trailer : state::data;
      return status::more;
    }
    case state::data_end:
      return line.empty() ? (m_state = state::size, status::more) : status::bad;
    case state::trailer:
      if (line.empty()) {
        return status::done;
      }
      return has_ctl(line) ? status::bad : status::more;
    case state::data: break;
  }
  return status::bad;
}

}  // namespace http_hello
