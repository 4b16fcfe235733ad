// The error category of corio::ipc::buffered_errc ("corio.buffered"); the reader itself is
// a template in ipc/buffered_reader.hpp.
#include <corio/ipc/buffered_reader.hpp>

namespace corio::ipc {

namespace {

class buffered_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "corio.buffered"; }
  std::string message(int ev) const override {
    switch (static_cast<buffered_errc>(ev)) {
      case buffered_errc::too_long: return "line too long (no delimiter within the reader's max_line bytes)";
    }
    return "unknown buffered stream error";
  }
  std::error_condition default_error_condition(int ev) const noexcept override {
    if (static_cast<buffered_errc>(ev) == buffered_errc::too_long) {
      return std::errc::message_size;
    }
    return {ev, *this};
  }
};

}  // namespace

const std::error_category& buffered_category() noexcept {
  static const buffered_category_impl category;
  return category;
}

}  // namespace corio::ipc
