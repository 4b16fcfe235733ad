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

fd_ops* fd_ops::closed_record() noexcept {
  // constinit: built at compile time (no guard, no order of initialisation to respect).
  static constinit fd_ops record(closed_tag{});
  return &record;
}

}  // namespace detail

// An operation reads fd() and then calls ops(); close() exchanges fd() for -1 and then
// calls close_ops(). Both set m_ops from null with a CAS, so when the handle has no
// record yet exactly one of them wins: if ops() wins, close_ops() closes through that
// record (under its mutex: the operation either has not started, and never will, or is
// linked and gets cancelled; either way the number is closed only after it); if
// close_ops() wins, ops() returns closed_record() and the operation does not start.
// (Without the CAS in close, a close() between the operation's fd() and its ops() closed
// the number at once, and the operation ran on whatever socket got the number next.)
detail::fd_ops* owned_fd::ops() const {
  // acquire: pairs with the release half of ops()'s CAS on another thread (the record is
  // fully built before we use it). closed_record() needs no ordering: it is constant.
  detail::fd_ops* ops = m_ops.load(std::memory_order_acquire);
  if (ops != nullptr) {
    return ops;
  }
  auto* fresh = new detail::fd_ops();
  // release on success: publishes the built record (to other operations and close_ops());
  // acquire on failure: we use the record another task published, or closed_record().
  if (m_ops.compare_exchange_strong(ops, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) {
    return fresh;
  }
  delete fresh;
  return ops;
}

void owned_fd::close_ops(int fd) noexcept {
  detail::fd_ops* ops = nullptr;
  // On success nothing else is published (closed_record() is constant), so relaxed would
  // do; acq_rel keeps the CAS symmetric with ops()'s. acquire on failure: pairs with
  // ops()'s release, so the record we close through is fully built.
  if (m_ops.compare_exchange_strong(ops, detail::fd_ops::closed_record(), std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
    if (fd >= 0) {
      ::close(fd);  // no operation had a record: none can start on `fd` any more
    }
    return;
  }
  ops->close(fd);  // keeps the record: operations made earlier then see it closed
}

}  // namespace corio::ipc
