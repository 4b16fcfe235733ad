// Scaffolding for tests of what corio's process-shared waits do when the kernel refuses a
// futex call (shm_queue_edges_test, process_sync_test): a seccomp filter, installed in a
// forked child, that answers one shared futex operation with an error or a SIGSYS instead
// of running it; the skip of a test where such filters are refused; and a page of flags
// shared with such children.
#pragma once

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <new>

#include <catch2/catch.hpp>

#include <corio/ipc/memory_map.hpp>

namespace corio_test {

/// The exit status of a child that could not install its filter: the test is skipped,
/// with a warning, not passed.
inline constexpr int no_seccomp = 77;

/// Whether a seccomp child's exit `status` says that it could not install its filter: the
/// test is then skipped, with a warning, not passed. On the test's main thread only.
inline bool skipped_without_seccomp(int status) {
  if (status != no_seccomp) {
    return false;
  }
  WARN("skipped: the kernel or container refuses a seccomp filter");
  return true;
}

/// The filter's answer "fail with `error`" (ENOSYS, EPERM: what a seccomp policy that
/// refuses futex answers).
inline constexpr std::uint32_t refused_with(int error) {
  return SECCOMP_RET_ERRNO | (static_cast<std::uint32_t>(error) & SECCOMP_RET_DATA);
}

/// In a forked child: makes this thread's (and its later threads') futex calls whose
/// operation word is exactly `op` — a shared one, without FUTEX_PRIVATE_FLAG, as corio's
/// shared words use; glibc's own waits are private — answer `action` instead of running
/// (refused_with(e), or SECCOMP_RET_TRAP: a SIGSYS whose handler sets the result). Only
/// for this build's syscall ABI (the arch check: another ABI's numbers mean other calls).
/// False where the kernel or container refuses seccomp filters, or on an architecture
/// this helper does not know. Irreversible: only in a child that exits after its test.
inline bool refuse_futex_op(std::uint32_t op, std::uint32_t action) {
#if defined(__x86_64__)
  constexpr std::uint32_t arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr std::uint32_t arch = AUDIT_ARCH_AARCH64;
#else
  constexpr std::uint32_t arch = 0;
  return false;
#endif
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_futex, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[1])),  // the low half: little-endian
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, op, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, action),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

/// 64 flags, one per cache line of an anonymous shared page: set in one process (a
/// forked child), read in another. Lock-free atomics: usable from a signal handler too.
struct shared_flags {
  corio::ipc::memory_map map = *corio::ipc::memory_map::anonymous(4096);
  std::atomic<std::uint32_t>& operator[](int i) {
    return *std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(map.data() + 64 * i));
  }
};

/// Sets `flag` to 1 however a child's function returns: the test waits for it (bounded)
/// instead of for the exit, which a child that hangs would never make.
struct set_on_return {
  std::atomic<std::uint32_t>& flag;
  explicit set_on_return(std::atomic<std::uint32_t>& f) : flag(f) {}
  set_on_return(const set_on_return&) = delete;
  set_on_return& operator=(const set_on_return&) = delete;
  ~set_on_return() { flag.store(1); }
};

}  // namespace corio_test
