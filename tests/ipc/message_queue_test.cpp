// Tests for ipc/message_queue.hpp: POSIX message queues as awaitables — priorities,
// waiting on a full or empty queue without blocking a worker, cancellation, errors, and
// messages between processes.
#include <corio/ipc/message_queue.hpp>

#include <catch2/catch.hpp>

#include <pthread.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>
#include <corio/runtime/timeout.hpp>

#include "helpers.hpp"
#include "limit_helpers.hpp"
#include "queue_helpers.hpp"

using namespace std::chrono_literals;
using corio::ipc::message_queue;
using corio::ipc::message_queue_options;
using corio_test::bytes_of;
using corio_test::error_of;
using corio_test::text_of;

namespace {

/// A queue name unique to this process and test, removed again at the end.
struct scoped_name {
  std::string name;
  explicit scoped_name(const char* tag) : name("/corio-test-" + std::to_string(::getpid()) + "-" + tag) {
    (void)message_queue::remove(name);
  }
  ~scoped_name() { (void)message_queue::remove(name); }
};

message_queue_options small(long max_messages, long message_size = 64) {
  message_queue_options o;
  o.max_messages = max_messages;
  o.message_size = message_size;
  return o;
}

corio::task<std::vector<std::string>> send_three_receive_all(const message_queue* q) {
  const std::string low = "low", high = "high", mid = "mid";
  (void)co_await q->send(bytes_of(low), 1);
  (void)co_await q->send(bytes_of(high), 9);
  (void)co_await q->send(bytes_of(mid), 5);
  std::vector<std::string> got;
  std::vector<std::byte> buf(64);
  for (int i = 0; i < 3; ++i) {
    auto r = co_await q->receive(buf);
    got.push_back(r ? text_of(buf, r->size) + "/" + std::to_string(r->priority) : "error");
  }
  co_return got;
}

}  // namespace

TEST_CASE("message_queue: messages come out whole, highest priority first", "[ipc][message_queue]") {
  scoped_name n("prio");
  auto q = message_queue::create(n.name, small(10));
  REQUIRE(q);
  auto attrs = q->attributes();
  REQUIRE(attrs);
  CHECK(attrs->max_messages == 10);
  CHECK(attrs->message_size == 64);
  corio::runtime rt(corio_test::workers(2));
  auto got = rt.block_on(send_three_receive_all(&*q));
  CHECK(got == std::vector<std::string>{"high/9", "mid/5", "low/1"});
  CHECK(q->attributes()->current_messages == 0);
}

namespace {
corio::task<void> receive_n(const message_queue* q, int n, std::vector<std::string>* out) {
  std::vector<std::byte> buf(64);
  for (int i = 0; i < n; ++i) {
    auto r = co_await q->receive(buf);
    out->push_back(r ? text_of(buf, r->size) : "error: " + r.error().message());
  }
}
corio::task<bool> fill_then_wait_for_room(const message_queue* q, std::vector<std::string>* received) {
  const std::string first = "m0", second = "m1", third_message = "m2", extra = "x";
  auto sent_first = co_await q->send(bytes_of(first));
  auto sent_second = co_await q->send(bytes_of(second));
  if (!sent_first || !sent_second) {
    co_return false;
  }
  bool full_before = error_of(q->try_send(bytes_of(extra))) == corio::errc::full;
  // The third send waits (the queue holds 2) until the receiver below makes room.
  auto receiver = corio::spawn([](const message_queue* q, std::vector<std::string>* out) -> corio::task<void> {
    (void)co_await corio::sleep_for(20ms);
    co_await receive_n(q, 3, out);
  }(q, received));
  auto third = co_await q->send(bytes_of(third_message));
  co_await receiver;
  co_return full_before && third.has_value();
}
}  // namespace

TEST_CASE("message_queue: a send on a full queue waits for room, a receive on an empty one for a message",
          "[ipc][message_queue]") {
  scoped_name n("full");
  auto q = message_queue::create(n.name, small(2));
  REQUIRE(q);
  corio::runtime rt(corio_test::workers(1));  // one worker: nothing may block it
  std::vector<std::string> received;
  CHECK(rt.block_on(fill_then_wait_for_room(&*q, &received)));
  CHECK(received == std::vector<std::string>{"m0", "m1", "m2"});
}

namespace {
/// One receive with `token`: its error, or a null code when it returned a message.
corio::task<std::error_code> receive_error(const message_queue* q, std::stop_token token) {
  std::vector<std::byte> buf(64);
  auto r = co_await q->receive(buf, std::move(token));
  co_return error_of(r);
}
corio::task<std::error_code> stopped_receive(const message_queue* q) {
  std::stop_source stop;
  auto waiter = corio::spawn(receive_error(q, stop.get_token()));
  (void)co_await corio::sleep_for(10ms);
  stop.request_stop();
  co_return co_await waiter;
}
corio::task<std::error_code> timed_receive(const message_queue* q) {
  std::vector<std::byte> buf(64);
  auto r = co_await corio::timeout(q->receive(buf), 20ms);
  co_return r ? std::error_code{} : r.error();
}
}  // namespace

TEST_CASE("message_queue: a waiting receive is cancelled by its token or a timeout and takes nothing",
          "[ipc][message_queue][cancel]") {
  scoped_name n("cancel");
  auto q = message_queue::create(n.name, small(4));
  REQUIRE(q);
  corio::runtime rt(corio_test::workers(2));
  CHECK(rt.block_on(stopped_receive(&*q)) == std::errc::operation_canceled);
  CHECK(rt.block_on(timed_receive(&*q)) == corio::errc::timed_out);
  // A stop racing a send: every message is either returned or left in the queue. The
  // receive reaches its poll in half the rounds (one yield), not in the others.
  auto r = rt.block_on(corio_test::cancel_races_send(&*q, 400, receive_error, [](int round) { return 1 - round % 2; }));
  INFO("received " << r.received << ", left queued " << r.left_queued);
  CHECK(r.other == 0);
  CHECK(r.received + r.left_queued == 400);
  CHECK(q->attributes()->current_messages == 0);
}

TEST_CASE("message_queue: create refuses a taken name; open-or-create must be asked for and keeps the queue as it is",
          "[ipc][message_queue][errors]") {
  scoped_name n("exclusive");
  message_queue_options first = small(2, 16);
  first.mode = 0600;
  auto q = message_queue::create(n.name, first);
  REQUIRE(q);
  // The default create is exclusive: it never silently reuses someone else's queue.
  CHECK(error_of(message_queue::create(n.name)) == std::errc::file_exists);
  CHECK(error_of(message_queue::create(n.name, small(5, 99))) == std::errc::file_exists);
  // Open-or-create, asked for explicitly: the existing queue, with its own attributes.
  message_queue_options open_or_create = small(5, 99);
  open_or_create.mode = 0666;
  open_or_create.exclusive = false;
  auto again = message_queue::create(n.name, open_or_create);
  REQUIRE(again);
  CHECK(again->attributes()->max_messages == 2);
  CHECK(again->attributes()->message_size == 16);
  const std::string one = "x";
  REQUIRE(q->try_send(bytes_of(one)));
  std::vector<std::byte> buf(16);
  CHECK(again->try_receive(buf));  // the same queue
  // A name that is free: open-or-create creates it with the options given.
  scoped_name fresh("open-or-create");
  auto made = message_queue::create(fresh.name, open_or_create);
  REQUIRE(made);
  CHECK(made->attributes()->max_messages == 5);
  CHECK(made->attributes()->message_size == 99);
}

TEST_CASE("message_queue: bad names, sizes and priorities are clear errors", "[ipc][message_queue][errors]") {
  CHECK(error_of(message_queue::create("no-slash")) == std::errc::invalid_argument);
  CHECK(error_of(message_queue::create("/")) == std::errc::invalid_argument);
  CHECK(error_of(message_queue::create("/a/b")) == std::errc::invalid_argument);
  CHECK(error_of(message_queue::create("/..")) == std::errc::invalid_argument);
  CHECK(error_of(message_queue::create("/" + std::string(300, 'x'))) == std::errc::invalid_argument);
  CHECK(error_of(message_queue::open("/corio-test-does-not-exist")) == std::errc::no_such_file_or_directory);
  CHECK(error_of(message_queue::remove("/corio-test-does-not-exist")) == std::errc::no_such_file_or_directory);
  CHECK(error_of(message_queue::create("/corio-test-zero", small(0))) == std::errc::invalid_argument);
  auto setuid = small(2, 16);
  setuid.mode = 04777;  // permission bits only: once this made a setuid queue
  CHECK(error_of(message_queue::create("/corio-test-setuid", setuid)) == std::errc::invalid_argument);

  scoped_name n("errors");
  auto q = message_queue::create(n.name, small(2, 16));
  REQUIRE(q);
  auto again = message_queue::open(n.name);
  REQUIRE(again);

  std::vector<std::byte> small_buf(8);
  std::vector<std::byte> buf(16);
  const std::string too_long(17, 'x'), one = "x";
  CHECK(error_of(q->try_send(bytes_of(too_long))) == std::errc::message_size);
  CHECK(error_of(q->try_send(bytes_of(one), 40000)) == std::errc::invalid_argument);
  CHECK(error_of(q->try_receive(buf)) == corio::errc::empty);
  REQUIRE(q->try_send(bytes_of(one)));
  CHECK(error_of(q->try_receive(small_buf)) == std::errc::message_size);  // shorter than message_size
  auto got = again->try_receive(buf);  // another handle on the same queue
  REQUIRE(got);
  CHECK(got->size == 1);
  auto sender = message_queue::open(n.name, message_queue::access::send_only);
  auto receiver = message_queue::open(n.name, message_queue::access::receive_only);
  REQUIRE(sender);
  REQUIRE(receiver);
  CHECK(error_of(sender->try_receive(buf)) == std::errc::bad_file_descriptor);
  CHECK(error_of(receiver->try_send(bytes_of(one))) == std::errc::bad_file_descriptor);
  REQUIRE(sender->try_send(bytes_of(one)));
  CHECK(receiver->try_receive(buf));
}

namespace {
corio::task<long> receive_from_child(const message_queue* q, int n) {
  std::vector<std::byte> buf(64);
  long sum = 0;
  for (int i = 0; i < n; ++i) {
    // A child that fails stops sending: time out rather than hang.
    auto r = co_await corio::timeout(q->receive(buf), 10s);
    if (!r || r->size != sizeof(int)) {
      co_return -1;
    }
    int v = 0;
    std::memcpy(&v, buf.data(), sizeof v);
    sum += v;
  }
  co_return sum;
}
}  // namespace

TEST_CASE("message_queue: messages cross processes; the child sends with send_blocking", "[ipc][message_queue]") {
  scoped_name n("fork");
  auto q = message_queue::create(n.name, small(4));  // smaller than the stream: the child waits
  REQUIRE(q);
  constexpr int kMessages = 500;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto mine = message_queue::open(n.name);
    int bad = mine ? 0 : 1;
    for (int i = 1; i <= kMessages && bad == 0; ++i) {
      bad = mine->send_blocking(std::as_bytes(std::span(&i, 1))) ? 0 : 2;
    }
    ::_exit(bad);
  }
  long sum = 0;
  {
    corio::runtime rt(corio_test::workers(2));
    sum = rt.block_on(receive_from_child(&*q, kMessages));
  }
  if (sum < 0) {
    ::kill(child, SIGKILL);  // it may be waiting for room that will never come
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(sum == static_cast<long>(kMessages) * (kMessages + 1) / 2);
}

namespace {
corio::task<int> many_receivers(const message_queue* q, int receivers, int per_receiver, std::atomic<int>* total) {
  std::vector<corio::join_handle<void>> hs;
  for (int r = 0; r < receivers; ++r) {
    hs.push_back(corio::spawn([](const message_queue* q, int n, std::atomic<int>* total) -> corio::task<void> {
      std::vector<std::byte> buf(64);
      for (int i = 0; i < n; ++i) {
        if (auto m = co_await q->receive(buf)) {
          total->fetch_add(1);
        }
      }
    }(q, per_receiver, total)));
  }
  const std::string job = "job";
  for (int i = 0; i < receivers * per_receiver; ++i) {
    if (!co_await q->send(bytes_of(job))) {
      co_return -1;
    }
  }
  for (auto& h : hs) {
    co_await h;
  }
  co_return total->load();
}
}  // namespace

TEST_CASE("message_queue: several receivers share one queue, each message goes to exactly one",
          "[ipc][message_queue]") {
  scoped_name n("share");
  auto q = message_queue::create(n.name, small(3));
  REQUIRE(q);
  corio::runtime rt(corio_test::workers(2));
  std::atomic<int> total{0};
  CHECK(rt.block_on(many_receivers(&*q, 4, 250, &total)) == 1000);
  CHECK(q->attributes()->current_messages == 0);
}

using corio_test::bounded_call;
using corio_test::timed_out_after;

TEST_CASE("message_queue: the blocking forms take a limit: they time out on an empty or full queue, taking and "
          "sending nothing, and serve a ready queue whatever the limit",
          "[ipc][message_queue][blocking]") {
  scoped_name n("blocklimit");
  auto q = message_queue::create(n.name, small(1, 16));
  REQUIRE(q);
  std::vector<std::byte> buf(16);
  const std::string one = "one", two = "two";
  // A wait that ignores its limit is ended by a message (or room): not timed_out.
  const auto feed = [&] { (void)q->try_send(bytes_of(one)); };
  CHECK(bounded_call([&] { return timed_out_after(20ms, [&] { return error_of(q->receive_blocking(buf, 20ms)); }); },
                     feed) == std::error_code{});
  CHECK(bounded_call([&] { return error_of(q->receive_blocking(buf, 0s)); }, feed) == corio::errc::timed_out);
  CHECK(bounded_call([&] { return error_of(q->receive_blocking(buf, -5s)); }, feed) == corio::errc::timed_out);
  CHECK(bounded_call([&] { return error_of(q->receive_blocking(buf, std::chrono::hours::min())); }, feed) ==
        corio::errc::timed_out);
  CHECK(q->attributes()->current_messages == 0);
  // What can be done at once is done whatever the limit.
  REQUIRE(q->send_blocking(bytes_of(one), 0, 0s));
  const auto drain = [&] {
    std::vector<std::byte> b(16);
    (void)q->try_receive(b);
  };
  CHECK(bounded_call([&] {
          return timed_out_after(20ms, [&] { return error_of(q->send_blocking(bytes_of(two), 0, 20ms)); });
        }, drain) == std::error_code{});
  CHECK(bounded_call([&] { return error_of(q->send_blocking(bytes_of(two), 0, 0s)); }, drain) ==
        corio::errc::timed_out);
  CHECK(bounded_call([&] { return error_of(q->send_blocking(bytes_of(two), 0, std::chrono::nanoseconds::min())); },
                     drain) == corio::errc::timed_out);
  auto got = q->receive_blocking(buf, 0s);
  REQUIRE(got);
  CHECK(text_of(buf, got->size) == "one");  // the timed-out sends sent nothing
  CHECK(q->attributes()->current_messages == 0);
  // Another thread serves a waiting call before its limit; a limit too large for the
  // clock is "never", not "already passed".
  for (const corio::saturating_duration limit : {corio::saturating_duration(30s),
                                                 corio::saturating_duration(std::chrono::hours::max())}) {
    std::thread late([&] {
      std::this_thread::sleep_for(10ms);
      (void)q->send_blocking(bytes_of(two), 0, 30s);
    });
    auto r = q->receive_blocking(buf, limit);
    late.join();
    REQUIRE(r);
    CHECK(text_of(buf, r->size) == "two");
    REQUIRE(q->send_blocking(bytes_of(one), 0, 0s));
    std::thread taker([&] {
      std::this_thread::sleep_for(10ms);
      std::vector<std::byte> b(16);
      (void)q->receive_blocking(b, 30s);
    });
    auto sent = q->send_blocking(bytes_of(two), 0, limit);
    taker.join();
    CHECK(sent);
    auto r2 = q->receive_blocking(buf, 0s);
    REQUIRE(r2);
    CHECK(text_of(buf, r2->size) == "two");
  }
}

TEST_CASE("message_queue: a blocking receive with a limit is served by another process before it",
          "[ipc][message_queue][blocking]") {
  scoped_name n("blocklimitfork");
  auto q = message_queue::create(n.name, small(2, 16));
  REQUIRE(q);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::usleep(20'000);
    auto mine = message_queue::open(n.name);
    const std::string hello = "hello";
    ::_exit(mine && mine->send_blocking(bytes_of(hello), 3, 30s) ? 0 : 1);
  }
  std::vector<std::byte> buf(16);
  auto got = q->receive_blocking(buf, 30s);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  REQUIRE(got);
  CHECK(text_of(buf, got->size) == "hello");
  CHECK(got->priority == 3);
}

namespace {
extern "C" void message_queue_test_ignore_signal(int) {}
}  // namespace

TEST_CASE("message_queue: signals neither end a blocking form's limited wait early nor extend it",
          "[ipc][message_queue][blocking]") {
  // A handler installed without SA_RESTART: each signal interrupts the wait (EINTR).
  struct sigaction action {};
  struct sigaction previous {};
  action.sa_handler = message_queue_test_ignore_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;
  REQUIRE(::sigaction(SIGUSR1, &action, &previous) == 0);
  scoped_name n("blocklimiteintr");
  auto q = message_queue::create(n.name, small(1, 16));
  REQUIRE(q);
  std::vector<std::byte> buf(16);
  // seq_cst (the default): flags between the test and its threads, nothing subtle.
  std::atomic<bool> started{false};
  std::atomic<bool> finished{false};
  std::error_code ended;
  std::thread waiter([&] {
    started.store(true);
    ended = timed_out_after(100ms, [&] { return error_of(q->receive_blocking(buf, 100ms)); });
    finished.store(true);
  });
  while (!started.load()) {
    std::this_thread::yield();
  }
  // A signal every 2 ms for up to 10 s: a wait that started its limit again at each EINTR
  // would still be waiting when they stop (and the check of `finished` fails); one that
  // ended at the first EINTR would not have timed out after 100 ms.
  int sent = 0;
  for (; sent < 5000 && !finished.load(); ++sent) {
    (void)::pthread_kill(waiter.native_handle(), SIGUSR1);
    std::this_thread::sleep_for(2ms);
  }
  const bool finished_while_signalled = finished.load();
  if (!finished_while_signalled) {
    const std::string end = "end";
    (void)q->try_send(bytes_of(end));
  }
  waiter.join();
  REQUIRE(::sigaction(SIGUSR1, &previous, nullptr) == 0);
  CHECK(finished_while_signalled);
  CHECK(ended == std::error_code{});  // timed_out, and not before the 100 ms
  CHECK(sent > 1);
}
