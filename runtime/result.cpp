// The error category of corio::errc (runtime/result.hpp): names and the portable
// conditions they compare equal to.
#include <corio/runtime/result.hpp>

#include <string>

namespace corio {

namespace {

class corio_error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "corio"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::shut_down: return "the runtime was shut down";
      case errc::closed: return "closed";
      case errc::full: return "full";
      case errc::empty: return "empty";
      case errc::no_runtime: return "must be called on a corio worker thread";
      case errc::invalid_config: return "invalid runtime configuration";
      case errc::io_uring_refused: return "io_uring refused by the kernel or a seccomp filter";
      case errc::authentication_failed: return "authentication failed";
      case errc::message_size: return "message longer than the receiver's limit";
      case errc::protocol_error: return "malformed or truncated message from the peer";
      case errc::timed_out: return "operation timed out";
      case errc::aborted: return "task aborted";
    }
    return "unknown corio error";
  }
  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<errc>(value)) {
      case errc::io_uring_refused: return std::errc::operation_not_permitted;
      case errc::invalid_config: return std::errc::invalid_argument;
      case errc::authentication_failed: return std::errc::permission_denied;
      case errc::message_size: return std::errc::message_size;
      case errc::protocol_error: return std::errc::bad_message;
      case errc::timed_out: return std::errc::timed_out;
      default: return {value, *this};
    }
  }
};

}  // namespace

const std::error_category& corio_category() noexcept {
  static const corio_error_category category;
  return category;
}

}  // namespace corio
