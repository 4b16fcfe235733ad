// A minimal consumer of corio, built by tests/install/check.sh against an installed copy
// (found with pkg-config or CMake) and as a meson subproject, with g++ and with clang.
#include <corio/corio.hpp>
#include <corio/runtime/task.hpp>

#include <cstdio>

corio::task<int> answer() {
  auto h = corio::spawn([]() -> corio::task<int> { co_return 21; }());
  co_return 2 * co_await h;
}

int main() {
  int v = corio::run(answer());
  std::printf("consumer: %d\n", v);
  return v == 42 ? 0 : 1;
}
