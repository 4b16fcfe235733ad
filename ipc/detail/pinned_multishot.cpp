// The pinned-multishot engine (ipc/detail/pinned_multishot.hpp): claiming and filling an
// arm, the doorbell to the owner worker and its reconciliation, the CQE handler's frame,
// and close(). The design note and the invariants are in the header.
#include <corio/ipc/detail/pinned_multishot.hpp>

#include <utility>

namespace corio::ipc::detail {

using namespace multishot_names;

pinned_multishot::pinned_multishot() noexcept {
  on_cqe = &cqe_arrived;
  m_doorbell.state = this;
  m_doorbell.on_cancel_drained = &doorbell_rang;
  m_doorbell.on_resume = [](port::cancellable*) noexcept {};  // posted, never finished()
}

bool pinned_multishot::stopped_first(const corio::detail::waiter& w, const std::stop_token& token,
                                     const std::stop_token* inherited) noexcept {
  return w.status == wait_status::cancelled || token.stop_requested() ||
         (inherited != nullptr && inherited->stop_requested());
}

void pinned_multishot::claim_arm_locked(worker* w) {
  m_armed = true;
  m_cancel_sent = false;
  if (m_owner != w) {
    m_owner = w;
    m_owner_serial = port::serial(w);  // w is the calling worker (or the owner itself)
  }
  m_armed_ref = shared_from_this();
  ++m_arms;
  on_claim_locked();
}

void pinned_multishot::arm(worker* w) {
  // Only w's thread touches its ring; the SQE goes out with its next batch.
  io_uring_sqe* sqe = port::get_sqe(w);
  fill_sqe(sqe);
  io_uring_sqe_set_data(sqe, static_cast<port::io_completion*>(this));
}

std::shared_ptr<pinned_multishot> pinned_multishot::ring_doorbell_locked(wake_batch& batch) noexcept {
  if (m_doorbell_pending || m_owner == nullptr) {
    return {};
  }
  m_doorbell_pending = true;
  m_doorbell_ref = shared_from_this();
  // Posted under the lock, so a final CQE handled after us (it takes the lock) sees the
  // doorbell pending, and the owner's drain after that reap finds it.
  if (port::post(m_owner, m_owner_serial, &m_doorbell)) {
    return {};
  }
  // The owner has finished its shutdown drain: nothing is armed there, nor ever will be.
  m_doorbell_pending = false;
  owner_gone_locked(batch);
  return std::move(m_doorbell_ref);
}

bool pinned_multishot::mark_closed_locked(wake_batch& batch, std::shared_ptr<pinned_multishot>& drop) noexcept {
  if (m_closed) {
    return false;
  }
  m_closed = true;
  m_waiters.close_all(batch);
  if (m_armed && !m_cancel_sent) {
    drop = ring_doorbell_locked(batch);  // pending already: its drain sees m_closed
  }
  return true;
}

void pinned_multishot::close() noexcept {
  wake_batch batch;
  std::shared_ptr<pinned_multishot> drop;
  m_lock.lock();
  const bool first = mark_closed_locked(batch, drop);
  if (first) {
    on_close_locked();
  }
  m_lock.unlock();
  drop.reset();
  if (first) {
    after_close();
  }
  batch.wake_all();
}

void pinned_multishot::cqe_arrived(port::io_completion* c, int res, std::uint32_t flags) noexcept {
  auto* self = static_cast<pinned_multishot*>(c);
  std::shared_ptr<pinned_multishot> keep;  // the SQE's reference, dropped last
  std::shared_ptr<pinned_multishot> drop;
  wake_batch batch;
  self->m_lock.lock();
  ++self->m_cqes;
  const bool final = (flags & IORING_CQE_F_MORE) == 0;
  bool ours = false;
  if (final) {
    self->m_armed = false;
    ours = self->m_cancel_sent;
    self->m_cancel_sent = false;
    keep = std::move(self->m_armed_ref);
  }
  self->on_cqe_locked(res, flags, final, ours, batch);
  // Reconcile from the owner's next maintenance pass, never from inside its reap loop.
  if (self->m_armed) {
    if (!self->m_cancel_sent && self->want_cancel_locked()) {
      drop = self->ring_doorbell_locked(batch);
    }
  } else if (self->want_armed_locked() && !port::stopping(self->m_owner)) {  // we run on m_owner
    drop = self->ring_doorbell_locked(batch);
  }
  self->m_lock.unlock();
  self->after_cqe();
  batch.wake_all();
}

void pinned_multishot::doorbell_rang(port::cancellable* c) noexcept {
  pinned_multishot* self = static_cast<doorbell*>(c)->state;
  std::shared_ptr<pinned_multishot> ref;  // the doorbell's reference, dropped last
  bool cancel = false;
  bool rearm = false;
  self->m_lock.lock();
  ref = std::move(self->m_doorbell_ref);
  self->m_doorbell_pending = false;
  worker* owner = self->m_owner;  // this thread
  if (self->m_armed) {
    if (!self->m_cancel_sent && self->want_cancel_locked()) {
      self->m_cancel_sent = true;
      cancel = true;
    }
  } else if (self->want_armed_locked() && !port::stopping(owner)) {
    self->claim_arm_locked(owner);
    rearm = true;
  }
  self->m_lock.unlock();
  if (cancel) {
    // Cancels the armed SQE; its final CQE (-ECANCELED, or a last completion) still
    // arrives and drops m_armed_ref.
    port::cancel(owner, self);
  } else if (rearm) {
    self->arm(owner);
  }
}

}  // namespace corio::ipc::detail
