// The blocking pool behind spawn_blocking (runtime/internal/blocking_pool.hpp): submitting and
// withdrawing jobs, the threads that run them and retire after the keep-alive, and shutdown.
#include <corio/runtime/internal/blocking_pool.hpp>

#include <algorithm>

#include <corio/runtime/time.hpp>

namespace corio::detail {

bool blocking_pool::submit(blocking_job* job) {
  std::unique_lock lock(m_mutex);
  if (m_stopping) {
    return false;
  }
  join_exited(lock);
  if (m_idle == 0 && m_live < m_max_threads) {
    // Start the thread before queuing: if that throws, nothing refers to `job`.
    m_threads.emplace_back([this] { thread_main(); });
    ++m_live;
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
        return;
      }
    }
    if (m_stopping && m_jobs.empty()) {
      return;
    }
    blocking_job* job = m_jobs.front();
    m_jobs.pop_front();
    lock.unlock();
    job->run();
    lock.lock();
  }
}

void blocking_pool::shutdown() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(m_mutex);
    if (m_stopping && m_threads.empty()) {
      return;
    }
    m_stopping = true;
    m_jobs.clear();
    threads = std::move(m_threads);
    m_threads.clear();
    m_exited.clear();
  }
  m_work.notify_all();
  for (auto& t : threads) {
    t.join();
  }
}

std::size_t blocking_pool::thread_count() const {
  std::lock_guard lock(m_mutex);
  return m_live;
}

}  // namespace corio::detail
