// corio::ipc::detail exit-wait mode: how child::wait() awaits a child's exit, and a hook
// to force the fallback so that tests exercise it on kernels that do not need it.
//
// Modes: IORING_OP_WAITID on the pidfd (Linux 6.7+, port::features().waitid: one SQE
// that also reaps) or, without it, IORING_OP_POLL_ADD (POLLIN) on the pidfd followed by
// waitid(P_PIDFD, WNOHANG) (Linux 5.3+). force_pidfd_poll makes every later wait take
// the fallback even where WAITID exists (tests/process runs its spawn tests both ways).
// Not for production use: the choice is otherwise automatic.
// Thread-safety: set_exit_wait() from any thread; waits started before it keep their
// mode. Cost: one relaxed load per wait.
#pragma once

namespace corio::ipc::detail {

enum class exit_wait {
  automatic,         ///< WAITID where the ring supports it, else the pidfd poll
  force_pidfd_poll,  ///< always the pidfd poll + waitid(WNOHANG) fallback
};

/// Sets the mode for waits that start afterwards.
void set_exit_wait(exit_wait mode) noexcept;

/// Whether a wait started now would use IORING_OP_WAITID (the kernel has it and the
/// fallback is not forced).
[[nodiscard]] bool exit_wait_uses_waitid() noexcept;

}  // namespace corio::ipc::detail
