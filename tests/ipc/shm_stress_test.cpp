// Stress test of the process-shared primitives and shm_queue: 4 processes x 2 workers
// hammer a process_mutex, a process_semaphore, an auto-reset process_event, a
// process_condition_variable and a shm_queue at once for a few seconds; every count is
// checked exactly at the end; and openers racing a creator of queues (suite `stress`).
#include <corio/ipc/process_condition_variable.hpp>
#include <corio/ipc/process_event.hpp>
#include <corio/ipc/process_mutex.hpp>
#include <corio/ipc/process_semaphore.hpp>
#include <corio/ipc/shm_queue.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <vector>

#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/time.hpp>

#include "helpers.hpp"
#include "shm_helpers.hpp"

CORIO_SHM_TEST_TSAN_OPTIONS

using namespace std::chrono_literals;
using namespace corio::ipc;

namespace {

constexpr int kProcesses = 4;
constexpr int kTasksPerKind = 2;  // per process
constexpr auto kRunFor = 2500ms;
constexpr std::int64_t kBufferCapacity = 8;

/// Everything the processes share, in one anonymous mapping.
struct arena {
  // the objects
  alignas(64) std::byte mutex_storage[process_mutex::storage_size];
  alignas(64) std::byte sem_storage[process_semaphore::storage_size];
  alignas(64) std::byte token_storage[process_event::storage_size];
  alignas(64) std::byte buffer_mutex_storage[process_mutex::storage_size];
  alignas(64) std::byte not_empty_storage[process_condition_variable::storage_size];
  alignas(64) std::byte not_full_storage[process_condition_variable::storage_size];
  // mutex: a plain counter under the lock, and what each process counted
  alignas(64) std::int64_t locked_counter;
  std::atomic<std::int64_t> mutex_ops;
  // semaphore(3)
  alignas(64) std::atomic<std::int64_t> inside;
  std::atomic<std::int64_t> max_inside;
  std::atomic<std::int64_t> sem_ops;
  // auto-reset event as a token
  alignas(64) std::atomic<std::int64_t> token_holders;
  std::atomic<std::int64_t> token_max;
  std::atomic<std::int64_t> token_ops;
  // condition variable: a bounded buffer (under buffer_mutex)
  alignas(64) std::int64_t buffered;
  std::int64_t producers_left;
  std::atomic<std::int64_t> produced;
  std::atomic<std::int64_t> consumed;
  // shm_queue
  alignas(64) std::atomic<std::int64_t> sent;
  std::atomic<std::int64_t> received;
  std::atomic<std::int64_t> senders_left;
  std::atomic<std::int64_t> order_errors;
  std::atomic<std::int64_t> failures;
};

template <class T>
std::span<std::byte> storage(T& s) {
  return std::as_writable_bytes(std::span(s));
}

void raise_max(std::atomic<std::int64_t>& max, std::int64_t v) {
  for (std::int64_t m = max.load(); v > m && !max.compare_exchange_weak(m, v);) {
  }
}

struct objects {
  process_mutex mutex;
  process_semaphore sem;
  process_event token;
  process_mutex buffer_mutex;
  process_condition_variable not_empty;
  process_condition_variable not_full;
  shm_queue* queue;
  arena* a;
  std::uint32_t process;
};

corio::task<void> hammer_mutex(objects o, corio::clock::time_point end) {
  while (corio::clock::now() < end) {
    auto g = co_await o.mutex.lock();
    if (!g) {
      o.a->failures.fetch_add(1);
      co_return;
    }
    o.a->locked_counter = o.a->locked_counter + 1;
    o.a->mutex_ops.fetch_add(1, std::memory_order_relaxed);
  }
}

corio::task<void> hammer_semaphore(objects o, corio::clock::time_point end) {
  while (corio::clock::now() < end) {
    auto unit = co_await o.sem.acquire();
    if (!unit) {
      o.a->failures.fetch_add(1);
      co_return;
    }
    raise_max(o.a->max_inside, o.a->inside.fetch_add(1) + 1);
    o.a->inside.fetch_sub(1);
    (void)o.sem.release();
    o.a->sem_ops.fetch_add(1, std::memory_order_relaxed);
  }
}

corio::task<void> pass_token(objects o, corio::clock::time_point end) {
  while (corio::clock::now() < end) {
    auto taken = co_await o.token.wait();
    if (!taken) {
      o.a->failures.fetch_add(1);
      co_return;
    }
    raise_max(o.a->token_max, o.a->token_holders.fetch_add(1) + 1);
    o.a->token_holders.fetch_sub(1);
    o.a->token_ops.fetch_add(1, std::memory_order_relaxed);
    o.token.set();
  }
}

corio::task<void> buffer_producer(objects o, corio::clock::time_point end) {
  while (corio::clock::now() < end) {
    auto g = co_await o.buffer_mutex.lock();
    if (!g) {
      o.a->failures.fetch_add(1);
      co_return;
    }
    auto room = co_await o.not_full.wait(*g, [&] { return o.a->buffered < kBufferCapacity; });
    if (!room) {
      o.a->failures.fetch_add(1);
      co_return;
    }
    ++o.a->buffered;
    o.a->produced.fetch_add(1, std::memory_order_relaxed);
    g->unlock();
    o.not_empty.notify_one();
  }
  auto g = co_await o.buffer_mutex.lock();
  if (g) {
    --o.a->producers_left;
    g->unlock();
  }
  o.not_empty.notify_all();  // consumers waiting on an empty buffer may stop now
}

corio::task<void> buffer_consumer(objects o) {
  for (;;) {
    auto g = co_await o.buffer_mutex.lock();
    if (!g) {
      o.a->failures.fetch_add(1);
      co_return;
    }
    auto ready = co_await o.not_empty.wait(*g, [&] { return o.a->buffered > 0 || o.a->producers_left == 0; });
    if (!ready) {
      o.a->failures.fetch_add(1);
      co_return;
    }
    if (o.a->buffered == 0) {
      co_return;  // no producer left and nothing buffered
    }
    --o.a->buffered;
    o.a->consumed.fetch_add(1, std::memory_order_relaxed);
    g->unlock();
    o.not_full.notify_one();
  }
}

corio::task<void> queue_sender(objects o, std::uint32_t id, corio::clock::time_point end) {
  std::uint32_t seq = 0;
  while (corio::clock::now() < end) {
    std::uint32_t m[4] = {id, seq, seq * 7u, 0};
    auto sent = co_await o.queue->send(std::as_bytes(std::span(m, 2 + seq % 3)));
    if (!sent) {
      o.a->failures.fetch_add(1);
      co_return;
    }
    ++seq;
    o.a->sent.fetch_add(1, std::memory_order_relaxed);
  }
  if (o.a->senders_left.fetch_sub(1) == 1) {
    o.queue->close();  // the last sender: receivers drain, then stop
  }
}

corio::task<void> queue_receiver(objects o) {
  std::vector<std::byte> buffer(o.queue->max_message_size());
  std::vector<std::int64_t> last(kProcesses * kTasksPerKind, -1);
  for (;;) {
    auto got = co_await o.queue->receive(buffer);
    if (!got) {
      if (got.error() != corio::errc::closed) {
        o.a->failures.fetch_add(1);
      }
      co_return;
    }
    std::uint32_t m[3] = {};
    std::memcpy(m, buffer.data(), std::min<std::size_t>(*got, sizeof m));
    // Several receivers share the queue, so a sender's messages are spread over them;
    // each receiver still sees any one sender's messages in increasing order.
    if (m[0] >= last.size() || static_cast<std::int64_t>(m[1]) <= last[m[0]]) {
      o.a->order_errors.fetch_add(1);
    } else {
      last[m[0]] = m[1];
    }
    o.a->received.fetch_add(1, std::memory_order_relaxed);
  }
}

corio::task<void> process_main(objects o) {
  const auto end = corio::clock::now() + kRunFor;
  std::vector<corio::join_handle<void>> hs;
  for (int t = 0; t < kTasksPerKind; ++t) {
    hs.push_back(corio::spawn(hammer_mutex(o, end)));
    hs.push_back(corio::spawn(hammer_semaphore(o, end)));
    hs.push_back(corio::spawn(pass_token(o, end)));
    hs.push_back(corio::spawn(buffer_producer(o, end)));
    hs.push_back(corio::spawn(buffer_consumer(o)));
    hs.push_back(corio::spawn(queue_sender(o, o.process * kTasksPerKind + static_cast<std::uint32_t>(t), end)));
    hs.push_back(corio::spawn(queue_receiver(o)));
  }
  for (auto& h : hs) {
    co_await std::move(h);
  }
}

}  // namespace

TEST_CASE("process primitives and shm_queue: 4 processes x 2 workers for seconds, every count exact",
          "[ipc][stress]") {
  auto map = memory_map::anonymous(sizeof(arena) + 4096);
  REQUIRE(map);
  auto* a = ::new (map->data()) arena{};
  REQUIRE(process_mutex::construct(storage(a->mutex_storage)));
  REQUIRE(process_semaphore::construct(storage(a->sem_storage), 0, 3));
  REQUIRE(process_event::construct(storage(a->token_storage), 0, event_mode::auto_reset, true));
  REQUIRE(process_mutex::construct(storage(a->buffer_mutex_storage)));
  REQUIRE(process_condition_variable::construct(storage(a->not_empty_storage)));
  REQUIRE(process_condition_variable::construct(storage(a->not_full_storage)));
  a->producers_left = kProcesses * kTasksPerKind;
  a->senders_left = kProcesses * kTasksPerKind;
  corio_test::scoped_name n("stress");
  auto q = shm_queue::create(n.name, {.capacity = 32, .max_message_size = 16});
  REQUIRE(q);
  std::vector<std::unique_ptr<corio_test::child>> children;
  for (std::uint32_t p = 0; p < kProcesses; ++p) {
    children.push_back(std::make_unique<corio_test::child>([&, p] {
      auto mine = shm_queue::open(n.name);
      if (!mine) {
        return 1;
      }
      objects o{*process_mutex::attach(storage(a->mutex_storage)),
                *process_semaphore::attach(storage(a->sem_storage)),
                *process_event::attach(storage(a->token_storage)),
                *process_mutex::attach(storage(a->buffer_mutex_storage)),
                *process_condition_variable::attach(storage(a->not_empty_storage)),
                *process_condition_variable::attach(storage(a->not_full_storage)),
                &*mine,
                a,
                p};
      corio::runtime rt(corio_test::workers(2));
      rt.block_on(process_main(o));
      return 0;
    }));
  }
  for (auto& c : children) {
    CHECK(c->wait_status() == 0);
  }
  CHECK(a->failures.load() == 0);
  // mutex: the unprotected read-modify-write under the lock lost nothing.
  CHECK(a->mutex_ops.load() > 0);
  CHECK(a->locked_counter == a->mutex_ops.load());
  // semaphore: never more than 3 inside, every unit back.
  CHECK(a->sem_ops.load() > 0);
  CHECK(a->max_inside.load() <= 3);
  CHECK(a->inside.load() == 0);
  CHECK(process_semaphore::attach(storage(a->sem_storage))->value() == 3);
  // auto-reset event: one token holder at a time, the token is back.
  CHECK(a->token_ops.load() > 0);
  CHECK(a->token_max.load() == 1);
  CHECK(process_event::attach(storage(a->token_storage))->is_set());
  // condition variable: everything produced was consumed, bounds kept.
  CHECK(a->produced.load() > 0);
  CHECK(a->produced.load() == a->consumed.load());
  CHECK(a->buffered == 0);
  // shm_queue: every message exactly once, in order per sender and receiver.
  CHECK(a->sent.load() > 0);
  CHECK(a->sent.load() == a->received.load());
  CHECK(a->order_errors.load() == 0);
  CHECK(q->size() == 0);
  CHECK_FALSE(process_mutex::attach(storage(a->mutex_storage))->is_locked());
  WARN("mutex " << a->mutex_ops.load() << ", semaphore " << a->sem_ops.load() << ", event " << a->token_ops.load()
                << ", condition variable " << a->produced.load() << ", shm_queue " << a->sent.load());
}

TEST_CASE("shm_queue: openers racing a creator that makes and removes a queue 10,000 times never hear owner_dead or "
          "\"not a queue\"",
          "[ipc][stress]") {
  // A live creator must never read as dead (owner_dead would tell the caller to remove a
  // queue being built) nor as another type (wrong_protocol_type): whatever instant of
  // create() an open() lands on, it opens the queue, hears "try again", or finds no name.
  corio_test::scoped_name n("openrace");
  auto flags = memory_map::anonymous(4096);
  REQUIRE(flags);
  auto& done = *std::launder(reinterpret_cast<std::atomic<std::uint32_t>*>(flags->data()));
  constexpr int kRounds = 10000;
  corio_test::child creator([&] {
    for (int i = 0; i < kRounds; ++i) {
      auto q = shm_queue::create(n.name, {.capacity = 16, .max_message_size = 256});
      if (!q || !shm_queue::remove(n.name)) {
        done.store(2, std::memory_order_release);
        return 1;
      }
    }
    done.store(1, std::memory_order_release);
    return 0;
  });
  std::map<int, int> seen;  // error value (0: opened) -> count
  while (done.load(std::memory_order_acquire) == 0) {
    auto q = shm_queue::open(n.name);
    ++seen[q ? 0 : q.error().value()];
  }
  CHECK(creator.wait_status() == 0);
  for (const auto& [code, count] : seen) {
    INFO("error " << code << " (" << std::make_error_code(static_cast<std::errc>(code)).message() << ") x" << count);
    CHECK((code == 0 || code == ENOENT || code == EAGAIN));
  }
  WARN("opened " << seen[0] << ", try again " << seen[EAGAIN] << ", no name " << seen[ENOENT]);
}
