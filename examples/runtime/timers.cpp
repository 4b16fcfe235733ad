// Timers and cancellation: sleep_for, timeout, when_any, and a stop_token.
#include "../common/args.hpp"

#include <corio/corio.hpp>

#include <chrono>
#include <cstdio>
#include <stop_token>

using namespace std::chrono_literals;

namespace {

corio::task<const char*> slow_answer() {
  co_await corio::sleep_for(2s);
  co_return "slow";
}

corio::task<const char*> fast_answer() {
  co_await corio::sleep_for(10ms);
  co_return "fast";
}

corio::task<int> main_task() {
  // timeout(): give up after 50 ms; the pending sleep is cancelled.
  auto r = co_await corio::timeout(slow_answer(), 50ms);
  std::printf("timeout(slow, 50ms): %s\n", r ? *r : r.error().message().c_str());

  // when_any(): the first to finish wins, the loser is cancelled.
  auto winner = co_await corio::when_any(slow_answer(), fast_answer());
  std::printf("when_any(slow, fast): #%zu wins with \"%s\"\n", winner.index(),
              winner.index() == 0 ? std::get<0>(winner) : std::get<1>(winner));

  // An explicit stop_token cancels a wait from anywhere (here: another task).
  std::stop_source stop;
  auto canceller = corio::spawn([](std::stop_source* s) -> corio::task<void> {
    co_await corio::sleep_for(20ms);
    s->request_stop();
  }(&stop));
  auto slept = co_await corio::sleep_for(1h, stop.get_token());
  co_await canceller;
  std::printf("sleep_for(1h, token) after request_stop(): %s\n",
              slept ? "completed" : slept.error().message().c_str());
  co_return !r && winner.index() == 1 && !slept ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  example::args args("timers", "sleep_for, timeout, when_any and a stop_token");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  return corio::run(main_task());
}
