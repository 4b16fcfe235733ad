// Test hooks of the runtime, for corio's own tests only (not installed, private to
// runtime/): declared here so that the .cpp that defines a hook and the test that sets it
// are checked against one signature. Nothing in the library calls these setters.
// Thread-safety: each says its own. Cost: a relaxed store to set; the hooked path pays a
// relaxed load while no hook is set.
#pragma once

namespace corio::detail {

/// For tests only (defined in runtime/blocking_pool.cpp): `hook` is called as the
/// blocking pool's submit() begins, before it takes its lock, i.e. in the window between
/// spawn_blocking's last look at its stop token and the queueing of the job; nullptr
/// removes it. It runs on the thread that submits, for every pool of the process.
/// Thread-safety: set it before the await that should meet it and clear it after (a
/// relaxed store: the hook publishes nothing; what it touches the test orders by its
/// own means).
void set_blocking_submit_test_hook(void (*hook)()) noexcept;

}  // namespace corio::detail
