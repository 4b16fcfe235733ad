// A minimal consumer of corio, built by tests/install/check.sh against an installed copy
// (found with pkg-config or CMake) and as a meson subproject, with g++ and with clang.
#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>
#include <corio/runtime/task.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

// Links the authenticated connections (OpenSSL's libcrypto): a static consumer must be
// given libcrypto too. Never called with the arguments the check passes.
corio::task<bool> authenticates(const char* port) {
  const auto addr = corio::ipc::socket_address::loopback_v4(static_cast<std::uint16_t>(std::atoi(port)));
  std::string key = "password";
  auto c = co_await corio::ipc::connect(addr, std::move(key));
  co_return c.has_value();
}

corio::task<int> answer() {
  auto h = corio::spawn([]() -> corio::task<int> { co_return 21; }());
  co_return 2 * co_await h;
}

int main(int argc, char** argv) {
  if (argc > 1) {
    return corio::run(authenticates(argv[1])) ? 0 : 1;
  }
  int v = corio::run(answer());
  std::printf("consumer: %d\n", v);
  return v == 42 ? 0 : 1;
}
