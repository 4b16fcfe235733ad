// Private: the awaitable of tcp_listener::accept() and unix_listener::accept(): accept4(2)
// at once when a connection is already queued, IORING_OP_ACCEPT only when none is.
//
// Why: a burst of connects queues many connections at once. Through the ring alone, each
// one costs an SQE, a CQE and a resumption of the accepting task at the back of its
// worker's run queue — behind every other runnable task (in a server, the connections
// accepted so far) — so one accept loop took one connection per pass over the queue and
// fell behind the burst (issue 16 item 15: 795 ms against 497 ms for the multishot
// acceptor with 1,500 clients). Here the listener is non-blocking (bind() sets O_NONBLOCK
// on kernels whose io_uring accept handles that, Linux 5.19+: it polls internally), so
// accept4 either takes a queued connection without suspending or fails with EAGAIN, and
// only then does the accept go through the ring and wait.
// Fairness: every synchronous completion charges the task's cooperative budget
// (port::consume_budget); once spent, the accept still completes but the task yields to
// the back of its worker's queue first, so a loop that always finds a connection queued
// cannot starve the connections it already accepted.
// Closing: the accept4 runs under the descriptor's fd_ops lock with the closed check
// (tracked_op::attempt_now), so a close() on another thread never lets it touch a reused
// number; a closed listener goes to the ring path, which reports bad_file_descriptor.
// Stops and off-worker use also take the ring path, which reports them as before
// (operation_canceled, errc::no_runtime).
// Thread-safety: one awaiter. Cost: one accept4(2) per connection, plus one more (EAGAIN)
// and the ring's SQE and CQE when nothing is queued; the fd_ops mutex once per try.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <coroutine>
#include <stop_token>
#include <utility>

#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc::detail {

/// Whether listeners made by bind() are non-blocking and accept directly first: where
/// the kernel's io_uring accept copes with a non-blocking listener (Linux 5.19+, the
/// release that brought multishot accept). One load after the first call.
inline bool direct_accept_supported() noexcept { return port::features().multishot_accept; }

/// accept4 first, `Ring` (a tracked IORING_OP_ACCEPT yielding result<Stream>) on EAGAIN.
template <class Stream, class Ring>
class [[nodiscard]] direct_accept {
 public:
  /// `direct`: the listener is non-blocking (else only the ring is used).
  direct_accept(int listen_fd, bool direct, Ring ring, std::stop_token token) noexcept
      : m_ring(std::move(ring)), m_token(std::move(token)), m_fd(listen_fd), m_direct(direct) {}

  bool await_ready() noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    if (m_direct && accepted_now(corio::detail::inherited_token_of(h))) {
      if (!m_yield) {
        return false;  // resume at once with the connection
      }
      port::yield(h);  // budget spent: other tasks first (touch nothing after this)
      return true;
    }
    return m_ring.await_suspend(h);
  }

  result<Stream> await_resume() {
    if (!m_done) {
      return m_ring.await_resume();
    }
    if (m_res < 0) {
      return unexpected(os_error(m_res));
    }
    return Stream(m_res);
  }

 private:
  // True when accept4 settled it (a connection or an error other than EAGAIN).
  bool accepted_now(const std::stop_token* inherited) {
    if (port::current_worker() == nullptr || m_token.stop_requested() ||
        (inherited != nullptr && inherited->stop_requested())) {
      return false;  // the ring path reports no_runtime or operation_canceled
    }
    int res = -EAGAIN;
    const bool open = m_ring.attempt_now([&] {
      // The same flags as the ring's accept: a blocking, close-on-exec socket.
      int fd = ::accept4(m_fd, nullptr, nullptr, SOCK_CLOEXEC);
      res = fd >= 0 ? fd : -errno;
    });
    if (!open || res == -EAGAIN || res == -EWOULDBLOCK || res == -EINTR) {
      return false;
    }
    m_res = res;
    m_done = true;
    m_yield = port::consume_budget();
    return true;
  }

  Ring m_ring;
  std::stop_token m_token;
  int m_fd;
  int m_res = 0;
  bool m_direct;
  bool m_done = false;
  bool m_yield = false;
};

/// Makes a direct_accept (deduces the ring operation's type).
template <class Stream, class Ring>
direct_accept<Stream, Ring> make_direct_accept(int listen_fd, bool direct, Ring ring, std::stop_token token) {
  return direct_accept<Stream, Ring>(listen_fd, direct, std::move(ring), std::move(token));
}

}  // namespace corio::ipc::detail
