// Scaffolding shared by the tests of the waits on a shared futex word (process_sync_test,
// shm_queue_test): a scope that forces futex_await's pre-6.7 fallback (the blocking pool)
// on a kernel that has IORING_OP_FUTEX_WAIT, so that a test runs both ways.
#pragma once

#include <corio/ipc/detail/shared_word.hpp>

namespace corio_test {

/// While it lives, futex_await waits on the blocking pool (`on`) or as the kernel allows
/// (not `on`); "as the kernel allows" again once it is gone. Process-wide: one at a time.
struct fallback_mode {
  explicit fallback_mode(bool on) {
    corio::ipc::detail::set_futex_wait_mode(on ? corio::ipc::detail::futex_wait_mode::force_blocking_pool
                                               : corio::ipc::detail::futex_wait_mode::automatic);
  }
  fallback_mode(const fallback_mode&) = delete;
  fallback_mode& operator=(const fallback_mode&) = delete;
  ~fallback_mode() { corio::ipc::detail::set_futex_wait_mode(corio::ipc::detail::futex_wait_mode::automatic); }
};

}  // namespace corio_test
