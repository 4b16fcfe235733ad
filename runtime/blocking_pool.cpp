// The blocking pool behind spawn_blocking (runtime/internal/blocking_pool.hpp): submitting and
// withdrawing jobs, the threads that run them and retire after the keep-alive, and shutdown.
#include <corio/runtime/internal/blocking_pool.hpp>
#include <corio/runtime/internal/test_hooks.hpp>

#include <algorithm>
#include <atomic>

#include <corio/runtime/time.hpp>

namespace corio::detail {

namespace {
// Test hook (set_blocking_submit_test_hook, declared in internal/test_hooks.hpp): called
// as submit() begins, before it takes the lock, i.e. in the window between
// spawn_blocking's last look at its stop token and the queueing. relaxed: the test sets
// it before the await that should meet it and clears it after; the function publishes
// nothing, and whatever it touches the test orders by its own means (the runtime's
// hand-offs).
std::atomic<void (*)()> g_submit_hook{nullptr};
}  // namespace

bool blocking_pool::submit(blocking_job* job) {
  if (auto hook = g_submit_hook.load(std::memory_order_relaxed)) [[unlikely]] {
    hook();
  }
  std::unique_lock lock(m_mutex);
  if (m_stopping) {
    return false;
  }
  join_exited(lock);  // (drops the lock for a moment: look at m_stopping again)
  if (m_stopping) {
    return false;
  }
  // A stop that came before this point, and after the awaiter's last look at its token,
  // found the job not queued and flagged it (withdraw(), under this lock): refuse it, so
  // it never runs. From here to the push the lock is held, so a later stop finds it
  // queued and withdraws it, or finds it started.
  if (job->withdrawn) {
    return false;
  }
  // An idle thread woken for an earlier job stays counted in m_idle until it wakes up
  // and takes that job, so only idle threads beyond the queued jobs can take this one.
  // Without this count, two jobs queued before the woken thread ran would share it, and
  // the second would wait for the first to end: a deadlock when it is the first's
  // partner (a futex wait and its waker, both on the pool).
  if (m_jobs.size() >= m_idle && m_live < m_max_threads) {
    // Start the thread before queuing: if that throws, nothing refers to `job`.
    try {
      m_threads.emplace_back([this] { thread_main(); });
      ++m_live;
      ++m_in_loop;
    } catch (...) {
      if (m_live == 0) {
        throw;  // no thread would ever take it
      }
      // (The system refused a thread: every live thread, idle or running a job, comes
      // back to the queue, so one takes the job once it is free. A thread whose
      // keep-alive just ran out still counts in m_live until it has the mutex again, and
      // then finds the job.)
    }
  }
  m_jobs.push_back(job);
  if (m_idle > 0) {
    m_work.notify_one();
  }
  return true;
}

bool blocking_pool::withdraw(blocking_job* job) {
  std::lock_guard lock(m_mutex);
  auto it = std::find(m_jobs.begin(), m_jobs.end(), job);
  if (it == m_jobs.end()) {
    job->withdrawn = true;  // not queued yet (a submit to come refuses it) or started
    return false;
  }
  m_jobs.erase(it);
  return true;
}

void blocking_pool::join_exited(std::unique_lock<std::mutex>& lock) {
  if (m_exited.empty()) {
    return;
  }
  std::vector<std::thread> done;
  for (auto id : m_exited) {
    auto it = std::find_if(m_threads.begin(), m_threads.end(), [&](const std::thread& t) { return t.get_id() == id; });
    if (it != m_threads.end()) {
      done.push_back(std::move(*it));
      m_threads.erase(it);
    }
  }
  m_exited.clear();
  lock.unlock();
  for (auto& t : done) {
    t.join();  // the thread has left thread_main's loop; this returns at once
  }
  lock.lock();
}

void blocking_pool::thread_main() {
  std::unique_lock lock(m_mutex);
  for (;;) {
    while (m_jobs.empty() && !m_stopping) {
      ++m_idle;
      // A deadline, not wait_for: wait_for(milliseconds::max()) overflows into the past
      // inside the standard library; deadline_after saturates ("never").
      bool woke = m_work.wait_until(lock, deadline_after(m_keep_alive),
                                    [&] { return !m_jobs.empty() || m_stopping; });
      --m_idle;
      if (!woke) {
        --m_live;
        m_exited.push_back(std::this_thread::get_id());
        leave_locked();
        return;
      }
    }
    if (m_stopping && m_jobs.empty()) {
      leave_locked();
      return;
    }
    blocking_job* job = m_jobs.front();
    m_jobs.pop_front();
    lock.unlock();
    job->run();
    lock.lock();
  }
}

// Under m_mutex, as the calling thread leaves thread_main: after this it touches only
// m_mutex (unlocking it), and whoever waits for m_in_loop == 0 joins it before the pool
// can go.
void blocking_pool::leave_locked() {
  if (--m_in_loop == 0) {
    m_left.notify_all();
  }
}

bool blocking_pool::shutdown_for(std::chrono::nanoseconds limit) {
  std::vector<std::thread> threads;
  {
    std::unique_lock lock(m_mutex);
    m_stopping = true;
    m_jobs.clear();
    m_work.notify_all();
    // A deadline, not wait_for (see thread_main): nanoseconds::max() means "never".
    if (!m_left.wait_until(lock, deadline_after(limit), [&] { return m_in_loop == 0; })) {
      return false;  // jobs still run; their threads stay in m_threads for shutdown()
    }
    threads = std::move(m_threads);
    m_threads.clear();
    m_exited.clear();
  }
  for (auto& t : threads) {
    t.join();  // each has left thread_main: returns at once
  }
  return true;
}

std::size_t blocking_pool::thread_count() const {
  std::lock_guard lock(m_mutex);
  return m_live;
}

}  // namespace corio::detail

// Qualified, so that a definition that does not match its declaration
// (internal/test_hooks.hpp) is an error rather than an overload of its own.
void corio::detail::set_blocking_submit_test_hook(void (*hook)()) noexcept {
  g_submit_hook.store(hook, std::memory_order_relaxed);
}
