// io_uring definitions newer than Debian 12's liburing 2.3 / linux-libc-dev 6.1 headers.
//
// The kernel (6.7+) knows these opcodes; the headers do not. Each is a plain SQE fill
// through io_uring_prep_rw() (which in liburing 2.3 zeroes the remaining fields) plus the
// extra fields, at the offsets documented in the kernel's uapi io_uring.h. Whether the
// running kernel supports an opcode is decided by a probe (port::supports()), never by
// these definitions. This is the only place in corio that spells raw opcode numbers.
// Thread-safety: plain functions filling an SQE the caller owns. Cost: a few stores.
#pragma once

#include <liburing.h>
#include <sys/socket.h>
#include <sys/utsname.h>

#include <cstdint>
#include <cstdio>

namespace corio::detail::uring {

/// Whether the running kernel's release is at least major.minor. Only for features the
/// opcode probe cannot see (flags of an opcode, e.g. multishot accept or recv); an
/// unreadable release counts as too old. Cost: uname(2); callers cache the answer.
inline bool kernel_release_at_least(int major, int minor) noexcept {
  utsname u{};
  int have_major = 0;
  int have_minor = 0;
  if (::uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &have_major, &have_minor) != 2) {
    return false;
  }
  return have_major > major || (have_major == major && have_minor >= minor);
}

inline constexpr std::uint8_t op_waitid = 50;       // Linux 6.7
inline constexpr std::uint8_t op_futex_wait = 51;   // Linux 6.7
inline constexpr std::uint8_t op_futex_wake = 52;   // Linux 6.7
inline constexpr std::uint8_t op_bind = 56;         // Linux 6.11
inline constexpr std::uint8_t op_listen = 57;       // Linux 6.11
inline constexpr std::uint8_t op_pipe = 62;         // Linux 6.16

inline constexpr std::uint32_t futex2_size_u32 = 0x02;
inline constexpr std::uint32_t futex2_private = 0x80;
inline constexpr std::uint64_t futex_bitset_match_any = 0xffffffffu;

/// IORING_OP_FUTEX_WAIT on a 32-bit word: completes when woken (res 0), or at once with
/// -EAGAIN if *word != expected when the kernel arms it.
inline void prep_futex_wait(io_uring_sqe* sqe, const std::uint32_t* word, std::uint32_t expected,
                            bool process_private) {
  io_uring_prep_rw(op_futex_wait, sqe, static_cast<int>(futex2_size_u32 | (process_private ? futex2_private : 0)),
                   word, 0, expected);
  sqe->addr3 = futex_bitset_match_any;
}

/// IORING_OP_FUTEX_WAKE: wakes up to `count` waiters on `word`.
inline void prep_futex_wake(io_uring_sqe* sqe, const std::uint32_t* word, std::uint64_t count,
                            bool process_private) {
  io_uring_prep_rw(op_futex_wake, sqe, static_cast<int>(futex2_size_u32 | (process_private ? futex2_private : 0)),
                   word, 0, count);
  sqe->addr3 = futex_bitset_match_any;
}

/// IORING_OP_WAITID: like waitid(idtype, id, info, options).
inline void prep_waitid(io_uring_sqe* sqe, int idtype, int id, void* siginfo, int options) {
  io_uring_prep_rw(op_waitid, sqe, id, nullptr, static_cast<unsigned>(idtype), 0);
  sqe->off = reinterpret_cast<std::uint64_t>(siginfo);
  sqe->file_index = static_cast<std::uint32_t>(options);
}

/// IORING_OP_BIND: like bind(fd, addr, addrlen); the address must stay valid until the
/// CQE (the kernel copies it when the operation is prepared).
inline void prep_bind(io_uring_sqe* sqe, int fd, const sockaddr* addr, socklen_t addrlen) {
  io_uring_prep_rw(op_bind, sqe, fd, addr, 0, addrlen);  // addrlen goes in addr2 (= off)
}

/// IORING_OP_LISTEN: like listen(fd, backlog).
inline void prep_listen(io_uring_sqe* sqe, int fd, int backlog) {
  io_uring_prep_rw(op_listen, sqe, fd, nullptr, static_cast<unsigned>(backlog), 0);
}

/// IORING_OP_PIPE: like pipe2(fds, flags); fds[0] and fds[1] are written when it completes.
inline void prep_pipe(io_uring_sqe* sqe, int* fds, int flags) {
  io_uring_prep_rw(op_pipe, sqe, 0, fds, 0, 0);
  sqe->rw_flags = flags;  // the kernel's pipe_flags shares this word
}

}  // namespace corio::detail::uring
