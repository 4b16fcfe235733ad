// when_all: run several tasks concurrently and wait for all of them.
//
// The tasks start inline, one after the other, on the awaiting worker, each running until
// its first suspension; from then on they progress independently (and may move to other
// workers). The awaiter resumes when the last one finishes. `void` results become
// std::monostate. If any task throws, the first exception (by position) is rethrown after
// all have finished. The awaiting task's cancellation token is inherited by every child.
// For parallelism across workers, spawn() the tasks and when_all their join handles'
// awaits, or await the handles in turn.
// Thread-safety: the result is assembled by the thread that resumes the parent.
// Cost: one wrapper frame per task (recycled), one atomic decrement per finish.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <cstddef>
#include <tuple>
#include <utility>
#include <vector>

#include <corio/runtime/detail/when_child.hpp>
#include <corio/runtime/task.hpp>

namespace corio {

namespace detail {

template <class... Ts>
class when_all_tuple_awaiter {
 public:
  explicit when_all_tuple_awaiter(task<Ts>... tasks) : m_children(make_when_child(std::move(tasks))...) {}
  /// Children inherit `token` instead of the awaiting task's token.
  when_all_tuple_awaiter(const std::stop_token* token, task<Ts>... tasks)
      : m_children(make_when_child(std::move(tasks))...), m_token(token), m_override(true) {}

  bool await_ready() const noexcept { return sizeof...(Ts) == 0; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> parent) {
    m_counter.remaining.store(sizeof...(Ts) + 1, std::memory_order_relaxed);
    m_counter.parent = parent;
    const std::stop_token* token = m_override ? m_token : inherited_token_of(parent);
    std::apply([&](auto&... child) { (child.start(&m_counter, token), ...); }, m_children);
    return !m_counter.arrive();
  }
  std::tuple<non_void_t<Ts>...> await_resume() {
    // Rethrow the first failure by position, then collect (argument order is unspecified).
    std::apply([](auto&... child) { ((child.failed() ? (void)child.take() : (void)0), ...); }, m_children);
    return std::apply([](auto&... child) { return std::tuple<non_void_t<Ts>...>{child.take()...}; }, m_children);
  }

 private:
  std::tuple<when_child<Ts>...> m_children;
  when_counter m_counter;
  const std::stop_token* m_token = nullptr;
  bool m_override = false;
};

template <class T>
class when_all_range_awaiter {
 public:
  explicit when_all_range_awaiter(std::vector<task<T>> tasks) {
    m_children.reserve(tasks.size());
    for (auto& t : tasks) {
      m_children.push_back(make_when_child(std::move(t)));
    }
  }
  bool await_ready() const noexcept { return m_children.empty(); }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> parent) {
    m_counter.remaining.store(m_children.size() + 1, std::memory_order_relaxed);
    m_counter.parent = parent;
    const std::stop_token* token = inherited_token_of(parent);
    for (auto& child : m_children) {
      child.start(&m_counter, token);
    }
    return !m_counter.arrive();
  }
  std::vector<non_void_t<T>> await_resume() {
    std::vector<non_void_t<T>> out;
    out.reserve(m_children.size());
    for (auto& child : m_children) {
      out.push_back(child.take());
    }
    return out;
  }

 private:
  std::vector<when_child<T>> m_children;
  when_counter m_counter;
};

}  // namespace detail

/// Awaits every task; yields a tuple of their results (void → std::monostate).
template <class... Ts>
task<std::tuple<detail::non_void_t<Ts>...>> when_all(task<Ts>... tasks) {
  co_return co_await detail::when_all_tuple_awaiter<Ts...>(std::move(tasks)...);
}

/// Awaits every task of a range; yields their results in order.
template <class T>
task<std::vector<detail::non_void_t<T>>> when_all(std::vector<task<T>> tasks) {
  co_return co_await detail::when_all_range_awaiter<T>(std::move(tasks));
}

}  // namespace corio
