// Tests for paths of ipc/shm_queue.hpp's thread forms that the kernel or a dying peer
// must push them onto: a futex wait the kernel refuses (a seccomp filter in a forked
// child) is returned as its OS error by every blocking form that waits (full queue, empty
// queue, a side's lock another process holds, the blocking claims); and a consumer that
// finds a closed queue's last send stopped mid-publish, with its waits refused, sleeps
// out each settle pause instead of looking again at full speed.
#include <corio/ipc/shm_queue.hpp>

#include <catch2/catch.hpp>

#include <linux/futex.h>
#include <signal.h>
#include <sched.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <corio/ipc/detail/shm_queue_layout.hpp>
#include <corio/runtime/time.hpp>

#include "futex_refusal.hpp"
#include "shm_helpers.hpp"

CORIO_SHM_TEST_TSAN_OPTIONS

using namespace std::chrono_literals;
using corio::ipc::shared_memory;
using corio::ipc::shm_queue;
using corio_test::child;
using corio_test::scoped_name;
using corio_test::shared_flags;
using step = corio::ipc::detail::queue_step;

namespace {

std::span<const std::byte> as_bytes(const char* s) { return std::as_bytes(std::span(s, std::strlen(s))); }

template <class R>
std::error_code error_of(const R& r) {
  return r ? std::error_code{} : r.error();
}

/// What a thread form returned, as a child reports it through a shared flag.
enum outcome : std::uint32_t { not_reached = 0, refused, timed_out, owner_dead, succeeded, other };

/// The outcome of `r`; `refusal` is the error of a refused futex wait.
template <class R>
std::uint32_t outcome_of(const R& r, std::error_code refusal = {}) {
  if (r) {
    return succeeded;
  }
  if (refusal && r.error() == refusal) {
    return refused;
  }
  if (r.error() == corio::errc::timed_out) {
    return timed_out;
  }
  return r.error() == std::errc::owner_dead ? owner_dead : other;
}

/// The header of queue `name` through a raw mapping: the tests read its words (and set a
/// bit a consumer would have set).
struct raw_header {
  shared_memory memory;
  explicit raw_header(const std::string& name) : memory(*shared_memory::open(name)) {}
  corio::ipc::detail::queue_header* operator->() {
    return reinterpret_cast<corio::ipc::detail::queue_header*>(memory.bytes().data());
  }
};

/// Waits up to `limit` for `flag` to be 1 (a child's end or a step), then reaps the child:
/// its exit status, or kills it (-1) if it never got there.
int reap(child& c, std::atomic<std::uint32_t>& flag, std::chrono::seconds limit) {
  if (!corio_test::wait_for(flag, 1, limit)) {
    (void)c.kill9();
    return -1;
  }
  return c.wait_status();
}

// ---- 1. refused futex waits ----

/// The thread forms that wait, in the order refused_calls() makes them.
const char* const refused_call_names[] = {
    "held: send_blocking(1s)",
    "held: send_blocking()",
    "held: receive_blocking(1s)",
    "held: receive_blocking()",
    "held: claim_sending_blocking(1s)",
    "held: claim_sending_blocking()",
    "held: claim_receiving_blocking(1s)",
    "held: claim_receiving_blocking()",
    "full: send_blocking(1s)",
    "full: send_blocking()",
    "empty: receive_blocking(1s)",
    "empty: receive_blocking()",
    "full, claimed: send_blocking(1s)",
    "full, claimed: send_blocking()",
    "empty, claimed: receive_blocking(1s)",
    "empty, claimed: receive_blocking()",
};
constexpr int refused_call_count = sizeof refused_call_names / sizeof refused_call_names[0];

/// In the filtered child: each thread form that must wait, once, its outcome into
/// `out[i]`: on `held`, whose two sides' locks the test holds (the wait for the lock),
/// on `full`, one message in its one slot, and on `empty`. A form that looked again at
/// once after a refused wait would return timed_out after 1 s, or never (the test kills
/// the child: not_reached from there on).
void refused_calls(const shm_queue& held, const shm_queue& full, const shm_queue& empty, shared_flags& out,
                   std::error_code refusal) {
  int i = 0;
  const auto note = [&](const auto& r) { out[i++].store(outcome_of(r, refusal)); };
  std::vector<std::byte> buffer(8);
  const auto m = as_bytes("m");
  note(held.send_blocking(m, 1s));
  note(held.send_blocking(m));
  note(held.receive_blocking(buffer, 1s));
  note(held.receive_blocking(buffer));
  note(held.claim_sending_blocking(1s));
  note(held.claim_sending_blocking());
  note(held.claim_receiving_blocking(1s));
  note(held.claim_receiving_blocking());
  note(full.send_blocking(m, 1s));
  note(full.send_blocking(m));
  note(empty.receive_blocking(buffer, 1s));
  note(empty.receive_blocking(buffer));
  auto sender = full.claim_sending_blocking(0s);  // free sides: taken without a wait
  auto receiver = empty.claim_receiving_blocking(0s);
  if (!sender || !receiver) {
    return;  // the rest stays not_reached
  }
  note(sender->send_blocking(m, 1s));
  note(sender->send_blocking(m));
  note(receiver->receive_blocking(buffer, 1s));
  note(receiver->receive_blocking(buffer));
}

/// Test 1 with the filter answering `error` (ENOSYS or EPERM) to every shared FUTEX_WAIT.
void refused_case(int error) {
  scoped_name held_name("edge-held");
  scoped_name full_name("edge-full");
  scoped_name empty_name("edge-empty");
  auto held = shm_queue::create(held_name.name, {.capacity = 1, .max_message_size = 8});
  auto full = shm_queue::create(full_name.name, {.capacity = 1, .max_message_size = 8});
  auto empty = shm_queue::create(empty_name.name, {.capacity = 1, .max_message_size = 8});
  REQUIRE((held && full && empty));
  REQUIRE(full->try_send(as_bytes("queued")));
  auto sending = held->try_claim_sending();  // both of `held`'s locks, held by this process
  auto receiving = held->try_claim_receiving();
  REQUIRE((sending && receiving));
  shared_flags out;  // [0, refused_call_count): outcomes; 63: the child's end
  child refusing([&] {
    corio_test::set_on_return ends(out[63]);
    std::vector<std::byte> buffer(8);
    (void)empty->try_receive(buffer);  // a first lock (its sentinel thread) before the filter
    if (!corio_test::refuse_futex_op(FUTEX_WAIT, corio_test::refused_with(error))) {
      return corio_test::no_seccomp;
    }
    refused_calls(*held, *full, *empty, out, std::error_code(error, std::system_category()));
    return 0;
  });
  const int status = reap(refusing, out[63], 30s);
  if (status == corio_test::no_seccomp) {
    WARN("skipped: the kernel or container refuses a seccomp filter");
    return;
  }
  CHECK(status == 0);
  for (int i = 0; i < refused_call_count; ++i) {
    INFO(refused_call_names[i]);
    CHECK(out[i].load() == refused);
  }
  // Nothing was sent or taken.
  CHECK(held->size() == 0);
  CHECK(full->size() == 1);
  CHECK(empty->size() == 0);
}

}  // namespace

TEST_CASE("shm_queue: a refused futex wait is an OS error in each thread form", "[ipc][shm_queue][seccomp]") {
  SECTION("ENOSYS") { refused_case(ENOSYS); }
  SECTION("EPERM") { refused_case(EPERM); }
}

// ---- 2. the settle pause slept out ----

namespace {

/// A child's hook (each child sets its own): where it reports, in shared memory.
std::atomic<std::uint32_t>* g_hook_flag = nullptr;

/// The producer's: stops its send at before_wake (marked `publishing`, after its last look
/// at the closed bit, the producers' lock held) until it is killed.
void stop_before_wake(step s) {
  if (s == step::before_wake) {
    g_hook_flag->store(1);
    for (;;) {
      ::pause();
    }
  }
}

/// The consumer's: counts its looks that found the queue closed and empty with a send
/// still able to publish (each followed by a settle pause).
void count_unsettled(step s) {
  if (s == step::unsettled) {
    g_hook_flag->fetch_add(1);
  }
}

/// The consumer's limit, and the most looks its pauses (50 µs doubling to 1 ms, each slept
/// out: at least its length, or to the deadline) leave room for in it: the first look,
/// one after each pause that fits (five take 1.55 ms, then 98 of 1 ms), and one after the
/// deadline: 105; the bound allows 20 more. A slow machine only makes fewer. A consumer
/// that looked again at once after each refused wait made thousands (7,500 to 11,500 on
/// a 2-core VM).
constexpr auto settle_limit = 100ms;
constexpr std::uint32_t most_settle_looks = 1 + 5 + 98 + 1 + 20;

/// Test 2 with the consumer's receive_blocking of the queue (`claimed` false) or of a
/// claim of the consumers' side.
void settle_case(const char* tag, bool claimed) {
  scoped_name n(tag);
  auto q = shm_queue::create(n.name, {.capacity = 4, .max_message_size = 16});
  REQUIRE(q);
  raw_header raw(n.name);
  // The waiters bit a consumer asleep on the empty queue sets (set here, so that no
  // consumer of the test's own takes the consumers' lock later): a send then marks
  // `publishing` before its wake.
  raw->published.fetch_or(corio::ipc::detail::shm::waiters_bit);
  shared_flags f;  // 0: the send stopped; 1: the consumer's looks; 2: its outcome; 3: its end
  child producer([&] {
    g_hook_flag = &f[0];
    corio::ipc::detail::g_shm_queue_test_hook.store(&stop_before_wake);
    (void)q->try_send(as_bytes("late"));
    return 1;  // not reached: the hook stops it
  });
  REQUIRE(corio_test::wait_for(f[0], 1, 10s));
  REQUIRE(raw->publishing.load() == 1);
  q->close();
  child consumer([&] {
    corio_test::set_on_return ends(f[3]);
    std::vector<std::byte> buffer(16);
    (void)q->try_receive(buffer);  // a first lock (its sentinel thread) before the filter
    auto claim = claimed ? q->try_claim_receiving() : corio::result<corio::ipc::shm_queue_receiver>{};
    if (!claim) {
      return 2;
    }
    g_hook_flag = &f[1];
    corio::ipc::detail::g_shm_queue_test_hook.store(&count_unsettled);
    if (!corio_test::refuse_futex_op(FUTEX_WAIT, corio_test::refused_with(ENOSYS))) {
      return corio_test::no_seccomp;
    }
    auto got = claimed ? claim->receive_blocking(buffer, settle_limit) : q->receive_blocking(buffer, settle_limit);
    f[2].store(outcome_of(got, std::error_code(ENOSYS, std::system_category())));
    return 0;
  });
  const int status = reap(consumer, f[3], 30s);
  if (status == corio_test::no_seccomp) {
    WARN("skipped: the kernel or container refuses a seccomp filter");
    return;
  }
  CHECK(status == 0);
  CHECK(f[2].load() == timed_out);  // the send stayed unsettled: no end, no message
  const std::uint32_t looks = f[1].load();
  CHECK(looks >= 1);  // it found the send unsettled (and paused)
  CHECK(looks <= most_settle_looks);
  // Killed there: the producers' lock's recovery clears the mark, and the end comes.
  (void)producer.kill9();
  std::vector<std::byte> buffer(16);
  CHECK(error_of(q->try_receive(buffer)) == corio::errc::closed);
}

}  // namespace

TEST_CASE("shm_queue: refused settle waits are slept out, not looked at again at once",
          "[ipc][shm_queue][seccomp][close]") {
  SECTION("the queue's receive_blocking") { settle_case("edge-settle-q", false); }
  SECTION("a claim's receive_blocking") { settle_case("edge-settle-c", true); }
}
