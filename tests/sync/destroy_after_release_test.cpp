// Destroying a primitive as soon as another thread has seen it released (the last user
// of a reference-counted object, a latch its waiter saw open). The releasing call must
// make its last access to the object with the store that publishes the release; before
// the fixes, event::set() (so latch::count_down) and mutex::unlock()'s slow path still
// unlocked their spin lock after it: a write into freed memory.
// Not deterministic: each case repeats the pattern for up to ~1 s. A plain build only
// checks that nothing crashes; ThreadSanitizer reports the race on every run that has
// the bug (the deleting thread is not ordered after the late unlock), and AddressSanitizer
// when the timing hits. Only sync/ headers and plain threads: no runtime.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <stop_token>
#include <thread>

#include <corio/sync/event.hpp>
#include <corio/sync/latch.hpp>
#include <corio/sync/mutex.hpp>

namespace {

/// Repeats `once` up to 1000 times or ~1 s, whichever comes first (a loaded machine).
template <class F>
void repeat(F once) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (int i = 0; i < 1000 && std::chrono::steady_clock::now() < until; ++i) {
    once();
  }
}

/// A lock() refused before it queued (its token already stopped) while `m` is held.
/// Before the fix it left the mutex marked contended with no waiter, which sent the
/// owner's unlock() down its slow path (the late spin-lock unlock TSan reported); now it
/// puts the state back, and the unlock below takes the fast path. (The slow path's other
/// way to find no waiter, one cancelled between the owner's failed CAS and its lock, is
/// a race this test does not force.)
void refused_lock(corio::mutex& m) {
  std::stop_source stopped;
  stopped.request_stop();
  auto op = m.lock(stopped.get_token());
  if (!op.await_ready()) {
    (void)op.await_suspend(std::noop_coroutine());  // off a worker: returns at once
  }
  REQUIRE_FALSE(op.await_resume());
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

TEST_CASE("mutex: the last user may destroy the mutex right after taking and releasing it", "[sync][mutex]") {
  struct shared_obj {
    corio::mutex m;
    int refs = 2;
  };
  repeat([] {
    auto* o = new shared_obj;
    REQUIRE(o->m.try_lock());
    refused_lock(o->m);
    std::atomic<bool> go{false};
    std::thread t([o, &go] {
      while (!go.load()) {
      }
      while (!o->m.try_lock()) {
      }
      const bool last = --o->refs == 0;
      o->m.unlock();
      if (last) {
        delete o;
      }
    });
    --o->refs;  // under the lock: the other thread is the last user
    go.store(true);
    o->m.unlock();  // must not touch *o after the other thread's try_lock can succeed
    t.join();
  });
}
