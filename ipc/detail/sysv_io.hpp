// Internals shared by the two halves of SysV message queues (not installed, private to ipc/):
// sysv_message_queue.cpp (keys, create/open/remove, the IPC_NOWAIT fast path) defines
// them; sysv_message_queue_wait.cpp (the interruptible waits of send/receive) uses them.
// Thread-safety: each call may run on any thread (the message buffer is per thread).
// Cost: one msgsnd/msgrcv, plus a copy through the per-thread buffer.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <system_error>

namespace corio::ipc::detail {

/// The error of a failed msgsnd/msgrcv (errno `e`). EINVAL: the arguments are checked
/// before the call, so the id names no queue any more (removed before the call started).
std::error_code sysv_transfer_error(int e) noexcept;

/// One msgsnd: 0, or -1 with errno (E2BIG for a message over the system's msgmax as it is
/// now, which msgsnd itself reports as EINVAL).
int sysv_send_once(int id, std::span<const std::byte> message, long type, int flags);

/// One msgrcv into `out` (at most `cap` bytes asked for), and when it fails with E2BIG
/// while `out` has more room, at most 4 more: with as much as a message queued now can
/// be (msgmax now, or the bytes queued if more, within `out`) while more bytes are queued
/// than were asked for; with the same size when no more are (the long message was taken
/// by someone else: the E2BIG is stale, and the next msgrcv answers as if there had been
/// none: ENOMSG, or the wait goes on); once with the same size when the queue cannot be
/// looked at (removed: msgrcv says EIDRM or EINVAL). The size, or -1 with errno (E2BIG
/// after the last try).
ssize_t sysv_receive_once(int id, std::span<std::byte> out, std::size_t cap, long type, int flags, long* got_type);

}  // namespace corio::ipc::detail
