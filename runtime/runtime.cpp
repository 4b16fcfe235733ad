#include <corio/runtime/runtime.hpp>

#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <exception>
#include <string>

#include <corio/runtime/internal/runtime_core.hpp>

namespace corio {

// ---------------------------------------------------------------------------------------
// errors

namespace {

class corio_error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "corio"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::shut_down: return "the runtime was shut down";
      case errc::closed: return "closed";
      case errc::full: return "full";
      case errc::empty: return "empty";
      case errc::no_runtime: return "must be called on a corio worker thread";
      case errc::invalid_config: return "invalid runtime configuration";
      case errc::io_uring_refused: return "io_uring refused by the kernel or a seccomp filter";
    }
    return "unknown corio error";
  }
  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<errc>(value)) {
      case errc::io_uring_refused: return std::errc::operation_not_permitted;
      case errc::invalid_config: return std::errc::invalid_argument;
      default: return {value, *this};
    }
  }
};

}  // namespace

const std::error_category& corio_category() noexcept {
  static const corio_error_category category;
  return category;
}

namespace detail {

[[noreturn]] void throw_shut_down() { throw std::system_error(make_error_code(errc::shut_down)); }

runtime_core* current_runtime_or_throw() {
  runtime_core* rt = port::current_runtime();
  if (rt == nullptr) {
    throw std::logic_error("corio::spawn called outside a corio runtime (use runtime::spawn from other threads)");
  }
  return rt;
}

// ---------------------------------------------------------------------------------------
// join states

void join_state_base::complete(bool from_shutdown) noexcept {
  if (!from_shutdown) {
    // The registry keeps its reference until its owner sweeps it (runtime_core::sweep).
    if (worker* w = port::current_worker()) {
      w->note_root_finished();
    }
  }
  // acq_rel: release publishes the result to the awaiter (its acquire load/CAS); acquire
  // makes the awaiter's frame address and waiter_runtime visible to us.
  std::uintptr_t prev = waiter.exchange(kDone, std::memory_order_acq_rel);
  if (prev != 0 && prev != kCancelled) {
    if ((prev & kThread) != 0) {
      reinterpret_cast<thread_waiter*>(prev & ~kThread)->done.release();
    } else if (!from_shutdown || waiter_runtime != runtime) {
      // From our own shutdown, a waiting coroutine of this runtime is itself about to be
      // destroyed and is not resumed; one of another runtime is woken (it then sees
      // `cancelled` and throws errc::shut_down).
      port::wake(std::coroutine_handle<>::from_address(reinterpret_cast<void*>(prev)), waiter_runtime);
    }
  }
  release();
}

void join_state_base::release() noexcept {
  // Read before the decrement: once our reference is gone, another holder may free us.
  runtime_core* rt = runtime;
  unsigned shard = reg_shard;
  // acq_rel: the last owner must see every write of the other before freeing.
  std::uint32_t before = refs.fetch_sub(1, std::memory_order_acq_rel);
  assert((before & ~kRegistered) != 0 && "corio: join state released more often than referenced");
  if (before == 1) {
    destroy();
  } else if (before == (kRegistered | 1)) {
    // Only the registry still holds it. On its own worker, unlink and free it now (memory
    // comes back at once, as in a fork-join tree); elsewhere the owner's sweep does it.
    rt->unlink_if_owner(this, shard);
  }
}

void join_state_base::drop_registry() noexcept {
  // acq_rel: as in release(); the registry flag is the registry's reference.
  if (refs.fetch_sub(kRegistered, std::memory_order_acq_rel) == kRegistered) {
    destroy();
  }
}

void join_state_base::destroy() noexcept {
  if (error && !observed) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "corio: exception escaped a detached task: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "corio: exception escaped a detached task\n");
    }
  }
  free_self(this);
}

void wait_blocking(join_state_base* st) {
  thread_waiter w;
  const std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(&w) | join_state_base::kThread;
  std::uintptr_t expected = st->waiter.load(std::memory_order_acquire);
  for (;;) {
    if (expected == join_state_base::kDone) {
      return;  // acquire load above made the result visible
    }
    // acq_rel: publishes &w to complete(); on failure acquire re-reads the word.
    if (st->waiter.compare_exchange_weak(expected, mine, std::memory_order_acq_rel, std::memory_order_acquire)) {
      break;
    }
  }
  w.done.acquire();
  // acquire: pairs with complete()'s exchange (the semaphore also orders it).
  (void)st->waiter.load(std::memory_order_acquire);
}

// ---------------------------------------------------------------------------------------
// join_wait (see spawn.hpp for the protocol)

bool join_wait::ready() noexcept {
  // acquire: pairs with the acq_rel exchange in complete(); makes the value visible.
  if (m_state->waiter.load(std::memory_order_acquire) != join_state_base::kDone) {
    return false;
  }
  // The result is ready, but a task that only ever awaits finished handles would never
  // yield: charge the cooperative budget and yield once it is spent.
  m_yield = port::consume_budget();
  return !m_yield;
}

bool join_wait::suspend(std::coroutine_handle<> h, const std::stop_token* inherited) {
  if (m_yield) {
    m_yield = false;
    port::yield(h);
    return true;
  }
  m_home = port::current_runtime();
  if (m_home == nullptr) {
    throw std::logic_error("corio::join_handle awaited outside a corio runtime (use runtime::block_on)");
  }
  if (stop_link<stop_fn>::stopped(m_token, inherited)) {
    m_cancelled = true;
    return false;
  }
  m_waiter = h;
  m_state->waiter_runtime = m_home;
  m_stop.arm(m_token, inherited, stop_fn{this});
  m_published = true;
  std::uintptr_t expected = 0;
  // acq_rel: release publishes m_waiter/waiter_runtime to complete() and on_stop(); on
  // failure, acquire makes the result (kDone) visible. After success, *this may be
  // resumed on another thread at any moment: touch nothing.
  if (m_state->waiter.compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(h.address()),
                                              std::memory_order_acq_rel, std::memory_order_acquire)) {
    return true;
  }
  m_published = false;
  m_stop.disarm();
  m_cancelled = expected == join_state_base::kCancelled;  // stopped while arming
  return false;
}

void join_wait::on_stop() noexcept {
  const std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(m_waiter.address());
  std::uintptr_t word = m_state->waiter.load(std::memory_order_acquire);
  for (;;) {
    std::uintptr_t next;
    if (word == 0) {
      next = join_state_base::kCancelled;  // not published yet: make publication fail
    } else if (mine != 0 && word == mine) {
      next = 0;  // published: take our frame back and resume it ourselves
    } else {
      return;  // finished (kDone), or already cancelled
    }
    // acq_rel: pairs with the publishing CAS and with complete()'s exchange.
    if (m_state->waiter.compare_exchange_weak(word, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
      if (next == 0) {
        m_cancelled = true;
        port::wake(m_waiter, m_home);
      }
      return;
    }
  }
}

void join_wait::finish() {
  m_stop.disarm();
  m_published = false;
  if (m_cancelled) {
    std::uintptr_t expected = join_state_base::kCancelled;
    // The handle may be awaited again: clear our mark (unless the task finished since).
    m_state->waiter.compare_exchange_strong(expected, 0, std::memory_order_acq_rel, std::memory_order_relaxed);
    throw std::system_error(cancelled_error(), "corio::join_handle wait cancelled");
  }
  m_state->observed = true;
  if (m_state->cancelled) {
    throw_shut_down();
  }
  if (m_state->error) {
    std::rethrow_exception(m_state->error);
  }
}

join_wait::~join_wait() {
  if (m_published) {
    // Our frame is being destroyed while suspended here (its runtime is shutting down):
    // take it back so that the task's completion does not wake a dead frame.
    std::uintptr_t expected = reinterpret_cast<std::uintptr_t>(m_waiter.address());
    m_state->waiter.compare_exchange_strong(expected, 0, std::memory_order_acq_rel, std::memory_order_relaxed);
  }
}

bool spawn_root(runtime_core* rt, join_state_base* st) noexcept { return rt->spawn_root(st); }

// ---------------------------------------------------------------------------------------
// runtime_core

runtime_core::runtime_core(const runtime_config& cfg)
    : config(cfg), blocking(cfg.max_blocking_threads, cfg.blocking_keep_alive) {
  m_shard_count = config.workers + 1;
  m_shards = std::make_unique<registry_shard[]>(m_shard_count);
  workers.reserve(config.workers);
  for (unsigned i = 0; i < config.workers; ++i) {
    workers.push_back(std::make_unique<worker>(*this, i, config));
  }
}

runtime_core::~runtime_core() { shutdown(); }

std::error_code runtime_core::start(std::string& why) {
  std::error_code failure;
  for (auto& w : workers) {
    try {
      w->thread = std::thread([wp = w.get()] { wp->thread_main(); });
    } catch (const std::system_error& e) {
      failure = e.code();
      why = std::string("cannot start a worker thread: ") + e.what();
      break;
    }
    // Each ring must be created on its own thread; wait for the verdict.
    // acquire: pairs with the worker's release store of startup_state.
    w->startup_state.wait(0, std::memory_order_acquire);
    if (w->startup_state.load(std::memory_order_acquire) == 2) {
      failure = w->startup_error;
      why = w->startup_why;
      break;
    }
  }
  if (failure) {
    shutdown();
  }
  return failure;
}

void runtime_core::schedule_remote(void* task) {
  if (stopping()) {
    return;  // shutdown destroys the task through the registry
  }
  inject.push(task);
  notify_one();
}

bool runtime_core::spawn_root(join_state_base* st) noexcept {
  worker* w = port::current_worker();
  bool own_worker = w != nullptr && &w->rt == this;
  unsigned shard = own_worker ? w->index : m_shard_count - 1;
  registry_shard& s = m_shards[shard];
  if (!own_worker) {
    s.foreign_lock.lock();
    // Checked under the lock: shutdown sets m_stopping under it and then walks the
    // shard, so a foreign root is either refused here or found by the walk.
  }
  // A worker's own shard needs no lock: only that worker touches it while the runtime
  // runs, and shutdown walks it after joining the worker.
  if (m_stopping.load(std::memory_order_acquire)) {
    if (!own_worker) {
      s.foreign_lock.unlock();
    }
    return false;
  }
  // The task and the handle, plus the registry's flag.
  st->refs.store(join_state_base::kRegistered | 2, std::memory_order_relaxed);
  st->reg_shard = shard;
  st->reg_prev = nullptr;
  st->reg_next = s.head;
  if (s.head != nullptr) {
    s.head->reg_prev = st;
  }
  s.head = st;
  ++s.length;
  s.inserted.store(s.inserted.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (s.length >= s.sweep_at) {
    sweep(s);
  }
  if (!own_worker) {
    s.foreign_lock.unlock();
    inject.push(st->frame.address());
    notify_one();
  } else {
    w->schedule_wake(st->frame.address());
  }
  return true;
}

void runtime_core::unlink(registry_shard& s, join_state_base* st) noexcept {
  if (st->reg_prev != nullptr) {
    st->reg_prev->reg_next = st->reg_next;
  } else {
    s.head = st->reg_next;
  }
  if (st->reg_next != nullptr) {
    st->reg_next->reg_prev = st->reg_prev;
  }
  --s.length;
}

void runtime_core::sweep(registry_shard& s) noexcept {
  // Unlinks finished roots and drops the registry's reference to them. Amortized O(1)
  // per spawn: the next sweep comes when the list has doubled past the survivors.
  // acquire: pairs with the release in unlink_if_owner(); a root whose count we take is
  // seen finished by the walk below. A root counted after our exchange keeps its count
  // for the next sweep; shutdown walks everything anyway.
  if (s.left_to_sweep.exchange(0, std::memory_order_acquire) == 0) {
    s.sweep_at = std::max<std::uint64_t>(kSweepMinimum, 2 * s.length);
    return;
  }
  join_state_base* st = s.head;
  while (st != nullptr) {
    join_state_base* next = st->reg_next;
    // acquire: pairs with complete()'s exchange; the task is done with the state.
    if (st->waiter.load(std::memory_order_acquire) == join_state_base::kDone) {
      unlink(s, st);
      st->drop_registry();
    }
    st = next;
  }
  s.sweep_at = std::max<std::uint64_t>(kSweepMinimum, 2 * s.length);
}

void runtime_core::unlink_if_owner(join_state_base* st, unsigned shard) noexcept {
  // Only the shard's own worker touches its list; `st` is still alive here because the
  // registry's reference can be dropped only by that worker (or by shutdown, after the
  // workers have stopped).
  worker* w = port::current_worker();
  if (w == nullptr || &w->rt != this || shard != w->index) {
    // release: our caller's completion of `st` (its waiter word) happens before a sweep
    // that takes this count (see sweep()).
    m_shards[shard].left_to_sweep.fetch_add(1, std::memory_order_release);
    return;
  }
  unlink(m_shards[shard], st);
  st->drop_registry();
}

void runtime_core::sweep_own_shard(unsigned worker_index) noexcept {
  registry_shard& s = m_shards[worker_index];
  if (s.length >= s.sweep_at) {
    sweep(s);
  }
}

void runtime_core::shutdown() {
  if (m_shut_down.exchange(true, std::memory_order_acq_rel)) {
    return;
  }
  // 1. No new roots, no more task pickup; wake everyone.
  m_shards[m_shard_count - 1].foreign_lock.lock();
  m_stopping.store(true, std::memory_order_seq_cst);
  m_shards[m_shard_count - 1].foreign_lock.unlock();
  // Store-load barrier: `stopping` must be visible before we read the parked words
  // below, pairing with park()'s barrier before it re-checks `stopping`.
  store_load_barrier(idle.sleepers);
  // 2. Running blocking jobs finish (their completions are dropped), queued ones go.
  blocking.shutdown();
  // 3. Workers cancel and drain their rings, close them and exit.
  for (auto& w : workers) {
    w->wake_if_parked();
    w->unpark_signal();
  }
  for (auto& w : workers) {
    if (w->thread.joinable()) {
      w->thread.join();
    }
  }
  // 4. Destroy every spawned task that did not finish (its locals' destructors run),
  //    and drop the registry's reference to every root. The registry's reference keeps
  //    each join state alive while destroying one frame releases other roots' handles.
  for (unsigned i = 0; i < m_shard_count; ++i) {
    registry_shard& s = m_shards[i];
    std::lock_guard lock(s.foreign_lock);
    while (join_state_base* st = s.head) {
      unlink(s, st);
      if (st->waiter.load(std::memory_order_acquire) != join_state_base::kDone) {
        std::coroutine_handle<> frame = std::exchange(st->frame, {});
        st->cancelled = true;
        if (frame) {
          frame.destroy();
        }
        st->complete(true);
      }
      st->drop_registry();
    }
  }
  (void)inject.drain();
}

runtime_metrics runtime_core::metrics() const {
  runtime_metrics m;
  for (const auto& w : workers) {
    m.workers.push_back(w->metrics());
  }
  m.global_queue_depth = inject.size();
  std::uint64_t inserted = 0;
  std::uint64_t finished = 0;
  for (unsigned i = 0; i < m_shard_count; ++i) {
    inserted += m_shards[i].inserted.load(std::memory_order_relaxed);
  }
  for (const auto& w : workers) {
    finished += w->roots_finished();
  }
  m.live_tasks = inserted > finished ? inserted - finished : 0;
  m.blocking_threads = blocking.thread_count();
  return m;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// runtime

namespace {

bool is_power_of_two(unsigned v) { return v != 0 && (v & (v - 1)) == 0; }

void validate(const runtime_config& c) {
  auto fail = [](const std::string& what) {
    throw std::system_error(make_error_code(errc::invalid_config), "corio::runtime_config: " + what);
  };
  if (c.workers == 0 || c.workers > 1024) {
    fail("workers = " + std::to_string(c.workers) + " (must be 1..1024)");
  }
  if (!is_power_of_two(c.ring_entries) || c.ring_entries > 32768) {
    fail("ring_entries = " + std::to_string(c.ring_entries) + " (must be a power of two in 1..32768)");
  }
  if (!is_power_of_two(c.local_queue_capacity) || c.local_queue_capacity < 4 || c.local_queue_capacity > 65536) {
    fail("local_queue_capacity = " + std::to_string(c.local_queue_capacity) +
         " (must be a power of two in 4..65536)");
  }
  if (c.global_queue_interval == 0 || c.global_queue_interval > 1000000) {
    fail("global_queue_interval = " + std::to_string(c.global_queue_interval) + " (must be 1..1000000)");
  }
  if (c.max_blocking_threads == 0 || c.max_blocking_threads > 4096) {
    fail("max_blocking_threads = " + std::to_string(c.max_blocking_threads) + " (must be 1..4096)");
  }
  if (c.blocking_keep_alive.count() < 0) {
    fail("blocking_keep_alive is negative");
  }
}

}  // namespace

runtime::runtime(const runtime_config& config) {
  validate(config);
  m_core = std::make_unique<detail::runtime_core>(config);
  std::string why;
  if (std::error_code ec = m_core->start(why)) {
    m_core.reset();
    throw std::system_error(ec, "corio: cannot start the runtime: " + why);
  }
}

runtime::~runtime() { shutdown(); }

void runtime::shutdown() {
  if (m_core) {
    if (port::current_worker() != nullptr && &port::current_worker()->rt == m_core.get()) {
      std::fprintf(stderr, "corio: runtime::shutdown called from its own worker thread\n");
      std::abort();
    }
    m_core->shutdown();
  }
}

runtime_metrics runtime::metrics() const { return m_core->metrics(); }

unsigned runtime::worker_count() const noexcept { return static_cast<unsigned>(m_core->workers.size()); }

}  // namespace corio
