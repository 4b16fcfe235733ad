// corio::ipc::exit_status: how a child process ended (an exit code or a signal).
//
// Built from the siginfo_t that waitid() / IORING_OP_WAITID fill. Thread-safety: a plain
// value. Cost: none.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <signal.h>

#include <optional>
#include <string>

namespace corio::ipc {

/// The end of a process: exited with a code, or killed by a signal (maybe dumping core).
class exit_status {
 public:
  exit_status() noexcept = default;
  /// From waitid()'s siginfo (si_code CLD_EXITED / CLD_KILLED / CLD_DUMPED).
  static exit_status from_siginfo(const siginfo_t& info) noexcept {
    exit_status s;
    s.m_kind = info.si_code;
    s.m_value = info.si_status;
    return s;
  }
  /// The status of a process that exited with `code`.
  static exit_status exited(int code) noexcept {
    exit_status s;
    s.m_kind = CLD_EXITED;
    s.m_value = code;
    return s;
  }

  /// True when the process exited with code 0.
  [[nodiscard]] bool success() const noexcept { return m_kind == CLD_EXITED && m_value == 0; }
  /// The exit code, if the process exited (rather than being killed).
  [[nodiscard]] std::optional<int> code() const noexcept {
    return m_kind == CLD_EXITED ? std::optional<int>(m_value) : std::nullopt;
  }
  /// The terminating signal, if the process was killed by one.
  [[nodiscard]] std::optional<int> signal() const noexcept {
    return (m_kind == CLD_KILLED || m_kind == CLD_DUMPED) ? std::optional<int>(m_value) : std::nullopt;
  }
  /// True when a signal killed the process and it dumped core.
  [[nodiscard]] bool core_dumped() const noexcept { return m_kind == CLD_DUMPED; }
  /// "exit code 3" / "signal 9 (Killed)".
  [[nodiscard]] std::string to_string() const;

  friend bool operator==(const exit_status&, const exit_status&) = default;

 private:
  int m_kind = CLD_EXITED;
  int m_value = 0;
};

}  // namespace corio::ipc
