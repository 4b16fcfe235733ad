// Test hooks of ipc/, for corio's own tests only (not installed, private to ipc/):
// declared here so that the .cpp that defines a hook and the test that sets it are
// checked against one signature. Nothing in the library calls these setters.
// Thread-safety: each says its own. Cost: a relaxed store to set; the hooked path pays a
// relaxed load while no hook is set.
#pragma once

namespace corio::ipc::detail {

/// For tests only (defined in ipc/sysv_message_queue.cpp): `after_e2big` runs on the
/// receiving thread each time a receive's msgrcv failed with E2BIG while the caller's
/// buffer had more room than was asked for, before the queue is looked at for the next
/// try (detail/sysv_io.hpp, sysv_receive_once), with the queue's id and msgrcv's flags;
/// nullptr removes it. Thread-safety: set and clear it while no receive runs (join the
/// threads that receive before clearing it); a relaxed store, nothing is published
/// with it.
void set_sysv_receive_test_hook(void (*after_e2big)(int id, int flags)) noexcept;

/// For tests only (defined in ipc/process_condition_variable.cpp): `after_unheard_notify`
/// runs on the notifying thread each time a notify_one()'s first FUTEX_WAKE_OP woke
/// nobody, before its second (which adds 1 and wakes all: that clears the waiters bit, or
/// sets it when a racing notify_all() made the word even); nullptr
/// removes it. Thread-safety: set and clear it while no notify_one() runs; a relaxed
/// store, nothing is published with it.
void set_condition_notify_test_hook(void (*after_unheard_notify)()) noexcept;

}  // namespace corio::ipc::detail
