// A minimal consumer of corio, built three ways by tests/install/check.sh: against the
// source tree (as a meson subproject) and against an installed copy found with pkg-config.
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
