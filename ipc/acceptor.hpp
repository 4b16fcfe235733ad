// corio::ipc::basic_acceptor<Stream>: a stream of accepted connections backed by one
// multishot accept (tcp_acceptor, unix_acceptor; made by listener.incoming()).
//
// Concept: `auto acc = listener.incoming(options);` then `co_await acc.accept(token)`
// yields the next result<Stream>, from any task on any worker; several tasks may await
// accept on one acceptor (each connection goes to exactly one). Behind it, one
// IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT is armed on the ring of the worker whose
// accept() first needed it; its completions are queued and handed to the waiting tasks
// through the scheduler (never resumed inline on the completion path). Where the kernel
// lacks multishot accept (before Linux 5.19), or with accept_options::multishot = false,
// the same acceptor arms one plain accept at a time instead: same API, same semantics.
// Design, protocol and lifetime: ipc/detail/acceptor_state.hpp.
// The multishot lives on one worker: its completions are processed when that worker
// polls its ring (a worker busy in a long task delays them; waiting tasks elsewhere are
// woken through the scheduler). One-shot listener.accept() has no such pinning.
//
// Bounded: accepted descriptors nobody asked for wait in a queue of
// accept_options::queue_capacity (64); when it fills, the multishot is cancelled and the
// kernel keeps further connections in the listen backlog (where the backlog limit and
// SYN handling apply) until accept() calls drain the queue to half; then it is re-armed.
// The kernel may complete one more batch before the cancel lands (those are queued too).
//
// Out of descriptors: the kernel ends the multishot with EMFILE/ENFILE/ENOMEM; every
// accept() waiting at that moment returns the error (the connection stays in the
// backlog), and the multishot is re-armed only by the next accept() call. So it never
// spins: back off (e.g. sleep_for(10ms)) and accept again, as with listener.accept().
//
// Cancellation: accept(token) honours its std::stop_token and the inherited one and
// returns std::errc::operation_canceled; no connection is lost — one accepted for a
// cancelled accept() stays queued for the next. close() (and the destructor, and the
// listener's destructor) ends the acceptor: waiting accept()s return errc::closed, queued
// descriptors are closed, the multishot is cancelled through its worker, and descriptors
// the kernel still completes afterwards are closed. Runtime shutdown cancels the
// multishot like every other operation.
// Thread-safety: accept() and stats() from any task or thread; one owner destroys it.
// The listener must outlive its acceptors (its destructor closes them first).
// Cost: accept() that finds a queued connection is one short lock and no syscall; one
// that waits costs a lock and a wake; the kernel posts one CQE per connection and no SQE
// per connection. An acceptor is one allocation.
// Measured (bench/ipc/accept_rate, loopback, 2-vCPU VM, client in the same process):
// ~30k connections/s either way, multishot/one-shot ratio 0.99-1.03 — the TCP handshake
// and the client dominate, so multishot is no throughput win here; it saves the SQE per
// connection and lets many tasks share one accept without one SQE each.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <coroutine>
#include <memory>
#include <stop_token>
#include <utility>

#include <corio/ipc/detail/acceptor_state.hpp>
#include <corio/ipc/detail/state_wait.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// A multishot accept on a listener (tcp_acceptor, unix_acceptor): connections queued by
/// one kernel request, taken by accept() from tasks on any worker; see the header.
template <class Stream>
class basic_acceptor {
 public:
  /// The awaitable of accept(): yields result<Stream>.
  class [[nodiscard]] accept_awaiter : public detail::state_wait<detail::acceptor_state, detail::accept_waiter> {
   public:
    using state_wait::state_wait;
    [[nodiscard]] result<Stream> await_resume() {
      if (std::error_code ec = finish()) {
        return unexpected(ec);
      }
      if (m_node.error != 0) {
        return unexpected(os_error(m_node.error));
      }
      return Stream(std::exchange(m_node.fd, -1));
    }
  };

  basic_acceptor() noexcept = default;
  /// Takes over `other`'s accept request; `other` is closed afterwards.
  basic_acceptor(basic_acceptor&&) noexcept = default;
  /// Closes this acceptor (waiting accept()s get errc::closed), then takes over `other`'s.
  basic_acceptor& operator=(basic_acceptor&& other) noexcept {
    if (this != &other) {
      close();
      m_state = std::move(other.m_state);
    }
    return *this;
  }
  basic_acceptor(const basic_acceptor&) = delete;
  basic_acceptor& operator=(const basic_acceptor&) = delete;
  ~basic_acceptor() { close(); }

  /// The next accepted connection. See the header comment (errors, cancellation).
  [[nodiscard]] accept_awaiter accept(std::stop_token token = {}) const { return {m_state, std::move(token)}; }

  /// Ends the acceptor (idempotent): waiting accept()s return errc::closed.
  void close() noexcept {
    if (m_state) {
      m_state->close();
    }
  }

  /// False for a default-constructed or moved-from acceptor (close() leaves it open: its
  /// accept()s then fail with errc::closed).
  [[nodiscard]] bool is_open() const noexcept { return m_state != nullptr; }
  /// Counters (arms, CQEs, accepted, errors, queue), and whether multishot is in use.
  [[nodiscard]] accept_stats stats() const { return m_state ? m_state->stats() : accept_stats{}; }

  /// Used by the listeners' incoming().
  static basic_acceptor make(int listen_fd, const accept_options& options, detail::acceptor_link& link) {
    basic_acceptor a;
    a.m_state = std::make_shared<detail::acceptor_state>(listen_fd, options);
    link.add(a.m_state);
    return a;
  }

 private:
  std::shared_ptr<detail::acceptor_state> m_state;
};

}  // namespace corio::ipc
