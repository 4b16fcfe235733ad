// Tests of sync/shared_mutex.hpp.
#include <corio/sync/shared_mutex.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <cstdlib>
#include <chrono>
#include <cstdint>
#include <stop_token>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>

#include "sync_helpers.hpp"

using namespace std::chrono_literals;

TEST_CASE("shared_mutex: readers share, a writer excludes everyone", "[sync][shared_mutex]") {
  corio::shared_mutex m;
  REQUIRE(m.try_lock_shared());
  REQUIRE(m.try_lock_shared());
  REQUIRE_FALSE(m.try_lock());
  m.unlock_shared();
  m.unlock_shared();
  REQUIRE(m.try_lock());
  REQUIRE_FALSE(m.try_lock_shared());
  m.unlock();
}

TEST_CASE("shared_mutex: a waiting writer holds back new readers (writer preference)", "[sync][shared_mutex]") {
  corio::runtime rt(corio_test::sync_config());
  corio::shared_mutex m;
  std::vector<char> order;
  rt.block_on([](corio::shared_mutex& m, std::vector<char>& order) -> corio::task<void> {
    auto r1 = co_await m.lock_shared();
    auto w = corio::spawn([](corio::shared_mutex& m, std::vector<char>& order) -> corio::task<void> {
      auto g = co_await m.lock();
      order.push_back('W');
    }(m, order));
    (void)co_await corio::sleep_for(5ms);
    bool late_reader_blocked = !m.try_lock_shared();
    if (!late_reader_blocked) {
      m.unlock_shared();  // wrongly admitted: give it back so the test fails, not hangs
    }
    auto r2 = corio::spawn([](corio::shared_mutex& m, std::vector<char>& order) -> corio::task<void> {
      auto g = co_await m.lock_shared();
      order.push_back('R');
    }(m, order));
    (void)co_await corio::sleep_for(5ms);
    if (late_reader_blocked) {
      order.push_back('0');
    }
    r1->unlock();
    co_await w;
    co_await r2;
  }(m, order));
  REQUIRE(order == std::vector<char>{'0', 'W', 'R'});
}

namespace {
corio::task<void> write_once(corio::shared_mutex* m, std::stop_token token, std::atomic<int>* outcome) {
  auto g = co_await m->lock(std::move(token));
  outcome->store(g ? 1 : (g.error() == std::errc::operation_canceled ? 2 : 3));
}
corio::task<void> read_once(corio::shared_mutex* m, std::atomic<int>* admitted) {
  auto g = co_await m->lock_shared();
  admitted->store(g ? 1 : 3);
}
corio::task<void> cancel_the_writer_in_front(corio::shared_mutex* m, std::atomic<int>* writer, std::atomic<int>* reader,
                                            bool* reader_waited_for_writer, bool* admitted_beside_r1) {
  auto r1 = co_await m->lock_shared();
  std::stop_source stop;
  auto w = corio::spawn(write_once(m, stop.get_token(), writer));
  // The writer queues behind r1: then no reader gets in without waiting. Watched, not
  // timed (a loaded machine may run the writer's task late).
  for (int i = 0; i < 2000 && m->try_lock_shared(); ++i) {
    corio::read_guard(*m).unlock();
    (void)co_await corio::sleep_for(1ms);
  }
  auto r2 = corio::spawn(read_once(m, reader));
  (void)co_await corio::sleep_for(5ms);  // the late reader queues behind the writer
  *reader_waited_for_writer = reader->load() == 0;
  stop.request_stop();  // the writer leaves the queue: nothing holds the reader back now
  co_await w;
  // The reader must get in while r1 is still held (shared). Poll with a deadline, so a
  // missing admission fails the test instead of hanging it.
  for (int i = 0; i < 2000 && reader->load() == 0; ++i) {
    (void)co_await corio::sleep_for(1ms);
  }
  *admitted_beside_r1 = reader->load() == 1;
  r1->unlock();
  co_await r2;
}
}  // namespace

TEST_CASE("shared_mutex: a cancelled writer lets in the readers it held back", "[sync][shared_mutex][cancel]") {
  corio::runtime rt(corio_test::sync_config());
  corio::shared_mutex m;
  std::atomic<int> writer{0};
  std::atomic<int> reader{0};
  bool reader_waited_for_writer = false;
  bool admitted_beside_r1 = false;
  rt.block_on(cancel_the_writer_in_front(&m, &writer, &reader, &reader_waited_for_writer, &admitted_beside_r1));
  REQUIRE(reader_waited_for_writer);
  REQUIRE(writer.load() == 2);  // operation_canceled
  REQUIRE(admitted_beside_r1);
  REQUIRE(m.try_lock());        // and everyone is gone again
  m.unlock();
}

TEST_CASE("shared_mutex: readers and writers under contention see consistent data", "[sync][shared_mutex]") {
  corio::runtime rt(corio_test::sync_config());
  corio::shared_mutex m;
  std::int64_t a = 0;
  std::int64_t b = 0;
  std::atomic<bool> torn{false};
  std::atomic<std::int64_t> concurrent_readers_max{0};
  rt.block_on([](corio::shared_mutex& m, std::int64_t& a, std::int64_t& b, std::atomic<bool>& torn,
                 std::atomic<std::int64_t>& rmax) -> corio::task<void> {
    std::atomic<std::int64_t> readers{0};
    std::vector<corio::join_handle<void>> hs;
    for (int t = 0; t < 64; ++t) {
      hs.push_back(corio::spawn([](corio::shared_mutex& m, std::int64_t& a, std::int64_t& b, std::atomic<bool>& torn,
                                   std::atomic<std::int64_t>& readers, std::atomic<std::int64_t>& rmax,
                                   int t) -> corio::task<void> {
        for (int i = 0; i < 200; ++i) {
          if ((i + t) % 4 == 0) {
            auto g = co_await m.lock();
            ++a;
            co_await corio::yield_now{};
            ++b;
          } else {
            auto g = co_await m.lock_shared();
            corio_test::raise_max(rmax, readers.fetch_add(1) + 1);
            if (a != b) {
              torn = true;
            }
            co_await corio::yield_now{};
            readers.fetch_sub(1);
          }
        }
      }(m, a, b, torn, readers, rmax, t)));
    }
    for (auto& h : hs) {
      co_await h;
    }
  }(m, a, b, torn, concurrent_readers_max));
  REQUIRE_FALSE(torn.load());
  REQUIRE(a == 64 * 50);
  REQUIRE(b == a);
  REQUIRE(concurrent_readers_max.load() > 1);
  REQUIRE(m.try_lock());
  m.unlock();
}

TEST_CASE("shared_mutex: unlock_shared / unlock without holders abort in debug builds, are no-ops in release builds", "[sync][shared_mutex][misuse]") {
  auto shared = corio_test::run_in_child([] {
    corio::shared_mutex m;
    m.unlock_shared();
    // release builds: the reader count did not wrap, a writer still gets in
    if (!m.try_lock()) {
      std::_Exit(3);
    }
    m.unlock();
  });
  auto exclusive = corio_test::run_in_child([] {
    corio::shared_mutex m;
    if (!m.try_lock_shared()) {
      std::_Exit(5);
    }
    m.unlock();  // held shared, not exclusively
    if (m.try_lock()) {  // the reader still holds it
      std::_Exit(6);
    }
    m.unlock_shared();
    if (!m.try_lock()) {
      std::_Exit(7);
    }
    m.unlock();
  });
  corio_test::require_misuse_outcome(shared, "corio::shared_mutex::unlock_shared: not held shared");
  corio_test::require_misuse_outcome(exclusive, "corio::shared_mutex::unlock: not held exclusively");
}
