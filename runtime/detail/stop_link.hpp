// stop_link: the two stop callbacks every corio wait registers — one on the caller's
// explicit std::stop_token, one on the token inherited from the awaiting task (when_any,
// timeout). Either one firing calls Fn. Callbacks are registered only for tokens that
// can be stopped, so an uncancellable wait pays nothing.
// Thread-safety: arm/disarm by the waiting coroutine; Fn may run on any thread (the one
// calling request_stop), possibly inside arm() if the stop was already requested.
// Cost: four pointers in the awaiter (the callbacks, the parked hook and its task) —
// awaiters live in coroutine frames, and g++ gives every co_await its own slot, so two
// inline std::stop_callbacks (128 bytes) per await would swell every frame. A wait on a stoppable token allocates the callbacks from the
// frame allocator (recycled) and registers each (a lock inside libstdc++'s stop state);
// nothing for tokens that cannot be stopped. The abort of the spawned task a wait runs
// in (inherited_stop with a root) costs no allocation and no lock: the link parks its
// inline hook in the task's join state (a CAS and a load; a CAS to leave).
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

  /// arm() for a wait inside a task: the task's abort parks `fn` in the join state (no
  /// allocation, no lock); a busy slot (rare: another wait of the same task) falls back
  /// to the task's stop token.
  void arm(const std::stop_token& token, inherited_stop inherited, Fn fn) noexcept {
    const std::stop_token* on_inherited = inherited.token;
    if (inherited.root != nullptr) {
      m_hook.fn = fn;
      m_hook.fire = [](abort_hook* self) noexcept { static_cast<hook*>(self)->fn(); };
      if (inherited.root->park(&m_hook)) {
        m_root = inherited.root;
      } else {
        on_inherited = inherited.root->abort_token();
      }
    }
    arm(token, on_inherited, fn);
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
    if (on_explicit) {
      m_callbacks->on_explicit.emplace(token, fn);
    }
    if (on_inherited) {
      m_callbacks->on_inherited.emplace(*inherited, fn);
    }
  }

  /// Unregisters both; waits for a callback running on another thread to return.
  void disarm() noexcept {
    if (join_state_base* root = std::exchange(m_root, nullptr)) {
      root->unpark(&m_hook);
    }
    if (callbacks* c = std::exchange(m_callbacks, nullptr)) {
      c->~callbacks();
      frame_deallocate(c, sizeof(callbacks));
    }
  }

 private:
  struct callbacks {
    std::optional<std::stop_callback<Fn>> on_explicit;
    std::optional<std::stop_callback<Fn>> on_inherited;
  };
  struct hook : abort_hook {
    Fn fn{};
  };
  callbacks* m_callbacks = nullptr;
  join_state_base* m_root = nullptr;  // where m_hook is parked
  hook m_hook{};
};

}  // namespace corio::detail
