// The accept policy of an acceptor on the pinned-multishot engine (acceptor_state; design
// note in ipc/detail/acceptor_state.hpp), and the listener's link that closes its
// acceptors.
#include <corio/ipc/acceptor.hpp>

#include <liburing.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <utility>

#include <corio/runtime/port.hpp>

namespace corio::ipc::detail {

namespace {

using namespace multishot_names;

// relaxed: a test switch read when an acceptor is created; the test sets it before, on
// the same thread or ordered by creating the runtime/acceptor after it.
std::atomic<bool> g_simulate_no_multishot{false};

}  // namespace

void simulate_no_multishot_accept(bool on) noexcept { g_simulate_no_multishot.store(on, std::memory_order_relaxed); }

acceptor_state::acceptor_state(int listen_fd, const accept_options& options)
    : m_listen_fd(listen_fd),
      m_capacity(options.queue_capacity == 0 ? 1 : options.queue_capacity),
      m_low_water(m_capacity / 2),
      m_multishot(options.multishot && port::features().multishot_accept &&
                  !g_simulate_no_multishot.load(std::memory_order_relaxed)) {}

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

bool acceptor_state::want_cancel_locked() const noexcept {
  return m_closed || (m_multishot && m_queue.size() >= m_capacity);
}

void acceptor_state::on_claim_locked() noexcept {
  m_hold = false;
  m_cqes_this_arm = 0;
}

void acceptor_state::fill_sqe(io_uring_sqe* sqe) noexcept {
  // m_multishot changes only in a final CQE's handler, before the claim of this arm
  // (ordered by the lock), so it is stable while we own the arm.
  if (m_multishot) {
    io_uring_prep_multishot_accept(sqe, m_listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  } else {
    io_uring_prep_accept(sqe, m_listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  }
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
  if (m_multishot && m_queue.size() == m_capacity) {
    ++m_stats.stops;  // the engine has the owner cancel the multishot now
  }
}

bool acceptor_state::begin(accept_waiter& w, std::coroutine_handle<> h, const std::stop_token& token,
                           const std::stop_token* inherited) {
  worker* cw = port::current_worker();
  prepare_waiter(w, h);
  bool queued = false;
  bool arm_here = false;
  m_lock.lock();
  if (stopped_first(w, token, inherited)) {
    w.status = wait_status::cancelled;
  } else if (!m_queue.empty()) {
    w.fd = m_queue.front();
    m_queue.pop_front();
    w.status = wait_status::granted;
    // Multishot stopped (queue full) or ended (error, shutdown): an accept() call that
    // brings the queue to the low-water mark re-arms it here.
    arm_here = m_multishot && !m_armed && !m_closed && !m_doorbell_pending && cw != nullptr &&
               m_queue.size() <= m_low_water;
  } else if (m_closed) {
    w.status = wait_status::closed;
  } else if (cw == nullptr) {
    w.no_runtime = true;
    w.status = wait_status::cancelled;
  } else {
    m_waiters.push_back(&w);  // status = queued; from here on other threads own `w`
    queued = true;
    m_hold = false;           // this is "the next accept() call" after an error
    // Armed already, or a pending doorbell re-arms it on its owner (m_hold is off).
    arm_here = !m_armed && !m_doorbell_pending;
  }
  if (arm_here) {
    claim_arm_locked(cw);
  }
  m_lock.unlock();
  if (arm_here) {
    arm(cw);  // the armed SQE holds a reference to us; `w` may already be gone
  }
  return queued;
}

void acceptor_state::drop_unclaimed(accept_waiter& w) noexcept {
  if (w.fd >= 0) {
    ::close(std::exchange(w.fd, -1));
  }
}

void acceptor_state::on_close_locked() noexcept { m_closing.swap(m_queue); }

void acceptor_state::after_close() noexcept {
  for (int fd : m_closing) {
    ::close(fd);
  }
  m_closing.clear();
}

accept_stats acceptor_state::stats() const noexcept {
  return stats_with([this] {
    accept_stats s = m_stats;
    s.queued = m_queue.size();
    s.queued_peak = m_queued_peak;
    s.multishot = m_multishot;
    return s;
  });
}

void acceptor_state::on_cqe_locked(int res, std::uint32_t /*flags*/, bool final, bool ours,
                                   wake_batch& batch) noexcept {
  ++m_cqes_this_arm;
  if (res >= 0) {
    ++m_stats.accepted;
    if (m_closed) {
      m_close_after_cqe = res;  // arrived after close(): never leaked
    } else if (waiter* x = m_waiters.pop_front()) {
      grant_locked(static_cast<accept_waiter*>(x), res, 0, batch);
    } else {
      push_queue_locked(res);
    }
  } else if (res == -ECANCELED && final) {
    if (!ours) {
      // Not our cancel: the runtime's shutdown drain. Re-arm only from an accept().
      m_hold = true;
    }
  } else if (res == -EINVAL && final && m_multishot && m_cqes_this_arm == 1) {
    // The kernel rejected IORING_ACCEPT_MULTISHOT: one-shot from now on, re-armed by the
    // engine if an accept() waits.
    m_multishot = false;
  } else {
    ++m_stats.errors;
    // EMFILE, ENFILE, ENOMEM, ...: every waiting accept() gets it and backs off; the
    // connection stays in the backlog. Nothing re-arms before the next accept() call.
    while (waiter* x = m_waiters.pop_front()) {
      grant_locked(static_cast<accept_waiter*>(x), -1, res, batch);
    }
    if (final) {
      m_hold = true;
    }
  }
}

void acceptor_state::after_cqe() noexcept {
  if (m_close_after_cqe >= 0) {
    ::close(std::exchange(m_close_after_cqe, -1));
  }
}

void acceptor_state::owner_gone_locked(wake_batch& /*batch*/) noexcept {
  // The owner's runtime has shut down: re-arm only from an accept() on a live worker.
  m_hold = true;
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
