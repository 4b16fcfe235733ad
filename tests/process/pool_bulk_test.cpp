// Tests for process_pool's bulk maps (map_batched over millions of items: every result
// in its place, a count that is not a multiple of the block size, no items, a failing
// block, a cancel while blocks are on their way) and for lambdas without captures as
// jobs of every typed call and of the untyped ones (issue 16 item 14).
#include <chrono>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include "pool_helpers.hpp"

using corio::ipc::pool_errc;
using corio::ipc::process_pool;
using corio_test::run_with_pool;

namespace {

// Ten million items where the build is optimized and not instrumented; a million and
// three (a prime count: no block size divides it) in debug and sanitizer builds.
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
constexpr std::size_t big_n = 10'000'000;
#else
constexpr std::size_t big_n = 1'000'003;
#endif

int square_int(int x) { return x * x; }

/// A result wider than the item: checks that each block lands at its own offset.
struct wide {
  int item;
  double half;
  long negated;
};
wide widen(int x) { return {x, x / 2.0, -static_cast<long>(x)}; }

int throw_at_last(int x) {
  if (x == static_cast<int>(big_n - 1)) {
    throw std::runtime_error("the last item fails");
  }
  return x;
}

std::vector<int> iota_ints(std::size_t n) {
  std::vector<int> xs(n);
  for (std::size_t i = 0; i < n; ++i) {
    xs[i] = static_cast<int>(i % 46000);  // (46000^2 < 2^31)
  }
  return xs;
}

struct bulk_seen {
  corio::ipc::pool_result<std::vector<int>> squares;       // default block size
  corio::ipc::pool_result<std::vector<int>> odd_blocks;    // 4096-item blocks: a short last one
  corio::ipc::pool_result<std::vector<wide>> wides;        // Out wider than In
  corio::ipc::pool_result<std::vector<int>> empty;         // n = 0
  corio::ipc::pool_result<std::vector<int>> one;           // n = 1
  corio::ipc::pool_result<std::vector<int>> failed;        // one block throws
  corio::ipc::pool_result<std::vector<int>> after_failure;  // the pool goes on
};

corio::task<bulk_seen> bulk_maps(process_pool& p) {
  bulk_seen s;
  s.squares = co_await p.map_batched<&square_int>(iota_ints(big_n));
  s.odd_blocks = co_await p.map_batched<&square_int>(iota_ints(big_n), 4096);
  s.wides = co_await p.map_batched<&widen>(iota_ints(100'003), 1000);
  s.empty = co_await p.map_batched<&square_int>(std::vector<int>{});
  s.one = co_await p.map_batched<&square_int>(std::vector<int>(1, 12));
  std::vector<int> all(big_n);
  for (std::size_t i = 0; i < big_n; ++i) {
    all[i] = static_cast<int>(i);
  }
  s.failed = co_await p.map_batched<&throw_at_last>(std::move(all));
  s.after_failure = co_await p.map_batched<&square_int>(iota_ints(10'000));
  co_return s;
}

bool squares_right(const std::vector<int>& out, std::size_t n) {
  if (out.size() != n) {
    return false;
  }
  for (std::size_t i = 0; i < n; ++i) {
    int x = static_cast<int>(i % 46000);
    if (out[i] != x * x) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("process_pool: map_batched over millions of items puts every result in its place",
          "[process][pool][bulk]") {
  auto s = run_with_pool({.workers = 2}, &bulk_maps);
  REQUIRE(s.squares);
  CHECK(squares_right(*s.squares, big_n));
  REQUIRE(s.odd_blocks);
  CHECK(big_n % 4096 != 0);
  CHECK(squares_right(*s.odd_blocks, big_n));
  REQUIRE(s.wides);
  REQUIRE(s.wides->size() == 100'003);
  bool wides_right = true;
  for (std::size_t i = 0; i < s.wides->size(); ++i) {
    const wide& w = (*s.wides)[i];
    int x = static_cast<int>(i % 46000);
    wides_right = wides_right && w.item == x && w.half == x / 2.0 && w.negated == -static_cast<long>(x);
  }
  CHECK(wides_right);
  REQUIRE(s.empty);
  CHECK(s.empty->empty());
  REQUIRE(s.one);
  CHECK(*s.one == std::vector<int>{144});
  REQUIRE_FALSE(s.failed);
  CHECK(s.failed.error() == pool_errc::job_threw);
  CHECK(s.failed.exception_message() == "the last item fails");
  REQUIRE(s.after_failure);
  CHECK(squares_right(*s.after_failure, 10'000));
}

namespace {

struct cancel_seen {
  corio::ipc::pool_result<std::vector<int>> cancelled;
  corio::ipc::pool_result<std::vector<int>> next;
};

corio::task<cancel_seen> bulk_cancelled(process_pool& p) {
  cancel_seen s;
  // Stopped before the call: nothing is sent.
  std::stop_source stopped;
  stopped.request_stop();
  s.cancelled = co_await p.map_batched<&square_int>(iota_ints(big_n), 0, stopped.get_token());
  // Stopped while blocks are on their way (the timeout fires whenever it fires: before,
  // during or after the writes). The input is freed when the call returns; what the
  // writers still send of it is kept alive by them, so the next call sees a clean stream.
  for (int round = 0; round < 5; ++round) {
    (void)co_await corio::timeout(p.map_batched<&square_int>(iota_ints(big_n / 4)),
                                  std::chrono::microseconds(200 * (round + 1)));
  }
  s.next = co_await p.map_batched<&square_int>(iota_ints(big_n));
  co_return s;
}

}  // namespace

TEST_CASE("process_pool: a cancelled map_batched leaves the pool consistent", "[process][pool][bulk]") {
  auto s = run_with_pool({.workers = 2}, &bulk_cancelled);
  REQUIRE_FALSE(s.cancelled);
  CHECK(s.cancelled.error() == std::errc::operation_canceled);
  REQUIRE(s.next);
  CHECK(squares_right(*s.next, big_n));
}

namespace {

struct lambda_seen {
  std::vector<corio::result<int>> mapped;
  corio::ipc::pool_result<int> called;
  corio::ipc::pool_result<std::vector<int>> batched;
  std::vector<int> streamed;
  corio::ipc::pool_result<std::vector<std::byte>> untyped;
  corio::ipc::pool_result<std::string> text;
};

corio::task<lambda_seen> lambda_jobs(process_pool& p) {
  lambda_seen s;
  std::vector<int> xs{1, 2, 3};
  s.mapped = co_await p.map<[](int x) { return x * 10; }>(xs);
  s.called = co_await p.call<[](const int& x) { return x + 1; }>(41);
  s.batched = co_await p.map_batched<[](int x) { return -x; }>(iota_ints(1000), 7);
  auto stream = p.map_stream<[](int x) { return x * x; }>(xs);
  s.streamed.resize(3);
  while (auto item = co_await stream.next()) {
    s.streamed[item->index] = item->value ? *item->value : -1;
  }
  std::vector<std::byte> job{std::byte{1}, std::byte{2}};
  s.untyped = co_await p.submit(
      [](std::span<const std::byte> in, std::vector<std::byte>& out) { out.insert(out.end(), in.rbegin(), in.rend()); },
      std::move(job));
  s.text = co_await p.call<[](std::string w) { return w + "!"; }>(std::string("hi"));
  co_return s;
}

}  // namespace

TEST_CASE("process_pool: lambdas without captures are jobs for every call", "[process][pool]") {
  auto s = run_with_pool({.workers = 2}, &lambda_jobs);
  REQUIRE(s.mapped.size() == 3);
  CHECK(*s.mapped[0] == 10);
  CHECK(*s.mapped[2] == 30);
  REQUIRE(s.called);
  CHECK(*s.called == 42);
  REQUIRE(s.batched);
  REQUIRE(s.batched->size() == 1000);
  CHECK((*s.batched)[999] == -(999 % 46000));
  CHECK(s.streamed == std::vector<int>{1, 4, 9});
  REQUIRE(s.untyped);
  CHECK((*s.untyped == std::vector<std::byte>{std::byte{2}, std::byte{1}}));
  REQUIRE(s.text);
  CHECK(*s.text == "hi!");
}
