// The worker count a benchmark program takes (--workers N): parsed strictly, since atoi
// reads "abc" as 0 and a runtime of 0 workers aborts. Shared by runtime_bench and
// sync_bench; header-only.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <optional>

namespace bench {

/// `s` as a worker count: a positive decimal integer that is the whole argument, at most
/// 1024 (what runtime_config accepts); nullopt otherwise.
inline std::optional<unsigned> parse_worker_count(const char* s) noexcept {
  char* end = nullptr;
  errno = 0;
  const unsigned long v = std::strtoul(s, &end, 10);
  if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 || v == 0 || v > 1024) {
    return std::nullopt;
  }
  return static_cast<unsigned>(v);
}

}  // namespace bench
