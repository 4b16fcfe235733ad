// example::main_guard: how an example's main() ends when something it cannot handle is
// thrown, above all a runtime that cannot start.
//
// Concept: corio::runtime's constructor (and so corio::run) throws std::system_error when
// the runtime cannot start: errc::io_uring_refused where a seccomp filter, a container
// policy or the kernel.io_uring_disabled sysctl refuses io_uring, errc::invalid_config for
// bad settings, the OS error otherwise (out of memory or descriptors). Left to escape
// main(), an exception calls std::terminate: "terminate called after throwing an instance
// of ...", SIGABRT (exit status 134, maybe a core file), and no destructor of main()'s
// locals runs (mmap_server's temporary file, made before its runtime, would stay). Each
// example's main() therefore only calls main_guard() with its name and the function that
// does the work (example_main); main_guard() runs it and returns its exit status, or, when
// a std::exception escapes it (its locals are destroyed by then, a runtime that did start
// among them), prints one line `NAME: what()` on stderr and returns 1. For a refused
// io_uring the line reads
//   NAME: corio: cannot start the runtime: io_uring_setup: Operation not permitted (a
//   seccomp filter, a container policy or ...): io_uring refused by the kernel or ...
// Errors an example handles itself (a bind that fails, a child that exits badly) keep their
// own messages and statuses; only what would have escaped main() comes here.
// Child processes: ipc::fork() runs its callable under the fork server's own catch: an
// exception there (a child's runtime that cannot start: shared_counter's, sysv_queue's) is
// one line on stderr, "corio::ipc::fork: the child's callable threw: ...", and exit status
// 70, and the parent, seeing a failed child, ends with status 1. A child made with a plain
// fork() before the runtime (pipe_parent_child, echo_server --idle-test) makes no runtime;
// an example started as a program (shm_queue's consumers, shm_client) has its own guard.
// common/check_runtime_refused.sh runs every example under a seccomp filter that refuses
// io_uring (suite `examples`).
// Thread-safety: call from main() only. Cost: none until something is thrown.
#pragma once

#include <cstdio>
#include <exception>
#include <functional>
#include <utility>

namespace example {

/// Runs `body(args...)` (an example's work: example_main(argc, argv)) and returns its
/// exit status; if a std::exception escapes it, prints "NAME: what()" on stderr and
/// returns 1 (see the header comment).
template <class Body, class... Args>
int main_guard(const char* name, Body&& body, Args&&... args) {
  try {
    return std::invoke(std::forward<Body>(body), std::forward<Args>(args)...);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
  }
  return 1;
}

}  // namespace example
