// Compiled by nodiscard_check.sh, once per CASE, with -Werror=unused-result: CASE 0 (the
// results kept, voided or plain values) must compile; every other CASE drops the result of
// one `co_await` of a result-yielding corio awaiter and must fail (result.hpp, rule 4).
#include <corio/runtime/io.hpp>
#include <corio/runtime/shield.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/timeout.hpp>
#include <corio/sync/channel.hpp>
#include <corio/sync/mutex.hpp>

#include <array>
#include <chrono>
#include <cstddef>

using namespace std::chrono_literals;

corio::task<corio::result<int>> fallible() { co_return 1; }
corio::task<int> plain() { co_return 1; }
corio::task<void> nothing() { co_return; }

corio::task<void> body(corio::channel<int>& ch, corio::mutex& m, int fd) {
  std::array<std::byte, 8> buf{};
#if CASE == 0
  (void)co_await corio::sleep_for(1ms);
  corio::result<int> kept = co_await fallible();
  (void)kept;
  (void)co_await corio::io::write(fd, buf);
  co_await plain();  // a plain value: no warning
  co_await nothing();
  if (auto g = co_await m.lock(); !g) {
    co_return;
  }
#elif CASE == 1
  co_await corio::sleep_for(1ms);
#elif CASE == 2
  co_await fallible();
#elif CASE == 3
  co_await corio::io::write(fd, buf);
#elif CASE == 4
  co_await ch.send(1);
#elif CASE == 5
  co_await ch.recv();
#elif CASE == 6
  co_await m.lock();
#elif CASE == 7
  co_await corio::timeout(plain(), 1ms);
#elif CASE == 8
  co_await corio::spawn(plain()).join();
#elif CASE == 9
  co_await corio::shield(fallible());
#endif
  (void)ch;
  (void)m;
  (void)fd;
  (void)buf;
}
