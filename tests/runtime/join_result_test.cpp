// join_handle::join() (issue 11 item 6, the error convention): the runtime's outcomes of a
// join — this wait cancelled, the task destroyed by shutdown, the task aborted — come back
// as the error of a result<T> instead of a thrown std::system_error, the handle is
// consumed exactly as by `co_await handle` (kept after a cancelled wait), and the task's
// own exception is still rethrown.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include "helpers.hpp"

using namespace std::chrono_literals;
using corio_test::workers;

namespace {

corio::task<std::string> word() { co_return "value"; }

corio::task<void> nothing() { co_return; }

corio::task<int> thrower() {
  throw std::runtime_error("boom");
  co_return 0;
}

corio::task<int> slow_value(std::chrono::milliseconds d, int v) {
  (void)co_await corio::sleep_for(d);
  co_return v;
}

corio::task<bool> joins_a_value() {
  auto h = corio::spawn(word());
  corio::result<std::string> r = co_await h.join();
  co_return r.has_value() && *r == "value" && !h.valid();
}

corio::task<bool> joins_void() {
  auto h = corio::spawn(nothing());
  corio::result<void> r = co_await h.join();
  co_return r.has_value() && !h.valid();
}

corio::task<std::string> rethrows_the_tasks_exception() {
  auto h = corio::spawn(thrower());
  try {
    (void)co_await h.join();
  } catch (const std::runtime_error& e) {
    co_return std::string(e.what()) + (h.valid() ? " kept" : " consumed");
  }
  co_return "no exception";
}

// A stopped token ends the wait with operation_canceled; the handle is kept and a later
// join yields the value.
corio::task<int> cancelled_then_joined() {
  auto h = corio::spawn(slow_value(30ms, 7));
  std::stop_source stop;
  stop.request_stop();
  corio::result<int> first = co_await h.join(stop.get_token());
  if (first || first.error() != std::errc::operation_canceled || !h.valid()) {
    co_return -1;
  }
  corio::result<int> second = co_await h.join();
  co_return second ? *second : -2;
}

// The wait is stopped through the token the awaiting task inherits (timeout), not its own.
corio::task<std::error_code> inherited_cancel(corio::join_handle<int>* h) {
  corio::result<int> r = co_await corio::timeout(h->join(), 5ms);  // a result<int>, flattened
  co_return r ? std::error_code{} : r.error();
}

corio::task<std::error_code> aborted() {
  auto h = corio::spawn(corio::abortable, slow_value(1h, 1));
  h.abort();
  corio::result<int> r = co_await h.join();
  co_return r ? std::error_code{} : r.error();
}

corio::task<std::error_code> joins_foreign(corio::join_handle<int>* h) {
  corio::result<int> r = co_await h->join();
  co_return r ? std::error_code{} : r.error();
}

}  // namespace

TEST_CASE("join_result: join() yields the task's value in a result and consumes the handle", "[runtime][join_handle]") {
  corio::runtime rt(workers(2));
  CHECK(rt.block_on(joins_a_value()));
  CHECK(rt.block_on(joins_void()));
}

TEST_CASE("join_result: join() still rethrows the task's own exception and consumes the handle",
          "[runtime][join_handle]") {
  corio::runtime rt(workers(1));
  CHECK(rt.block_on(rethrows_the_tasks_exception()) == "boom consumed");
}

TEST_CASE("join_result: a stopped join returns operation_canceled and keeps the handle", "[runtime][join_handle]") {
  corio::runtime rt(workers(1));
  CHECK(rt.block_on(cancelled_then_joined()) == 7);
}

TEST_CASE("join_result: a join cut short by timeout() reports timed_out, the handle is kept",
          "[runtime][join_handle]") {
  corio::runtime rt(workers(2));
  auto h = rt.spawn(slow_value(60ms, 5));
  REQUIRE(h);
  CHECK(rt.block_on(inherited_cancel(&*h)) == corio::errc::timed_out);
  REQUIRE(h->valid());
  auto join = [](corio::join_handle<int>* j) -> corio::task<int> { co_return co_await *j; };
  CHECK(rt.block_on(join(&*h)) == 5);
}

TEST_CASE("join_result: an aborted task's join returns errc::aborted", "[runtime][join_handle]") {
  corio::runtime rt(workers(1));
  CHECK(rt.block_on(aborted()) == corio::errc::aborted);
}

TEST_CASE("join_result: a task destroyed by its runtime's shutdown joins as errc::shut_down",
          "[runtime][join_handle][shutdown]") {
  corio::runtime waiter_rt(workers(1));
  auto doomed = std::make_unique<corio::runtime>(workers(1));
  auto h = doomed->spawn(slow_value(1h, 0));
  REQUIRE(h);
  auto waiting = waiter_rt.spawn(joins_foreign(&*h));
  REQUIRE(waiting);
  std::this_thread::sleep_for(20ms);  // the join is parked (or not yet: either way it ends)
  doomed.reset();
  auto join = [](corio::join_handle<std::error_code> j) -> corio::task<std::error_code> { co_return co_await j; };
  CHECK(waiter_rt.block_on(join(std::move(*waiting))) == corio::errc::shut_down);
}
