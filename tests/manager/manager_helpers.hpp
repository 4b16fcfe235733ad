// Helpers of the manager tests (namespace corio_test): waiting, bounded, for a condition
// that a broken build never brings about, so that its test fails instead of hanging.
#pragma once

#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

#include <chrono>
#include <functional>

namespace corio_test {

/// Waits until condition() holds (true) or `limit` passed (false), looking every 1 ms.
inline corio::task<bool> within(std::chrono::seconds limit, std::function<bool()> condition) {
  auto deadline = corio::clock::now() + limit;
  while (!condition()) {
    if (corio::clock::now() >= deadline) {
      co_return false;
    }
    (void)co_await corio::sleep_for(std::chrono::milliseconds(1));
  }
  co_return true;
}

}  // namespace corio_test
