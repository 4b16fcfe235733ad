// Scaffolding shared by the tests of the thread forms' time limits (message_queue_test,
// shm_queue_test): a call run on a thread of its own that cannot hang the test, and the
// check "timed_out, and not before the limit".
#pragma once

#include <corio/runtime/result.hpp>

#include <atomic>
#include <chrono>
#include <system_error>
#include <thread>

namespace corio_test {

/// Runs `call` (returning an error_code) on a thread of its own and returns what it
/// returned. A call still waiting after 10 s has ignored its limit: `unstick` (which ends
/// the wait some other way — a message, room, a close — so that the check after it
/// fails) runs instead of hanging the test.
template <class Call, class Unstick>
std::error_code bounded_call(Call call, Unstick unstick) {
  // seq_cst (the default): a flag between the test and its thread, nothing subtle.
  std::atomic<bool> done{false};
  std::error_code ec;
  std::thread t([&] {
    ec = call();
    done.store(true);
  });
  for (int i = 0; i < 1000 && !done.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!done.load()) {
    unstick();
  }
  t.join();
  return ec;
}

/// timed_out, and not before `limit` had passed: no error; anything else: io_error.
template <class Call>
std::error_code timed_out_after(std::chrono::milliseconds limit, Call call) {
  const auto start = std::chrono::steady_clock::now();
  const std::error_code ec = call();
  const auto took = std::chrono::steady_clock::now() - start;
  return ec == corio::errc::timed_out && took >= limit ? std::error_code{}
                                                       : make_error_code(std::errc::io_error);
}

}  // namespace corio_test
