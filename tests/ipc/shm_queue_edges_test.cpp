// Tests for three paths of ipc/shm_queue.hpp's thread forms that the kernel or a dying
// peer must push them onto: a futex wait the kernel refuses (a seccomp filter in a forked
// child) is returned as its OS error by every blocking form that waits (full queue, empty
// queue, a side's lock another process holds, the blocking claims); a consumer that finds
// a closed queue's last send stopped mid-publish, with its waits refused, sleeps out each
// settle pause instead of looking again at full speed; and a side lock whose dead
// holder another process is recovering ends a limited wait with timed_out once its
// deadline has passed, not a hang nor owner_dead.
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
#include "queue_raw_header.hpp"
#include "shm_helpers.hpp"

CORIO_SHM_TEST_TSAN_OPTIONS

using namespace std::chrono_literals;
using corio::ipc::shared_memory;
using corio::ipc::shm_queue;
using corio_test::child;
using corio_test::raw_header;
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
  if (corio_test::skipped_without_seccomp(status)) {
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

TEST_CASE("shm_queue: a moved-from handle is not valid; the new one works", "[ipc][shm_queue]") {
  scoped_name n("edge-move");
  auto q = shm_queue::create(n.name, {.capacity = 4, .max_message_size = 16});
  REQUIRE(q);
  shm_queue moved = std::move(*q);
  CHECK_FALSE(q->valid());  // it used to keep the header's address, mapped by `moved`
  REQUIRE(moved.valid());
  CHECK(moved.try_send(as_bytes("m")));
  shm_queue assigned;
  assigned = std::move(moved);
  CHECK_FALSE(moved.valid());
  REQUIRE(assigned.valid());
  CHECK(assigned.size() == 1);
  CHECK(assigned.capacity() == 4);
  // A claim of a handle moved from since (which the header forbids) is refused, not a
  // use of the null header; releasing it still frees the side.
  {
    auto sender = assigned.claim_sending_blocking(5s);
    REQUIRE(sender);
    shm_queue last = std::move(assigned);
    CHECK(error_of(sender->try_send(as_bytes("m"))) == std::errc::operation_not_permitted);
    sender->release();
    CHECK(last.try_send(as_bytes("m")));  // the side is free again
    CHECK(last.size() == 2);
  }
}

TEST_CASE("shm_queue: a queue /dev/shm cannot hold is no_space_on_device at create, not a SIGBUS later",
          "[ipc][shm_queue][errors]") {
  // In a child with a /dev/shm of its own, 1 MiB. Before create() committed the memory,
  // the 4 MiB queue was made, and its sends raised SIGBUS once they reached a slot past
  // the first MiB.
  child c([] {
    if (!corio_test::private_dev_shm("1m")) {
      return corio_test::no_private_dev_shm;
    }
    if (error_of(shm_queue::create("/q", {.capacity = 4, .max_message_size = 1 << 20})) !=
        std::errc::no_space_on_device) {
      return 2;
    }
    if (error_of(shm_queue::open("/q")) != std::errc::no_such_file_or_directory) {
      return 3;  // removed again
    }
    auto q = shm_queue::create("/q", {.capacity = 4, .max_message_size = 128 << 10});
    if (!q) {
      return 4;
    }
    const std::vector<std::byte> message(128 << 10, std::byte{1});
    for (int i = 0; i < 4; ++i) {  // every slot written
      if (!q->try_send(message)) {
        return 5;
      }
    }
    return 0;
  });
  const int status = c.wait_status();
  if (status == corio_test::no_private_dev_shm) {
    WARN("skipped: no private /dev/shm (neither CAP_SYS_ADMIN nor a user namespace; the child said why)");
    return;
  }
  CHECK(status == 0);
}

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
  if (corio_test::skipped_without_seccomp(status)) {
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

// ---- 3. a deadline passed while another process recovers the side ----

#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
namespace {

// The locker child's shared FUTEX_WAKE_OPs trap (SIGSYS) instead of running. Its first is
// the one its lock's first look makes on the dead holder's word (owner_died with the
// waiters bit: it wakes the word's other sleepers before it says owner_dead). The handler
// holds it there until the test has recovered the side, and until `g_not_before_ns`, past
// the call's deadline; then it answers ENOSYS (corio then makes the same change with a
// CAS and a FUTEX_WAKE). Pointers into the shared page, set before the filter (lock-free
// atomics: async-signal-safe). x86-64 only (the handler sets the result in RAX); not
// under ThreadSanitizer, which defers signal handlers (as process_sync_test's trap).
std::atomic<std::atomic<std::uint32_t>*> g_window{nullptr};
std::atomic<std::atomic<std::uint32_t>*> g_recovered{nullptr};
std::atomic<long long> g_not_before_ns{0};

long long monotonic_ns() {  // corio::clock's clock; async-signal-safe
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1'000'000'000LL + now.tv_nsec;
}

void hold_wake_op(int, siginfo_t*, void* context) {
  static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
  if (auto* window = g_window.exchange(nullptr)) {  // the first trap only
    window->store(1);
    const long long give_up = monotonic_ns() + 20'000'000'000LL;
    while ((g_recovered.load()->load() == 0 || monotonic_ns() < g_not_before_ns.load()) &&
           monotonic_ns() < give_up) {
      ::sched_yield();
    }
  }
}

enum class side { send, receive };

/// A claim of one side of a queue, taken without waiting (recovering a dead holder's side).
struct side_claim {
  std::optional<corio::ipc::shm_queue_sender> sender;
  std::optional<corio::ipc::shm_queue_receiver> receiver;
  bool take(const shm_queue& q, side s) {
    if (s == side::send) {
      if (auto c = q.try_claim_sending()) {
        sender.emplace(std::move(*c));
      }
    } else if (auto c = q.try_claim_receiving()) {
      receiver.emplace(std::move(*c));
    }
    return sender || receiver;
  }
  void release() {
    sender.reset();
    receiver.reset();
  }
};

/// A send or receive (side `s`) that waits 5 ms for the side's lock, then gives up.
std::error_code gave_up_waiting(const shm_queue& q, side s) {
  std::vector<std::byte> buffer(16);
  return s == side::send ? error_of(q.send_blocking(as_bytes("m"), 5ms)) : error_of(q.receive_blocking(buffer, 5ms));
}

/// In the locker child: installs the trap (the handler above) and runs `call`, its
/// outcome into `f[3]`. Returns the child's status.
template <class Call>
int lock_in_window(const shm_queue& q, side s, std::chrono::milliseconds limit, shared_flags& f, Call call) {
  side_claim other;  // a first lock (its sentinel thread) before the filter
  if (!other.take(q, s == side::send ? side::receive : side::send)) {
    return 2;
  }
  other.release();
  struct sigaction on_sys{};
  on_sys.sa_sigaction = hold_wake_op;
  on_sys.sa_flags = SA_SIGINFO;
  ::sigemptyset(&on_sys.sa_mask);
  if (::sigaction(SIGSYS, &on_sys, nullptr) != 0) {
    return 3;
  }
  g_recovered.store(&f[2]);
  g_window.store(&f[1]);
  // Past the call's deadline, which it takes from its own clock read just after this one
  // (a call preempted in between for more than 10 ms finds it not passed yet, and sleeps
  // out the rest on the held lock: timed_out too).
  g_not_before_ns.store(monotonic_ns() + std::chrono::nanoseconds(limit + 10ms).count());
  if (!corio_test::refuse_futex_op(FUTEX_WAKE_OP, SECCOMP_RET_TRAP)) {
    return corio_test::no_seccomp;
  }
  f[3].store(call(q));
  return 0;
}

/// Test 3: side `s`'s holder killed with kill -9 (after a waiter that gave up left the
/// lock word's waiters bit), then `call` (a thread form with `limit`) in a child whose
/// first look sees owner_dead while the test recovers the side and holds it; its recovery
/// then fails (busy) and, the deadline passed, it must try once more and say timed_out.
/// One that ignored the deadline would wait for the test's release (10 s, then succeeded);
/// one that passed owner_dead on would say owner_dead.
template <class Call>
void recovery_case(const char* tag, side s, std::chrono::milliseconds limit, Call call) {
  scoped_name n(tag);
  auto q = shm_queue::create(n.name, {.capacity = 4, .max_message_size = 16});
  REQUIRE(q);
  raw_header raw(n.name);
  auto& word = (s == side::send ? raw->send_lock : raw->receive_lock).lock.word;
  shared_flags f;  // 0: held; 1: the locker in the window; 2: recovered; 3: its outcome; 4: its end
  child holder([&] {
    side_claim mine;
    if (!mine.take(*q, s)) {
      return 1;
    }
    f[0].store(1);
    for (;;) {
      ::pause();
    }
  });
  REQUIRE(corio_test::wait_for(f[0], 1, 10s));
  // A waiter that gives up leaves the waiters bit on the held word, so the dead
  // holder's word reads owner_died | waiters and a locker's first look wakes (traps).
  // (One that was preempted past its limit before it slept set none: it tries again.)
  for (int i = 0; i < 100 && (word.load() & corio::ipc::detail::owner_waiters) == 0; ++i) {
    CHECK(gave_up_waiting(*q, s) == corio::errc::timed_out);
  }
  REQUIRE((word.load() & corio::ipc::detail::owner_waiters) != 0);
  (void)holder.kill9();
  REQUIRE(word.load() == (corio::ipc::detail::owner_died | corio::ipc::detail::owner_waiters));
  child locker([&] {
    corio_test::set_on_return ends(f[4]);
    return lock_in_window(*q, s, limit, f, call);
  });
  const auto end = std::chrono::steady_clock::now() + 20s;
  while (f[1].load() == 0 && f[4].load() == 0 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(200us);
  }
  const bool in_window = f[1].load() == 1;
  side_claim recovered;  // this process recovers the side and holds it while the locker looks
  const bool took = in_window && recovered.take(*q, s);
  f[2].store(1);
  const bool ended = corio_test::wait_for(f[4], 1, 10s);
  recovered.release();  // a locker still waiting takes the side now (and says succeeded)
  const int status = reap(locker, f[4], 10s);
  if (corio_test::skipped_without_seccomp(status)) {
    return;
  }
  CHECK(in_window);
  CHECK(took);
  CHECK(ended);
  CHECK(status == 0);
  CHECK(f[3].load() == timed_out);
  side_claim again;  // recovered and released: free
  CHECK(again.take(*q, s));
}

}  // namespace

TEST_CASE("shm_queue: a passed deadline after another's recovery is timed_out", "[ipc][shm_queue][kill][seccomp]") {
  SECTION("claim_sending_blocking(0)") {
    recovery_case("edge-rec-cs", side::send, 0ms,
                  [](const shm_queue& q) { return outcome_of(q.claim_sending_blocking(0s)); });
  }
  SECTION("send_blocking(20 ms)") {
    recovery_case("edge-rec-s", side::send, 20ms,
                  [](const shm_queue& q) { return outcome_of(q.send_blocking(as_bytes("m"), 20ms)); });
  }
  SECTION("claim_receiving_blocking(20 ms)") {
    recovery_case("edge-rec-cr", side::receive, 20ms,
                  [](const shm_queue& q) { return outcome_of(q.claim_receiving_blocking(20ms)); });
  }
  SECTION("receive_blocking(0)") {
    recovery_case("edge-rec-r", side::receive, 0ms, [](const shm_queue& q) {
      std::vector<std::byte> buffer(16);
      return outcome_of(q.receive_blocking(buffer, 0s));
    });
  }
}
#endif
