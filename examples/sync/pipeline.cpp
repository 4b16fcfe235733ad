// pipeline: the tutorial's queue.Queue between stages, with channels. Three stages run
// concurrently — generate 1..N, square, sum — connected by bounded channels; closing a
// channel tells the next stage that its input has ended.
// Usage: pipeline [N]   (default 100000)
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <cstdio>
#include <cstdlib>

#include <corio/corio.hpp>
#include <corio/sync/channel.hpp>

namespace {

corio::task<void> generate(corio::channel<long>& out, long n) {
  for (long i = 1; i <= n; ++i) {
    if (!co_await out.send(i)) {
      break;  // closed downstream
    }
  }
  out.close();
}

corio::task<void> square(corio::channel<long>& in, corio::channel<long>& out) {
  while (auto v = co_await in.recv()) {  // ends with errc::closed once drained
    (void)co_await out.send(*v * *v);
  }
  out.close();
}

corio::task<long> sum(corio::channel<long>& in) {
  long total = 0;
  while (auto v = co_await in.recv()) {
    total += *v;
  }
  co_return total;
}

corio::task<int> main_task(long n) {
  corio::channel<long> numbers(64);
  corio::channel<long> squares(64);
  auto g = corio::spawn(generate(numbers, n));
  auto s = corio::spawn(square(numbers, squares));
  long total = co_await sum(squares);
  co_await g;
  co_await s;
  const long expected = n * (n + 1) * (2 * n + 1) / 6;
  std::printf("sum of squares 1..%ld = %ld (expected %ld)\n", n, total, expected);
  co_return total == expected ? 0 : 1;
}

int example_main(int argc, char** argv) {
  long n = 100000;
  example::args args("pipeline", "three stages connected by bounded channels: generate, square, sum");
  args.positional("N", n, 0L, 1000000L, "numbers to generate, 0..1000000 (default 100000)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  corio::runtime_config cfg;
  cfg.workers = 2;
  return corio::run(main_task(n), cfg);
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("pipeline", example_main, argc, argv); }
