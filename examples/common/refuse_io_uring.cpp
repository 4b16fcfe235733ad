// refuse_io_uring: runs a command in a process where io_uring cannot be used, as in a
// container whose seccomp policy refuses it (Docker's default profile does).
//
//   refuse_io_uring PROGRAM [ARGS...]
//
// It sets PR_SET_NO_NEW_PRIVS (needed to install a filter without CAP_SYS_ADMIN),
// installs a seccomp filter that answers io_uring_setup with EPERM and allows every other
// system call, and execs PROGRAM (looked up on PATH). The filter is kept across exec and
// inherited by every child, so the program's forked children are refused too. A corio
// program run under it cannot start a runtime (errc::io_uring_refused): the examples' check
// (check_runtime_refused.sh) sees how each one ends then.
// Exit status: the program's; 125 if the filter cannot be installed (no seccomp), 127 if
// PROGRAM cannot be run. The filter does not check the architecture field (as
// tests/runtime/runtime_test.cpp's): io_uring_setup is 425 on every architecture.
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: refuse_io_uring PROGRAM [ARGS...]\n");
    return 2;
  }
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(EPERM) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    std::fprintf(stderr, "refuse_io_uring: cannot install the seccomp filter: %s\n", std::strerror(errno));
    return 125;
  }
  ::execvp(argv[1], argv + 1);
  std::fprintf(stderr, "refuse_io_uring: %s: %s\n", argv[1], std::strerror(errno));
  return 127;
}
