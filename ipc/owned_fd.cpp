// corio::ipc::owned_fd's shared record of operations in flight (fd_ops): creation, the
// end of an operation, and a close() that cancels what is in flight.
#include <corio/ipc/owned_fd.hpp>

namespace corio::ipc {

namespace detail {

void fd_ops::end(fd_op_link& link) noexcept {
  int to_close = -1;
  {
    std::lock_guard lock(m_mutex);
    if (link.prev != nullptr) {
      link.prev->next = link.next;
    } else {
      m_head = link.next;
    }
    if (link.next != nullptr) {
      link.next->prev = link.prev;
    }
    link.prev = link.next = nullptr;
    if (m_closed && m_head == nullptr) {
      to_close = std::exchange(m_fd, -1);
    }
  }
  if (to_close >= 0) {
    ::close(to_close);  // the last operation in flight after close(): now nothing uses it
  }
}

void fd_ops::close(int fd) noexcept {
  std::unique_lock lock(m_mutex);
  m_closed = true;
  if (m_head == nullptr) {
    lock.unlock();
    if (fd >= 0) {
      ::close(fd);
    }
    return;
  }
  m_fd = fd;
  // Each operation is cancelled through its own worker (the stop path: from any thread,
  // the owner submits IORING_OP_ASYNC_CANCEL). The links stay valid while we hold the
  // lock: an operation unlinks itself under it before its frame can go.
  for (fd_op_link* l = m_head; l != nullptr; l = l->next) {
    l->op->request_cancel();
  }
}

}  // namespace detail

detail::fd_ops* owned_fd::ops() const {
  detail::fd_ops* ops = m_ops.load(std::memory_order_acquire);
  if (ops != nullptr) {
    return ops;
  }
  auto* fresh = new detail::fd_ops();
  // release on success: publishes the built record; acquire on failure: we use the one
  // another task published.
  if (m_ops.compare_exchange_strong(ops, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) {
    return fresh;
  }
  delete fresh;
  return ops;
}

}  // namespace corio::ipc
