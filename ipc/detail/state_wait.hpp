// state_wait<State, Node>: the awaiter shell shared by the waits on a pinned multishot
// operation — basic_acceptor::accept() and stream_receiver::receive().
//
// Such a wait queues `Node` (a waiter_list node carrying what the completion grants: a
// descriptor, a buffer id) on a shared `State` whose SQE lives on one worker. The shell
// does what every such wait does the same way: register the stop callbacks before the
// node can be published, hand the node to State::begin(), drop the callbacks first on
// resumption, map the final status to an error, and on destruction take a still-queued
// node off the list (State::abandon waits for a waker still reading it) and give back
// what was granted but never claimed (State::drop_unclaimed; runtime shutdown destroys
// frames without resuming them).
// State provides: begin(node, handle, token, inherited) -> bool (stays suspended),
// cancel(node), abandon(node), drop_unclaimed(node) — all noexcept except begin.
// Node provides: a `no_runtime` flag, on top of corio::detail::waiter.
// Thread-safety: one owner (the awaiting coroutine); the stop callback may run on any
// thread. Cost: one pointer for the stop callbacks (allocated only for stoppable tokens).
#pragma once

#include <coroutine>
#include <memory>
#include <stop_token>
#include <system_error>
#include <utility>

#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/sync/waiter_list.hpp>

namespace corio::ipc::detail {

template <class State, class Node>
class state_wait {
 public:
  state_wait(std::shared_ptr<State> state, std::stop_token token) noexcept
      : m_state(std::move(state)), m_token(std::move(token)) {}
  /// Awaiters are moved before they are awaited (timeout(), when_any): parameters only.
  state_wait(state_wait&& o) noexcept : m_state(std::move(o.m_state)), m_token(std::move(o.m_token)) {}
  state_wait(const state_wait&) = delete;
  state_wait& operator=(const state_wait&) = delete;
  state_wait& operator=(state_wait&&) = delete;
  ~state_wait() {
    m_stop.disarm();  // first: std::stop_callback's destructor waits for a running callback
    if (m_state) {
      m_state->abandon(m_node);
      m_state->drop_unclaimed(m_node);  // granted but never resumed (shutdown)
    }
  }

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    if (!m_state) {
      m_node.status = corio::detail::wait_status::closed;  // a moved-from or closed handle
      return false;
    }
    const std::stop_token* inherited = corio::detail::inherited_token_of(h);
    // Registered before the node can be published; may run at once (already stopped).
    m_stop.arm(m_token, inherited, cancel_fn{this});
    return m_state->begin(m_node, h, m_token, inherited);
  }

 protected:
  /// First thing in await_resume: drops the stop callbacks, then returns the error of a
  /// wait that did not end granted (no runtime, closed, cancelled), or a null code.
  [[nodiscard]] std::error_code finish() noexcept {
    m_stop.disarm();
    if (m_node.no_runtime) {
      return make_error_code(errc::no_runtime);
    }
    switch (m_node.status) {
      case corio::detail::wait_status::granted: return {};
      case corio::detail::wait_status::closed: return make_error_code(errc::closed);
      default: return cancelled_error();
    }
  }

  std::shared_ptr<State> m_state;
  Node m_node;

 private:
  struct cancel_fn {
    state_wait* self;
    void operator()() const noexcept { self->m_state->cancel(self->m_node); }
  };
  std::stop_token m_token;
  port::stop_link<cancel_fn> m_stop;
};

}  // namespace corio::ipc::detail
