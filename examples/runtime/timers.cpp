// Timers and cancellation: sleep_for, timeout, when_any, a stop_token, and an interval.
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>

#include <chrono>
#include <cstdio>
#include <stop_token>
#include <thread>

using namespace std::chrono_literals;

namespace {

corio::task<const char*> slow_answer() {
  (void)co_await corio::sleep_for(2s);  // cancelled when it loses the race: its answer is dropped then
  co_return "slow";
}

corio::task<const char*> fast_answer() {
  (void)co_await corio::sleep_for(10ms);  // as slow_answer
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
    (void)co_await corio::sleep_for(20ms);  // nothing cancels this one
    s->request_stop();
  }(&stop));
  auto slept = co_await corio::sleep_for(1h, stop.get_token());
  co_await canceller;
  std::printf("sleep_for(1h, token) after request_stop(): %s\n",
              slept ? "completed" : slept.error().message().c_str());
  // interval: a tick every 10 ms on a fixed grid. The task stalls for 35 ms after the
  // first tick; with missed_tick_behavior::burst (the default) the ticks missed meanwhile
  // come at once, with skip only the next point of the grid comes.
  int ticks_ok = 0;
  for (auto behavior : {corio::missed_tick_behavior::burst, corio::missed_tick_behavior::skip}) {
    auto iv = corio::interval::every(10ms, corio::first_tick::immediately, behavior);
    if (!iv) {
      co_return 1;
    }
    auto first = co_await iv->tick();
    std::this_thread::sleep_for(35ms);  // a stall (never do this in real code: it blocks the worker)
    bool burst = behavior == corio::missed_tick_behavior::burst;
    std::printf("interval(10ms, %s) after a 35 ms stall: ticks due at", burst ? "burst" : "skip");
    for (int i = 0; i < 4; ++i) {
      auto due = co_await iv->tick();
      if (!due || !first) {
        co_return 1;
      }
      auto since = std::chrono::duration_cast<std::chrono::milliseconds>(*due - *first);
      std::printf(" +%lld ms", static_cast<long long>(since.count()));
    }
    std::printf("\n");
    ++ticks_ok;
  }
  co_return !r && winner.index() == 1 && !slept && ticks_ok == 2 ? 0 : 1;
}

int example_main(int argc, char** argv) {
  example::args args("timers", "sleep_for, timeout, when_any, a stop_token and an interval");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  return corio::run(main_task());
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("timers", example_main, argc, argv); }
