// Test hooks of ipc/process/, for corio's own tests only (not installed, private to
// ipc/process/): declared here so that the .cpp that defines a hook and the test that
// sets it are checked against one signature. Nothing in the library calls these setters.
// Thread-safety: each says its own. Cost: a relaxed store to set; the hooked path pays a
// relaxed load while no hook is set.
#pragma once

#include <sys/types.h>

namespace corio::ipc::detail {

/// For tests only (defined in ipc/process/fork.cpp): `after_clone` runs in the fork
/// server's helper right after a successful clone, before the helper writes the reply;
/// `before_reply` runs in the new process before it writes its own pid to the reply
/// pipe; each gets the new process's pid; nullptr removes one. They run from the
/// helper's copy of this process's memory, made when fork_server::start() forks it.
/// Thread-safety: set them before fork_server::start() (a relaxed store, read only in
/// those copies; nothing is published with them).
void set_fork_test_hooks(void (*after_clone)(pid_t), void (*before_reply)(pid_t)) noexcept;

}  // namespace corio::ipc::detail
