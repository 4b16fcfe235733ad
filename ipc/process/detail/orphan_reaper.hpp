// corio::ipc::detail::orphan_reaper: reaps children whose handles were dropped.
//
// Design: one background thread per process, started on the first adopt(), independent
// of any corio runtime (so a child dropped just before runtime shutdown is still reaped).
// It sleeps in epoll_wait on the adopted pidfds (a pidfd is readable once its process
// exits, Linux 5.3+), reaps each ready one with waitid(P_PIDFD, WEXITED | WNOHANG) and
// closes it. adopt() is one epoll_ctl(ADD) from any thread. The thread blocks every
// signal and lives until the process exits.
// Fallback: a pidfd the epoll set refuses (or every one, if epoll or its thread could not
// start) goes to a queue polled by a second thread (waitid WNOHANG every 10 ms), and so
// does one that is readable but not reapable (a child traced by another process: its exit
// goes to the tracer first), which would otherwise be reported again at once. adopt()
// never blocks and never kills: a child is SIGKILLed only by kill_on_drop, before.
// Thread-safety: adopt() from any thread. Cost: one epoll_ctl per adopted child.
#pragma once

#include <cstddef>

namespace corio::ipc::detail {

/// Takes ownership of `pidfd` (an unreaped child's) and reaps the child once it exits.
void orphan_reaper_adopt(int pidfd) noexcept;

/// How many adopted children have not been reaped yet (for tests).
std::size_t orphan_reaper_pending() noexcept;

}  // namespace corio::ipc::detail
