// Destroying a primitive as soon as another thread has seen it released (the last user
// of a reference-counted object, a latch its waiter saw open). The releasing call must
// make its last access to the object with the store that publishes the release; before
// the fix, event::set() (so latch::count_down) still unlocked its spin lock after it: a
// write into freed memory.
// Not deterministic: each case repeats the pattern for up to ~1 s. A plain build only
// checks that nothing crashes; ThreadSanitizer reports the race on every run that has
// the bug (the deleting thread is not ordered after the late unlock), and AddressSanitizer
// when the timing hits. Only sync/ headers and plain threads: no runtime.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include <corio/sync/event.hpp>
#include <corio/sync/latch.hpp>

namespace {

/// Repeats `once` up to 1000 times or ~1 s, whichever comes first (a loaded machine).
template <class F>
void repeat(F once) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (int i = 0; i < 1000 && std::chrono::steady_clock::now() < until; ++i) {
    once();
  }
}

}  // namespace

TEST_CASE("latch: a thread that sees the latch open may destroy it at once", "[sync][latch]") {
  repeat([] {
    auto* l = new corio::latch(1);
    std::thread t([l] {
      while (!l->try_wait()) {
      }
      delete l;  // open: nobody waits, destroying it is allowed
    });
    l->count_down();  // must not touch *l after the deleting thread can see it open
    t.join();
  });
}

TEST_CASE("event: a thread that sees a manual event set may destroy it at once", "[sync][event]") {
  repeat([] {
    auto* e = new corio::event(corio::event_reset::manual);
    std::thread t([e] {
      while (!e->is_set()) {
      }
      delete e;
    });
    e->set();
    t.join();
  });
}

TEST_CASE("event: a thread that consumed an auto-reset event may destroy it at once", "[sync][event]") {
  repeat([] {
    auto* e = new corio::event(corio::event_reset::automatic);
    std::thread t([e] {
      while (!e->try_wait()) {
      }
      delete e;
    });
    e->set();
    t.join();
  });
}
