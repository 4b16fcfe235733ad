// The scheduler port's entry points (runtime/port.hpp): each forwards to the current
// worker, a worker's ring or timer heap, or the runtime's shared state. The contracts are
// written in port.hpp; what they rest on, in worker.cpp and idle.cpp.
#include <corio/runtime/port.hpp>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include <corio/runtime/internal/runtime_core.hpp>
#include <corio/runtime/internal/worker.hpp>

namespace corio::detail {

void cancellable::request_cancel() noexcept {
  std::uint8_t expected = idle;
  // acq_rel on success: orders the push below after the claim; pairs with finished()'s
  // exchange. Failure (completed/requested): nothing to do.
  if (cancel_state.compare_exchange_strong(expected, requested, std::memory_order_acq_rel,
                                           std::memory_order_relaxed)) {
    owner->push_cancel(this);
  }
}

}  // namespace corio::detail

namespace corio::port {

using detail::runtime_core;
using detail::tl_worker;
using detail::worker;

worker* current_worker() noexcept { return tl_worker; }

runtime_core* current_runtime() noexcept { return tl_worker != nullptr ? &tl_worker->rt : nullptr; }

runtime_core* runtime_of(worker* w) noexcept { return &w->rt; }

std::uint64_t serial(worker* w) noexcept { return w->serial; }

bool stopping(runtime_core* rt) noexcept { return rt->stopping(); }

bool stopping(worker* w) noexcept { return w->rt.stopping(); }

void wake(std::coroutine_handle<> h, runtime_core* home) noexcept {
  worker* w = tl_worker;
  if (w != nullptr && &w->rt == home) {
    w->schedule_wake(h.address());
  } else {
    home->schedule_remote(h.address());
  }
}

void yield(std::coroutine_handle<> h) noexcept {
  if (worker* w = tl_worker) {
    w->schedule_yield(h.address());
  } else {
    std::fprintf(stderr, "corio: yield outside a runtime\n");
    std::abort();
  }
}

void resume_later(worker* w, std::coroutine_handle<> h) noexcept { w->schedule_back(h.address()); }

std::coroutine_handle<> transfer(std::coroutine_handle<> next) noexcept {
  worker* w = tl_worker;
  if (w == nullptr) {
    return next;
  }
  if (++w->transfer_depth < worker::kTransferLimit) {
    return next;
  }
  w->schedule_back(next.address());
  return std::noop_coroutine();
}

bool consume_budget() noexcept {
  worker* w = tl_worker;
  if (w == nullptr || w->budget == 0) {
    return false;
  }
  return --w->budget == 0;
}

io_uring_sqe* get_sqe(worker* w) { return w->get_sqe(); }

void cancel(worker* w, io_completion* target) {
  io_uring_sqe* sqe = w->get_internal_sqe();
  io_uring_prep_cancel(sqe, target, 0);
  io_uring_sqe_set_data64(sqe, detail::kUserDataIgnore);
}

bool cancel_fd(worker* w, int fd) {
  if (!features().cancel_fd) {
    return false;
  }
  io_uring_sqe* sqe = w->get_internal_sqe();
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, detail::kUserDataIgnore);
  // Now, not with the next batch: the kernel looks `fd` up when the cancel runs, which
  // must precede a close(fd) (or a reuse of the number) that may follow at once.
  w->io_ring().submit();
  return true;
}

int register_buf_ring(worker* w, io_uring_buf_ring* br, unsigned entries, unsigned short bgid) noexcept {
  return w->io_ring().register_buf_ring(br, entries, bgid);
}

int unregister_buf_ring(worker* w, unsigned short bgid) noexcept { return w->io_ring().unregister_buf_ring(bgid); }

namespace {

/// The opcode probe of this kernel (a small ring created and closed once).
struct opcode_table {
  bool ops[256] = {};
  opcode_table() noexcept {
    if (io_uring_probe* probe = io_uring_get_probe()) {
      for (unsigned op = 0; op <= probe->last_op && op < 256; ++op) {
        ops[op] = io_uring_opcode_supported(probe, static_cast<int>(op)) != 0;
      }
      io_uring_free_probe(probe);
    }
    // else io_uring is refused (or no memory): nothing is supported
  }
};

ring_features probe_features() noexcept {
  ring_features f;
  f.futex = supports(uring::op_futex_wait) && supports(uring::op_futex_wake);
  f.waitid = supports(uring::op_waitid);
  f.bind_listen = supports(uring::op_bind) && supports(uring::op_listen);
  f.pipe = supports(uring::op_pipe);
  // Flags the opcode probe cannot see: the kernel release decides. A kernel that claims a
  // newer release but rejects a flag answers -EINVAL, which each user also handles.
  const bool ring_works = supports(IORING_OP_NOP);
  f.multishot_accept = ring_works && uring::kernel_release_at_least(5, 19);
  f.cancel_fd = f.multishot_accept;  // IORING_ASYNC_CANCEL_FD came with 5.19 too
  f.multishot_recv = ring_works && uring::kernel_release_at_least(6, 0);
  return f;
}

}  // namespace

bool supports(unsigned opcode) noexcept {
  // Function-local statics: initialised once, thread-safely, on first use.
  static const opcode_table probed;
  return opcode < 256 && probed.ops[opcode];
}

const ring_features& features() noexcept {
  static const ring_features f = probe_features();
  return f;
}

bool post(worker* w, std::uint64_t worker_serial, cancellable* job) noexcept {
  return worker::post_if_alive(w, worker_serial, job);
}

void arm_timer(worker* w, timer_node* t) { w->arm_timer(t); }

void disarm_timer(worker* w, timer_node* t) { w->disarm_timer(t); }

void resume_timer(worker* w, std::coroutine_handle<> h) { w->schedule_timer(h.address()); }

bool blocking_submit(runtime_core* rt, blocking_job* job) { return rt->blocking.submit(job); }

bool blocking_withdraw(runtime_core* rt, blocking_job* job) { return rt->blocking.withdraw(job); }

int futex_wake(const std::uint32_t* word, int count, bool process_private) noexcept {
  const int op = process_private ? FUTEX_WAKE_PRIVATE : FUTEX_WAKE;
  long n = ::syscall(SYS_futex, word, op, count, nullptr, nullptr, 0);
  return n < 0 ? -errno : static_cast<int>(n);
}

}  // namespace corio::port
