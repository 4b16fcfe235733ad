// stop_link: the two stop callbacks every corio wait registers — one on the caller's
// explicit std::stop_token, one on the token inherited from the awaiting task (when_any,
// timeout) — and, inside a task spawned with corio::abortable, the hook its abort fires.
// Either one firing calls Fn. Callbacks are registered only for tokens that can be
// stopped, so an uncancellable wait pays nothing.
// Thread-safety: arm/disarm by the waiting coroutine; Fn may run on any thread (the one
// calling request_stop or join_handle::abort), possibly inside arm() if the stop was
// already requested.
// Cost: one pointer in the awaiter — awaiters live in coroutine frames, and g++ gives
// every co_await its own slot, so two inline std::stop_callbacks (128 bytes) per await
// would swell every frame; an inline abort hook (three pointers) cost plain tasks' waits
// 3-4% of the 1-worker ping-pong. A wait on a stoppable token, or inside an
// abortable task, allocates the callbacks from the frame allocator (recycled: a list pop
// and push). Each stoppable token costs a registration (a lock inside libstdc++'s stop
// state); the abort of an abortable task costs no lock: the link parks its hook in the
// task's join state (a CAS and a load; a CAS to leave). A plain task's wait on tokens
// that cannot be stopped allocates and registers nothing.
#pragma once

#include <cassert>
#include <new>
#include <optional>
#include <stop_token>
#include <utility>

#include <corio/runtime/detail/frame_allocator.hpp>
#include <corio/runtime/detail/join_state.hpp>

namespace corio::detail {

template <class Fn>
class stop_link {
 public:
  stop_link() noexcept = default;
  stop_link(const stop_link&) = delete;
  stop_link& operator=(const stop_link&) = delete;
  ~stop_link() { disarm(); }

  /// True if either token has already been stopped (then do not start the wait).
  static bool stopped(const std::stop_token& token, const std::stop_token* inherited) noexcept {
    return token.stop_requested() || (inherited != nullptr && inherited->stop_requested());
  }
  /// The same for a wait inside a task (its token, or its spawned task's abort).
  static bool stopped(const std::stop_token& token, inherited_stop inherited) noexcept {
    return token.stop_requested() || inherited.stop_requested();
  }

  /// arm() for a wait inside a task: in a task spawned with corio::abortable, its abort
  /// parks `fn` in the join state (no lock); a busy slot (rare: another wait of the same
  /// task) falls back to the task's stop token. A plain task's wait is the arm() below.
  void arm(const std::stop_token& token, inherited_stop inherited, Fn fn) noexcept {
    if (inherited.root == nullptr) [[likely]] {
      arm(token, inherited.token, fn);
    } else {
      arm_abortable(token, inherited, fn);
    }
  }

  /// Registers `fn` on each token that can be stopped. Precondition: not armed.
  /// noexcept: callers arm after publishing their operation (an SQE, a waiter word) and
  /// cannot unwind from there; running out of memory here terminates, like Tokio's abort.
  void arm(const std::stop_token& token, const std::stop_token* inherited, Fn fn) noexcept {
    assert(m_callbacks == nullptr && "stop_link armed twice");
    const bool on_explicit = token.stop_possible();
    const bool on_inherited = inherited != nullptr && inherited->stop_possible();
    if (!on_explicit && !on_inherited) {
      return;
    }
    m_callbacks = ::new (frame_allocate(sizeof(callbacks))) callbacks;
    m_callbacks->register_on(on_explicit ? &token : nullptr, on_inherited ? inherited : nullptr, fn);
  }

  /// Unregisters all; waits for a callback or hook running on another thread to return.
  void disarm() noexcept {
    if (callbacks* c = std::exchange(m_callbacks, nullptr)) {
      if (c->root != nullptr) {
        c->root->unpark(&c->abort);
      }
      c->~callbacks();
      frame_deallocate(c, sizeof(callbacks));
    }
  }

 private:
  struct hook : abort_hook {
    Fn fn{};
  };
  struct callbacks {
    std::optional<std::stop_callback<Fn>> on_explicit;
    std::optional<std::stop_callback<Fn>> on_inherited;
    join_state_base* root = nullptr;  // where `abort` is parked (null: not parked)
    hook abort{};

    /// Registers `fn` on each non-null token (each one can be stopped).
    void register_on(const std::stop_token* explicit_token, const std::stop_token* inherited, Fn fn) noexcept {
      if (explicit_token != nullptr) {
        on_explicit.emplace(*explicit_token, fn);
      }
      if (inherited != nullptr) {
        on_inherited.emplace(*inherited, fn);
      }
    }
  };

  /// The abortable half of arm(): parks the hook in the task's join state, then registers
  /// on the tokens that can be stopped.
  void arm_abortable(const std::stop_token& token, inherited_stop inherited, Fn fn) noexcept {
    assert(m_callbacks == nullptr && "stop_link armed twice");
    callbacks* c = ::new (frame_allocate(sizeof(callbacks))) callbacks;
    m_callbacks = c;
    c->abort.fn = fn;
    c->abort.fire = [](abort_hook* self) noexcept { static_cast<hook*>(self)->fn(); };
    const std::stop_token* on_inherited = inherited.token;
    if (inherited.root->park(&c->abort)) {
      c->root = inherited.root;
    } else {
      on_inherited = inherited.root->abort_token();
    }
    c->register_on(token.stop_possible() ? &token : nullptr,
                   on_inherited != nullptr && on_inherited->stop_possible() ? on_inherited : nullptr, fn);
  }

  callbacks* m_callbacks = nullptr;
};

}  // namespace corio::detail
