// corio::ipc::process_result<T>: a result<T> that also says, in words, what failed.
//
// An error_code names the kind of failure (ENOENT, invalid_argument, a pool_errc) but not
// the thing that failed. The process calls return this instead of a plain result<T> so a
// failure can name it: command::spawn() the program and the offending argument, a pool
// job the signal or exit status of the worker that died under it, or the exception text
// it threw. It is-a result<T>: `if (!r) r.error()` works as for any result, and it
// converts to result<T> (dropping the text).
//
// Thread-safety: a plain value. Cost: one std::string beside the result (empty, with no
// allocation, on success and for failures with nothing to add).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include <corio/runtime/result.hpp>

namespace corio::ipc {

/// A result<T> that also says, in words, what failed; see the header.
template <class T>
class process_result : public result<T> {
 public:
  using result<T>::result;
  /// Wraps a plain result (no detail).
  process_result(result<T> r) noexcept(std::is_nothrow_move_constructible_v<result<T>>) : result<T>(std::move(r)) {}

  /// A failure with `ec` and, in `detail`, what failed.
  static process_result failure(std::error_code ec, std::string detail = {}) {
    process_result r{unexpected(ec)};
    r.m_detail = std::move(detail);
    return r;
  }

  /// What failed, in words (e.g. `cannot run "no-such-program" (not found in PATH
  /// "/usr/bin:/bin")`); empty for a success and for failures with nothing to add.
  [[nodiscard]] const std::string& detail() const noexcept { return m_detail; }
  /// For a human: error().message(), then ": " and detail() if there is one. Empty for a
  /// success.
  [[nodiscard]] std::string error_message() const {
    if (this->has_value()) {
      return {};
    }
    std::string m = this->error().message();
    if (!m_detail.empty()) {
      m += ": ";
      m += m_detail;
    }
    return m;
  }

 protected:
  /// Sets detail() (for derived results such as pool_result).
  void set_detail(std::string detail) { m_detail = std::move(detail); }

 private:
  std::string m_detail;
};

}  // namespace corio::ipc
