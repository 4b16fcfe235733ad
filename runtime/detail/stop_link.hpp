// stop_link: the two stop callbacks every corio wait registers — one on the caller's
// explicit std::stop_token, one on the token inherited from the awaiting task (when_any,
// timeout). Either one firing calls Fn. Callbacks are registered only for tokens that
// can be stopped, so an uncancellable wait pays nothing.
// Thread-safety: arm/disarm by the waiting coroutine; Fn may run on any thread (the one
// calling request_stop), possibly inside arm() if the stop was already requested.
// Cost: nothing for tokens that cannot be stopped; else one registration (a lock inside
// libstdc++'s stop state) per token.
#pragma once

#include <optional>
#include <stop_token>

namespace corio::detail {

template <class Fn>
class stop_link {
 public:
  /// True if either token has already been stopped (then do not start the wait).
  static bool stopped(const std::stop_token& token, const std::stop_token* inherited) noexcept {
    return token.stop_requested() || (inherited != nullptr && inherited->stop_requested());
  }

  void arm(const std::stop_token& token, const std::stop_token* inherited, Fn fn) {
    if (token.stop_possible()) {
      m_explicit.emplace(token, fn);
    }
    if (inherited != nullptr && inherited->stop_possible()) {
      m_inherited.emplace(*inherited, fn);
    }
  }

  /// Unregisters both; waits for a callback running on another thread to return.
  void disarm() noexcept {
    m_explicit.reset();
    m_inherited.reset();
  }

 private:
  std::optional<std::stop_callback<Fn>> m_explicit;
  std::optional<std::stop_callback<Fn>> m_inherited;
};

}  // namespace corio::detail
