#include <corio/ipc/acceptor.hpp>

#include <liburing.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>

#include <corio/runtime/io_op.hpp>
#include <corio/runtime/port.hpp>

namespace corio::ipc::detail {

namespace {

using port::cancellable;
using corio::detail::wait_status;
using corio::detail::wake_batch;
using corio::detail::waiter;
using corio::detail::worker;

// relaxed: a test switch read when an acceptor is created; the test sets it before, on
// the same thread or ordered by creating the runtime/acceptor after it.
std::atomic<bool> g_simulate_no_multishot{false};

/// IORING_ACCEPT_MULTISHOT came with Linux 5.19. The opcode probe cannot tell (it names
/// IORING_OP_ACCEPT, 5.5, not its flags), so the release decides; a kernel that claims a
/// newer release but rejects the flag answers -EINVAL, which acceptor_state also catches.
bool kernel_has_multishot_accept() noexcept {
  static const bool has = port::features().multishot_accept;
  return has;
}

}  // namespace

void simulate_no_multishot_accept(bool on) noexcept { g_simulate_no_multishot.store(on, std::memory_order_relaxed); }

acceptor_state::acceptor_state(int listen_fd, const accept_options& options)
    : m_listen_fd(listen_fd),
      m_capacity(options.queue_capacity == 0 ? 1 : options.queue_capacity),
      m_low_water(m_capacity / 2),
      m_multishot(options.multishot && kernel_has_multishot_accept() &&
                  !g_simulate_no_multishot.load(std::memory_order_relaxed)) {
  on_cqe = &cqe_arrived;
  m_doorbell.state = this;
  m_doorbell.on_cancel_drained = &doorbell_rang;
  m_doorbell.on_resume = &doorbell_noop;  // never finished(): only drained
}

acceptor_state::~acceptor_state() {
  // Nobody else references us: no lock needed. Descriptors nobody took are closed.
  for (int fd : m_queue) {
    ::close(fd);
  }
}

bool acceptor_state::want_armed_locked() const noexcept {
  if (m_closed) {
    return false;
  }
  if (!m_waiters.empty()) {
    return true;
  }
  return m_multishot && !m_hold && m_queue.size() <= m_low_water;
}

void acceptor_state::claim_arm_locked(worker* w) {
  m_armed = true;
  m_cancel_sent = false;
  m_hold = false;
  m_cqes_this_arm = 0;
  m_owner = w;
  m_armed_ref = shared_from_this();
  ++m_stats.arms;
}

void acceptor_state::fill_sqe(worker* w, bool multishot) {
  // The only thread that may touch w's ring; the SQE goes out with its next batch.
  // port::get_sqe counts the operation in flight once, multishot or not (worker::reap).
  io_uring_sqe* sqe = port::get_sqe(w);
  if (multishot) {
    io_uring_prep_multishot_accept(sqe, m_listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  } else {
    io_uring_prep_accept(sqe, m_listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  }
  io_uring_sqe_set_data(sqe, static_cast<io_completion*>(this));
}

void acceptor_state::ring_doorbell_locked() noexcept {
  if (m_doorbell_pending || m_owner == nullptr) {
    return;
  }
  m_doorbell_pending = true;
  m_doorbell_ref = shared_from_this();
  m_doorbell.owner = m_owner;
  // Pushed under the lock, so a final CQE handled after us (it takes the lock) sees the
  // push too, and the owner's drain after that reap finds it (see the design note).
  m_doorbell.request_cancel();
}

void acceptor_state::grant_locked(accept_waiter* w, int fd, int error, wake_batch& batch) noexcept {
  w->fd = fd;
  w->error = error;
  w->status = wait_status::granted;
  batch.push(w);
}

void acceptor_state::push_queue_locked(int fd) {
  m_queue.push_back(fd);
  if (m_queue.size() > m_queued_peak) {
    m_queued_peak = m_queue.size();
  }
}

bool acceptor_state::begin(accept_waiter& w, std::coroutine_handle<> h, const std::stop_token& token,
                           const std::stop_token* inherited) {
  worker* cw = port::current_worker();
  w.handle = h;
  w.home = port::current_runtime();
  w.list = &m_waiters;
  bool queued = false;
  bool arm = false;
  bool arm_multishot = false;
  m_lock.lock();
  if (w.status == wait_status::cancelled || token.stop_requested() ||
      (inherited != nullptr && inherited->stop_requested())) {
    // A stop that came first wins, as for io_op: nothing is taken from the queue.
    w.status = wait_status::cancelled;
  } else if (!m_queue.empty()) {
    w.fd = m_queue.front();
    m_queue.pop_front();
    w.status = wait_status::granted;
    // Multishot stopped (queue full) or ended (error, shutdown): an accept() call that
    // brings the queue to the low-water mark re-arms it here.
    if (m_multishot && !m_armed && !m_closed && !m_doorbell_pending && cw != nullptr &&
        m_queue.size() <= m_low_water) {
      claim_arm_locked(cw);
      arm = true;
      arm_multishot = true;
    }
  } else if (m_closed) {
    w.status = wait_status::closed;
  } else if (cw == nullptr) {
    w.no_runtime = true;
    w.status = wait_status::cancelled;
  } else {
    m_waiters.push_back(&w);  // status = queued; from here on other threads own `w`
    queued = true;
    m_hold = false;           // this is "the next accept() call" after an error
    if (!m_armed && !m_doorbell_pending) {
      claim_arm_locked(cw);
      arm = true;
      arm_multishot = m_multishot;
    }
    // else: armed already, or a pending doorbell re-arms it on its owner (m_hold is off).
  }
  m_lock.unlock();
  if (arm) {
    // We own the arm (m_armed_ref keeps the state alive); `w` may already be gone.
    fill_sqe(cw, arm_multishot);
  }
  return queued;
}

// An armed SQE stays armed: what it accepts is queued for the next accept(). An idle
// waiter marked cancelled is seen by begin() before it queues.
void acceptor_state::cancel(accept_waiter& w) noexcept { m_waiters.cancel(w); }

void acceptor_state::abandon(accept_waiter& w) noexcept { m_waiters.abandon(w); }

void acceptor_state::drop_unclaimed(accept_waiter& w) noexcept {
  if (w.fd >= 0) {
    ::close(std::exchange(w.fd, -1));
  }
}

void acceptor_state::close() noexcept {
  wake_batch batch;
  std::deque<int> fds;
  m_lock.lock();
  if (m_closed) {
    m_lock.unlock();
    return;
  }
  m_closed = true;
  m_waiters.close_all(batch);
  fds.swap(m_queue);
  if (m_armed && !m_cancel_sent) {
    ring_doorbell_locked();  // pending already: its drain sees m_closed and cancels
  }
  m_lock.unlock();
  for (int fd : fds) {
    ::close(fd);
  }
  batch.wake_all();
}

accept_stats acceptor_state::stats() const noexcept {
  m_lock.lock();
  accept_stats s = m_stats;
  s.queued = m_queue.size();
  s.queued_peak = m_queued_peak;
  s.multishot = m_multishot;
  m_lock.unlock();
  return s;
}

void acceptor_state::cqe_arrived(io_completion* c, int res, std::uint32_t flags) noexcept {
  auto* self = static_cast<acceptor_state*>(c);
  std::shared_ptr<acceptor_state> keep;  // the SQE's reference, dropped last
  wake_batch batch;
  int to_close = -1;
  self->m_lock.lock();
  ++self->m_stats.cqes;
  ++self->m_cqes_this_arm;
  const bool more = (flags & IORING_CQE_F_MORE) != 0;
  bool ours = false;
  if (!more) {
    self->m_armed = false;
    ours = self->m_cancel_sent;
    self->m_cancel_sent = false;
    keep = std::move(self->m_armed_ref);
  }
  if (res >= 0) {
    ++self->m_stats.accepted;
    if (self->m_closed) {
      to_close = res;  // arrived after close(): never leaked
    } else if (waiter* x = self->m_waiters.pop_front()) {
      self->grant_locked(static_cast<accept_waiter*>(x), res, 0, batch);
    } else {
      self->push_queue_locked(res);
    }
  } else if (res == -ECANCELED && !more) {
    if (!ours) {
      // Not our cancel: the runtime's shutdown drain. Re-arm only from an accept().
      self->m_hold = true;
    }
  } else if (res == -EINVAL && !more && self->m_multishot && self->m_cqes_this_arm == 1) {
    // The kernel rejected IORING_ACCEPT_MULTISHOT: one-shot from now on, retried below.
    self->m_multishot = false;
  } else {
    ++self->m_stats.errors;
    // EMFILE, ENFILE, ENOMEM, ...: every waiting accept() gets it and backs off; the
    // connection stays in the backlog. Nothing re-arms before the next accept() call.
    while (waiter* x = self->m_waiters.pop_front()) {
      self->grant_locked(static_cast<accept_waiter*>(x), -1, res, batch);
    }
    if (!more) {
      self->m_hold = true;
    }
  }
  // Reconcile from the owner's next maintenance pass, never from inside its reap loop.
  if (self->m_armed) {
    if (self->m_multishot && !self->m_cancel_sent && !self->m_closed && self->m_queue.size() >= self->m_capacity) {
      ++self->m_stats.stops;
      self->ring_doorbell_locked();
    }
  } else if (self->want_armed_locked()) {
    self->ring_doorbell_locked();
  }
  self->m_lock.unlock();
  batch.wake_all();
  if (to_close >= 0) {
    ::close(to_close);
  }
}

void acceptor_state::doorbell_rang(cancellable* c) noexcept {
  acceptor_state* self = static_cast<doorbell*>(c)->state;
  std::shared_ptr<acceptor_state> ref;  // the doorbell's reference, dropped last
  action act = action::none;
  bool arm_multishot = false;
  worker* owner = nullptr;
  self->m_lock.lock();
  ref = std::move(self->m_doorbell_ref);
  self->m_doorbell_pending = false;
  // relaxed: the next ring_doorbell_locked() takes this lock after us, which orders it.
  self->m_doorbell.cancel_state.store(cancellable::idle, std::memory_order_relaxed);
  owner = self->m_owner;  // this thread
  if (self->m_armed) {
    if (!self->m_cancel_sent &&
        (self->m_closed || (self->m_multishot && self->m_queue.size() >= self->m_capacity))) {
      self->m_cancel_sent = true;
      act = action::cancel;
    }
  } else if (self->want_armed_locked() && !port::stopping(owner)) {
    self->claim_arm_locked(owner);
    arm_multishot = self->m_multishot;
    act = action::arm;
  }
  self->m_lock.unlock();
  if (act == action::cancel) {
    // Cancels the multishot (or the one-shot) SQE; its final CQE (-ECANCELED, or a last
    // descriptor) still arrives and drops m_armed_ref.
    port::cancel(owner, self);
  } else if (act == action::arm) {
    self->fill_sqe(owner, arm_multishot);
  }
}

// ---------------------------------------------------------------------------------------

void acceptor_link::add(const std::shared_ptr<acceptor_state>& state) {
  std::erase_if(m_states, [](const std::weak_ptr<acceptor_state>& w) { return w.expired(); });
  m_states.push_back(state);
}

void acceptor_link::close_all() noexcept {
  for (auto& w : m_states) {
    if (auto s = w.lock()) {
      s->close();
    }
  }
  m_states.clear();
}

}  // namespace corio::ipc::detail
