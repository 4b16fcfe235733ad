// The name rule shared by POSIX message queues and shared-memory objects
// (mq_overview(7), shm_overview(7)): '/' followed by 1..254 characters, none of them '/'
// or NUL, and not "/." or "/.." (which the kernel refuses with EACCES).
#pragma once

#include <climits>
#include <string_view>

namespace corio::ipc::detail {

inline bool valid_posix_ipc_name(std::string_view name) noexcept {
  return name.size() >= 2 && name.size() <= NAME_MAX && name.front() == '/' &&
         name.find('/', 1) == std::string_view::npos && name.find('\0') == std::string_view::npos &&
         name != "/." && name != "/..";
}

}  // namespace corio::ipc::detail
