#include <corio/sync/channel.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/timeout.hpp>
#include <corio/sync/oneshot.hpp>

#include "sync_helpers.hpp"

using namespace std::chrono_literals;

TEST_CASE("channel: try_send fills a bounded channel and reports full, leaving the value", "[sync][channel]") {
  corio::channel<std::unique_ptr<int>> ch(2);
  REQUIRE(ch.try_send(std::make_unique<int>(1)));
  REQUIRE(ch.try_send(std::make_unique<int>(2)));
  auto third = std::make_unique<int>(3);
  auto r = ch.try_send(std::move(third));
  REQUIRE(r.error() == corio::errc::full);
  REQUIRE(third != nullptr);  // not consumed
  REQUIRE(*ch.try_recv().value() == 1);
  REQUIRE(*ch.try_recv().value() == 2);
  REQUIRE(ch.try_recv().error() == corio::errc::empty);
}

TEST_CASE("channel: close lets receivers drain, then reports closed; send on a closed channel fails", "[sync][channel]") {
  corio::channel<int> ch(corio::unbounded_capacity);
  for (int i = 0; i < 100; ++i) {
    REQUIRE(ch.try_send(int(i)));
  }
  ch.close();
  REQUIRE(ch.is_closed());
  REQUIRE(ch.try_send(7).error() == corio::errc::closed);
  REQUIRE(ch.send_blocking(7).error() == corio::errc::closed);
  for (int i = 0; i < 100; ++i) {
    REQUIRE(ch.try_recv().value() == i);
  }
  REQUIRE(ch.try_recv().error() == corio::errc::closed);
  REQUIRE(ch.recv_blocking().error() == corio::errc::closed);
}

TEST_CASE("channel: values arrive in order through a small bounded channel between tasks", "[sync][channel]") {
  corio::runtime rt(corio_test::sync_config());
  corio::channel<int> ch(4);
  std::vector<int> got;
  std::error_code end;
  rt.block_on([](corio::channel<int>& ch, std::vector<int>& got, std::error_code& end) -> corio::task<void> {
    auto prod = corio::spawn([](corio::channel<int>& ch) -> corio::task<void> {
      for (int i = 0; i < 10000; ++i) {
        (void)co_await ch.send(i);
      }
      ch.close();
    }(ch));
    for (;;) {
      auto r = co_await ch.recv();
      if (!r) {
        end = r.error();
        break;
      }
      got.push_back(*r);
    }
    co_await prod;
  }(ch, got, end));
  REQUIRE(end == corio::errc::closed);
  REQUIRE(got.size() == 10000);
  bool in_order = true;
  for (int i = 0; i < 10000; ++i) {
    in_order = in_order && got[static_cast<std::size_t>(i)] == i;
  }
  REQUIRE(in_order);
}

TEST_CASE("channel: a rendezvous channel (capacity 0) hands each value to a receiver", "[sync][channel]") {
  corio::runtime rt(corio_test::sync_config());
  corio::channel<int> ping(0);
  corio::channel<int> pong(0);
  bool bad = false;
  rt.block_on([](corio::channel<int>& ping, corio::channel<int>& pong, bool& bad) -> corio::task<void> {
    auto echo = corio::spawn([](corio::channel<int>& ping, corio::channel<int>& pong) -> corio::task<void> {
      for (;;) {
        auto v = co_await ping.recv();
        if (!v) {
          co_return;
        }
        (void)co_await pong.send(*v + 1);
      }
    }(ping, pong));
    for (int i = 0; i < 1000; ++i) {
      (void)co_await ping.send(i);
      auto r = co_await pong.recv();
      if (!r || *r != i + 1) {
        bad = true;
      }
    }
    ping.close();
    co_await echo;
  }(ping, pong, bad));
  REQUIRE_FALSE(bad);
  REQUIRE(ping.try_send(1).error() == corio::errc::closed);
}

TEST_CASE("channel: close wakes waiting receivers and senders with closed", "[sync][channel]") {
  corio::runtime rt(corio_test::sync_config());
  corio::channel<int> empty(1);
  corio::channel<int> full(1);
  REQUIRE(full.try_send(0));
  std::error_code recv_ec;
  std::error_code send_ec;
  rt.block_on([](corio::channel<int>& empty, corio::channel<int>& full, std::error_code& recv_ec,
                 std::error_code& send_ec) -> corio::task<void> {
    auto r = corio::spawn([](corio::channel<int>& ch, std::error_code& ec) -> corio::task<void> {
      auto v = co_await ch.recv();
      ec = v ? std::error_code{} : v.error();
    }(empty, recv_ec));
    auto s = corio::spawn([](corio::channel<int>& ch, std::error_code& ec) -> corio::task<void> {
      auto v = co_await ch.send(1);
      ec = v ? std::error_code{} : v.error();
    }(full, send_ec));
    co_await corio::sleep_for(5ms);
    empty.close();
    full.close();
    co_await r;
    co_await s;
  }(empty, full, recv_ec, send_ec));
  REQUIRE(recv_ec == corio::errc::closed);
  REQUIRE(send_ec == corio::errc::closed);
  REQUIRE(full.try_recv().value() == 0);  // the buffered value is still delivered
}

TEST_CASE("channel: a cancelled recv takes nothing and the value goes to the next receiver", "[sync][channel]") {
  corio::runtime rt(corio_test::sync_config());
  corio::channel<int> ch(1);
  std::error_code ec;
  int got = -1;
  rt.block_on([](corio::channel<int>& ch, std::error_code& ec, int& got) -> corio::task<void> {
    auto r = co_await corio::timeout(ch.recv(), 5ms);
    ec = r ? std::error_code{} : r.error();
    (void)co_await ch.send(5);
    got = (co_await ch.recv()).value_or(-1);
  }(ch, ec, got));
  REQUIRE(ec == std::errc::timed_out);
  REQUIRE(got == 5);
}

TEST_CASE("channel: plain threads and tasks exchange values with the blocking calls", "[sync][channel]") {
  corio::runtime rt(corio_test::sync_config());
  corio::channel<int> to_task(8);
  corio::channel<int> to_thread(corio::unbounded_capacity);  // the thread reads it only at the end
  std::int64_t thread_sum = 0;
  std::thread t([&] {
    for (int i = 1; i <= 5000; ++i) {
      (void)to_task.send_blocking(i);
    }
    to_task.close();
    while (auto v = to_thread.recv_blocking()) {
      thread_sum += *v;
    }
  });
  rt.block_on([](corio::channel<int>& in, corio::channel<int>& out) -> corio::task<void> {
    while (auto v = co_await in.recv()) {
      (void)co_await out.send(*v * 2);
    }
    out.close();
  }(to_task, to_thread));
  t.join();
  REQUIRE(thread_sum == 2 * 5000 * 5001 / 2);
}

TEST_CASE("oneshot: the value sent once reaches the waiting receiver; a second send fails", "[sync][oneshot]") {
  corio::runtime rt(corio_test::sync_config());
  corio::oneshot<std::string> os;
  std::string got;
  std::error_code second_send;
  std::error_code second_recv;
  rt.block_on([](corio::oneshot<std::string>& os, std::string& got, std::error_code& ss,
                 std::error_code& sr) -> corio::task<void> {
    auto h = corio::spawn([](corio::oneshot<std::string>& os) -> corio::task<void> {
      co_await corio::sleep_for(2ms);
      (void)os.send("hello");
    }(os));
    got = (co_await os.recv()).value_or("");
    co_await h;
    ss = os.send("again").error();
    sr = os.try_recv().error();
  }(os, got, second_send, second_recv));
  REQUIRE(got == "hello");
  REQUIRE(second_send == corio::errc::full);
  REQUIRE(second_recv == corio::errc::closed);
}

TEST_CASE("oneshot: close without a value wakes the receiver with closed", "[sync][oneshot]") {
  corio::oneshot<int> os;
  REQUIRE(os.try_recv().error() == corio::errc::empty);
  std::thread t([&] {
    std::this_thread::sleep_for(2ms);
    os.close();
  });
  REQUIRE(os.recv_blocking().error() == corio::errc::closed);
  t.join();
  REQUIRE(os.send(1).error() == corio::errc::closed);
}
