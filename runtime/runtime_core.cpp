// runtime_core (runtime/internal/runtime_core.hpp): starting the workers, queueing tasks
// from other threads, the registry of spawned tasks (insert, sweep, unlink), shutdown in
// its four steps (the last one on a helper thread when spawn_blocking jobs outlive the
// caller's limit), the metrics snapshot, and the list of live cores that a join handle
// dropped off a runtime's workers checks before it touches one.
#include <corio/runtime/internal/runtime_core.hpp>

#include <pthread.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <corio/runtime/detail/join_state.hpp>
#include <corio/runtime/port.hpp>
#include <corio/runtime/time.hpp>

namespace corio::detail {

namespace {

// The cores alive now, for releases off every runtime's workers (see unlink_if_owner).
// Never destroyed: a thread may drop a handle while the program exits.
struct live_core_list {
  std::mutex lock;
  std::vector<runtime_core*> cores;
};

live_core_list& live_cores() {
  static auto* list = [] {
    auto* made = new live_core_list;
    // A child forked while another thread held the lock must not inherit it held (a
    // runtime made in the child would wait for ever): fork waits for the lock and both
    // sides release it.
    ::pthread_atfork([] { live_cores().lock.lock(); }, [] { live_cores().lock.unlock(); },
                     [] { live_cores().lock.unlock(); });
    return made;
  }();
  return *list;
}

}  // namespace

runtime_core::runtime_core(const runtime_config& cfg)
    : config(cfg), blocking(cfg.max_blocking_threads, cfg.blocking_keep_alive) {
  m_shard_count = config.workers + 1;
  m_shards = std::make_unique<registry_shard[]>(m_shard_count);
  workers.reserve(config.workers);
  for (unsigned i = 0; i < config.workers; ++i) {
    workers.push_back(std::make_unique<worker>(*this, i, config));
  }
  live_core_list& live = live_cores();
  std::lock_guard lock(live.lock);
  live.cores.push_back(this);
}

runtime_core::~runtime_core() {
  {
    // First: a release off our workers from now on leaves us alone (unlink_if_owner).
    live_core_list& live = live_cores();
    std::lock_guard lock(live.lock);
    std::erase(live.cores, this);
  }
  shutdown();
}

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

void runtime_core::unlink_if_owner(runtime_core* rt, join_state_base* st, unsigned shard) noexcept {
  // Only the shard's own worker touches its list; `st` is still alive here because the
  // registry's reference can be dropped only by that worker (or by shutdown, after the
  // workers have stopped).
  worker* w = port::current_worker();
  if (w != nullptr && &w->rt == rt) {
    if (shard == w->index) {
      rt->unlink(rt->m_shards[shard], st);
      st->drop_registry();
      return;
    }
    // Another of its workers: the core lives until that worker has been joined.
    // release: our caller's completion of `st` (its waiter word) happens before a sweep
    // that takes this count (see sweep()).
    rt->m_shards[shard].left_to_sweep.fetch_add(1, std::memory_order_release);
    return;
  }
  // Any other thread: since our caller's decrement, a shutdown on another thread may have
  // freed `st` and the whole core. Count only while the core is still listed: its
  // destructor unlists it (under the same lock) before anything is freed. The address
  // of a core destroyed and a new one made in its place would get a spurious count, which
  // costs its sweep one walk. Uncounted, the state is reclaimed by the sweep of a later
  // count or by the shutdown that is under way.
  if (auto hook = g_test_hook_off_runtime_release.load(std::memory_order_relaxed)) {
    hook();
  }
  live_core_list& live = live_cores();
  std::lock_guard lock(live.lock);
  if (std::find(live.cores.begin(), live.cores.end(), rt) != live.cores.end() && shard < rt->m_shard_count) {
    // release: as above.
    rt->m_shards[shard].left_to_sweep.fetch_add(1, std::memory_order_release);
  }
}

void runtime_core::sweep_own_shard(unsigned worker_index) noexcept {
  registry_shard& s = m_shards[worker_index];
  if (s.length >= s.sweep_at) {
    sweep(s);
  }
}

bool runtime_core::shutdown(std::chrono::nanoseconds blocking_limit) {
  if (m_shut_down.exchange(true, std::memory_order_acq_rel)) {
    // Not the first call: wait (up to the limit) for the first one to end.
    std::unique_lock lock(m_finish_lock);
    return m_finish_cv.wait_until(lock, deadline_after(blocking_limit), [&] { return m_finished; });
  }
  // 1. No new roots, no more task pickup; wake everyone.
  m_shards[m_shard_count - 1].foreign_lock.lock();
  m_stopping.store(true, std::memory_order_seq_cst);
  m_shards[m_shard_count - 1].foreign_lock.unlock();
  // Store-load barrier: `stopping` must be visible before we read the parked words
  // below, pairing with park()'s barrier before it re-checks `stopping`.
  store_load_barrier(idle.sleepers);
  // 2. Running blocking jobs finish (their completions are dropped: schedule_remote
  //    refuses once stopping), queued ones go; we wait at most `blocking_limit`.
  bool jobs_ended = blocking.shutdown_for(blocking_limit);
  stop_workers();
  // 4. Only once no job runs: a running job's awaiter, and the function it runs, live in
  //    a task's frame, which step 4 destroys. Jobs still running: a helper does it later.
  if (!jobs_ended && hand_finish_to_helper()) {
    return false;
  }
  finish_shutdown();
  return true;
}

bool runtime_core::hand_finish_to_helper() noexcept {
  try {
    // The helper's reference keeps the core (the pool the job threads touch, the
    // registry, the inject queue a finished job's wake looks at) alive until it is done.
    std::thread([self = shared_from_this()] { self->finish_shutdown(); }).detach();
    return true;
  } catch (const std::exception&) {
    return false;  // not owned by a shared_ptr, or no thread to spare: finish here, waiting
  }
}

void runtime_core::finish_shutdown() {
  blocking.shutdown();  // waits for jobs still running, joins their threads
  destroy_unfinished_tasks();
  std::lock_guard lock(m_finish_lock);
  m_finished = true;
  m_finish_cv.notify_all();
}

// 3. Workers cancel and drain their rings, close them and exit.
void runtime_core::stop_workers() {
  for (auto& w : workers) {
    w->wake_if_parked();
    w->unpark_signal();
  }
  for (auto& w : workers) {
    if (w->thread.joinable()) {
      w->thread.join();
    }
  }
}

// 4. Destroy every spawned task that did not finish (its locals' destructors run), and
//    drop the registry's reference to every root. The registry's reference keeps each
//    join state alive while destroying one frame releases other roots' handles.
void runtime_core::destroy_unfinished_tasks() noexcept {
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

}  // namespace corio::detail
