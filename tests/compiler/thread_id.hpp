// See thread_id.cpp.
#pragma once

#include <thread>

namespace corio_test {
/// std::this_thread::get_id(), called out of line.
std::thread::id current_thread_id() noexcept;
}  // namespace corio_test
