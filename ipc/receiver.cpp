// The receive policy of a stream_receiver on the pinned-multishot engine (receiver_state;
// design note in ipc/detail/receiver_state.hpp): its buffers, their ring and queue, and
// stream_socket::receiver().
#include <corio/ipc/receiver.hpp>
#include <corio/ipc/socket.hpp>

#include <liburing.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <new>
#include <utility>

#include <corio/runtime/port.hpp>

namespace corio::ipc {

namespace detail {

namespace {

using namespace multishot_names;

// relaxed: a test switch read when a receiver is created (see acceptor.cpp's twin).
std::atomic<bool> g_simulate_no_pbuf{false};
// Buffer group ids; -EEXIST on registration moves on to the next one.
std::atomic<std::uint16_t> g_next_bgid{0};
// relaxed: a counter for tests, read after the threads involved are done.
std::atomic<long> g_live_groups{0};

/// Unregisters a buffer group on its owner and unmaps its memory (the state is gone).
struct release_job : port::cancellable {
  void* mem = nullptr;
  std::size_t len = 0;
  std::uint16_t bgid = 0;
  worker* ring_owner = nullptr;
  static void run(port::cancellable* c) noexcept {
    auto* j = static_cast<release_job*>(c);
    port::unregister_buf_ring(j->ring_owner, j->bgid);
    ::munmap(j->mem, j->len);
    g_live_groups.fetch_sub(1, std::memory_order_relaxed);
    delete j;
  }
  static void noop(port::cancellable*) noexcept {}
};

}  // namespace

void simulate_no_provided_buffers(bool on) noexcept { g_simulate_no_pbuf.store(on, std::memory_order_relaxed); }

long live_buffer_groups() noexcept { return g_live_groups.load(std::memory_order_relaxed); }

receiver_state::receiver_state(int fd, const receive_options& options)
    : m_fd(fd),
      m_size(options.buffer_size == 0 ? 1 : options.buffer_size),
      m_count(static_cast<unsigned>(options.buffer_count == 0 ? 1 : (options.buffer_count > 32768 ? 32768 : options.buffer_count))),
      m_multishot(options.provided_buffers && port::features().multishot_recv &&
                  !g_simulate_no_pbuf.load(std::memory_order_relaxed)) {
  m_ring_entries = std::bit_ceil(m_count);
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t ring_bytes = (m_ring_entries * sizeof(io_uring_buf) + page - 1) / page * page;
  m_map_len = ring_bytes + m_size * m_count;
  void* mem = ::mmap(nullptr, m_map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    return;
  }
  m_mem = mem;
  m_br = static_cast<io_uring_buf_ring*>(mem);
  m_buffers = static_cast<std::byte*>(mem) + ring_bytes;
  m_q.resize(m_count);
  m_free.reserve(m_count);
  for (unsigned i = m_count; i-- > 0;) {
    m_free.push_back(static_cast<std::uint16_t>(i));
  }
  m_stats.provided_buffers = m_multishot;
}

receiver_state::~receiver_state() {
  // Nobody references us: no SQE is armed (its reference is dropped by the final CQE).
  if (m_mem == nullptr) {
    return;
  }
  if (m_registered) {
    // The serial, not just the address: a later runtime's worker may live at m_owner.
    worker* cw = port::current_worker();
    if (cw != m_owner || port::serial(cw) != m_owner_serial) {
      if (auto* job = new (std::nothrow) release_job) {
        job->mem = m_mem;
        job->len = m_map_len;
        job->bgid = m_bgid;
        job->ring_owner = m_owner;
        job->on_cancel_drained = &release_job::run;
        job->on_resume = &release_job::noop;
        if (port::post(m_owner, m_owner_serial, job)) {
          return;  // the owner unregisters and unmaps
        }
        delete job;
      }
      // The owner's shutdown drain is over (its ring is closed, or closing with nothing
      // armed on the group: the kernel will not touch the memory again), or no memory
      // for the job (then the group stays registered until the ring closes; its pages
      // stay pinned by the kernel, never reused under it).
    } else {
      port::unregister_buf_ring(m_owner, m_bgid);
    }
    g_live_groups.fetch_sub(1, std::memory_order_relaxed);
  }
  ::munmap(m_mem, m_map_len);
}

bool receiver_state::can_arm_locked() const noexcept {
  return m_multishot ? m_in_ring != 0 : !m_free.empty();
}

bool receiver_state::want_armed_locked() const noexcept {
  return m_started && !m_armed && !m_closed && !m_eof && m_error == 0 && can_arm_locked();
}

void receiver_state::on_claim_locked() noexcept {
  if (!m_multishot) {
    m_oneshot_bid = m_free.back();
    m_free.pop_back();
  }
}

void receiver_state::owner_gone_locked(wake_batch& batch) noexcept {
  // Nothing can be armed any more. Terminal, as a shutdown that cancelled an armed
  // receive would have made it; the waits end with it (none will be granted data).
  if (m_error == 0 && !m_eof) {
    m_error = -ECANCELED;
  }
  end_waiters_locked(m_error, batch);
}

void receiver_state::recycle_locked(int bid) noexcept {
  if (!m_multishot) {
    m_free.push_back(static_cast<std::uint16_t>(bid));
    return;
  }
  if (!m_registered || m_closed || m_eof || m_error != 0) {
    return;  // the kernel will not pick buffers any more
  }
  // The single producer side of the ring (see the design note): serialised by m_lock.
  io_uring_buf_ring_add(m_br, const_cast<std::byte*>(buffer(bid)), static_cast<unsigned>(m_size),
                        static_cast<unsigned short>(bid), io_uring_buf_ring_mask(m_ring_entries), 0);
  io_uring_buf_ring_advance(m_br, 1);
  ++m_in_ring;
}

void receiver_state::deliver_locked(int bid, std::uint32_t len, wake_batch& batch) noexcept {
  m_stats.bytes += len;
  if (m_closed) {
    recycle_locked(bid);
    return;
  }
  if (waiter* x = m_waiters.pop_front()) {
    auto* w = static_cast<recv_waiter*>(x);
    w->bid = bid;
    w->len = len;
    w->status = wait_status::granted;
    ++m_held;
    batch.push(w);
    return;
  }
  // At most m_count buffers exist, each queued at most once: the ring cannot overflow.
  m_q[(m_q_head + m_q_size) % m_count] = entry{static_cast<std::uint16_t>(bid), len};
  ++m_q_size;
  if (m_q_size > m_stats.queued_peak) {
    m_stats.queued_peak = m_q_size;
  }
}

void receiver_state::end_waiters_locked(int error, wake_batch& batch) noexcept {
  // Only reached with an empty queue (waiters exist only while it is empty).
  while (waiter* x = m_waiters.pop_front()) {
    auto* w = static_cast<recv_waiter*>(x);
    w->error = error;
    w->eof = error == 0;
    w->status = wait_status::granted;
    batch.push(w);
  }
}

bool receiver_state::begin(recv_waiter& w, std::coroutine_handle<> h, const std::stop_token& token,
                           const std::stop_token* inherited) {
  worker* cw = port::current_worker();
  prepare_waiter(w, h);
  bool queued = false;
  bool first = false;
  std::shared_ptr<pinned_multishot> drop;
  wake_batch batch;
  m_lock.lock();
  if (stopped_first(w, token, inherited)) {
    w.status = wait_status::cancelled;  // a stop that came first: nothing is taken
  } else if (m_q_size != 0) {
    const entry e = m_q[m_q_head];
    m_q_head = (m_q_head + 1) % m_count;
    --m_q_size;
    w.bid = e.bid;
    w.len = e.len;
    w.status = wait_status::granted;
    ++m_held;
  } else if (m_closed) {
    w.status = wait_status::closed;
  } else if (m_eof || m_error != 0) {
    w.eof = m_eof;
    w.error = m_error;
    w.status = wait_status::granted;
  } else if (cw == nullptr) {
    w.no_runtime = true;
    w.status = wait_status::cancelled;
  } else {
    if (want_armed_locked()) {
      // Stopped and a buffer is free: give_back normally rang the owner already (then the
      // doorbell is pending and this is a no-op); the owner re-arms, never this thread.
      // If the owner is gone this makes the state terminal (m_error).
      drop = ring_doorbell_locked(batch);
    }
    if (m_error != 0) {
      w.error = m_error;
      w.status = wait_status::granted;
    } else {
      m_waiters.push_back(&w);  // from here on other threads own `w`
      queued = true;
      if (!m_started) {
        m_started = true;
        claim_arm_locked(cw);  // pins the owner: the buffer group goes on its ring
        first = true;
      }
    }
  }
  m_lock.unlock();
  drop.reset();
  batch.wake_all();
  if (first) {
    register_buffers(cw);
    arm(cw);  // `w` may already be gone; the armed SQE's reference keeps us alive
  }
  return queued;
}

void receiver_state::register_buffers(worker* w) {
  if (!m_multishot) {
    return;
  }
  // Nobody else touches the ring before it is registered: no buffer is out yet.
  io_uring_buf_ring_init(m_br);
  const int mask = io_uring_buf_ring_mask(m_ring_entries);
  for (unsigned i = 0; i < m_count; ++i) {
    io_uring_buf_ring_add(m_br, m_buffers + static_cast<std::size_t>(i) * m_size, static_cast<unsigned>(m_size),
                          static_cast<unsigned short>(i), mask, static_cast<int>(i));
  }
  io_uring_buf_ring_advance(m_br, static_cast<int>(m_count));
  int rc = -EEXIST;
  std::uint16_t bgid = 0;
  for (int tries = 0; tries < 64 && rc == -EEXIST; ++tries) {
    // relaxed: any distinct-enough number; collisions are caught by -EEXIST.
    bgid = g_next_bgid.fetch_add(1, std::memory_order_relaxed);
    rc = port::register_buf_ring(w, m_br, m_ring_entries, bgid);
  }
  m_lock.lock();
  if (rc == 0) {
    g_live_groups.fetch_add(1, std::memory_order_relaxed);
    m_registered = true;
    m_bgid = bgid;
    m_in_ring = m_count;
    m_free.clear();
  } else {
    // No buffer rings here (or no id left): the fallback, from this first arm on.
    m_multishot = false;
    m_stats.provided_buffers = false;
    m_oneshot_bid = m_free.back();
    m_free.pop_back();
  }
  m_lock.unlock();
}

void receiver_state::fill_sqe(io_uring_sqe* sqe) noexcept {
  if (m_multishot) {
    io_uring_prep_recv_multishot(sqe, m_fd, nullptr, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = m_bgid;
  } else {
    // m_oneshot_bid is ours until the CQE (set by the claim, read on this thread).
    io_uring_prep_recv(sqe, m_fd, const_cast<std::byte*>(buffer(m_oneshot_bid)), m_size, 0);
  }
}

void receiver_state::drop_unclaimed(recv_waiter& w) noexcept {
  if (w.bid >= 0) {
    give_back(std::exchange(w.bid, -1));
  }
}

void receiver_state::on_close_locked() noexcept {
  while (m_q_size != 0) {
    recycle_locked(m_q[m_q_head].bid);
    m_q_head = (m_q_head + 1) % m_count;
    --m_q_size;
  }
}

void receiver_state::give_back(int bid) noexcept {
  std::shared_ptr<pinned_multishot> drop;
  wake_batch batch;
  m_lock.lock();
  --m_held;
  recycle_locked(bid);
  if (want_armed_locked()) {
    drop = ring_doorbell_locked(batch);  // the owner re-arms (or it is gone: terminal)
  }
  m_lock.unlock();
  drop.reset();
  batch.wake_all();
}

receive_stats receiver_state::stats() const noexcept {
  return stats_with([this] {
    receive_stats s = m_stats;
    s.queued = m_q_size;
    s.held = m_held;
    return s;
  });
}

void receiver_state::on_cqe_locked(int res, std::uint32_t flags, bool /*final*/, bool ours,
                                   wake_batch& batch) noexcept {
  int bid = -1;
  if (m_multishot) {
    if ((flags & IORING_CQE_F_BUFFER) != 0) {
      bid = static_cast<int>(flags >> IORING_CQE_BUFFER_SHIFT);
      --m_in_ring;
    }
  } else {
    bid = std::exchange(m_oneshot_bid, -1);
  }
  if (res > 0 && bid >= 0) {
    deliver_locked(bid, static_cast<std::uint32_t>(res), batch);
    return;
  }
  if (bid >= 0) {
    recycle_locked(bid);
  }
  if (res == 0) {
    m_eof = true;
    end_waiters_locked(0, batch);
  } else if (res == -ENOBUFS) {
    // Every buffer is queued or held: stopped until one comes back (see the note).
    ++m_stats.enobufs;
  } else if (res == -ECANCELED && ours) {
    // close(): nothing more to do.
  } else if (res < 0 && !m_closed) {
    // The error, or the runtime's shutdown (-ECANCELED we did not ask for).
    m_error = res;
    end_waiters_locked(res, batch);
  }
}

}  // namespace detail

result<stream_receiver> stream_socket::receiver() const { return stream_receiver::make(fd(), receive_options{}); }

result<stream_receiver> stream_socket::receiver(const receive_options& options) const {
  return stream_receiver::make(fd(), options);
}

}  // namespace corio::ipc
