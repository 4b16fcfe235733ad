// when_any: run several tasks concurrently; the first to finish wins, the others are
// cancelled.
//
// Every child inherits a stop token owned by the when_any (itself linked to the awaiting
// task's token). When the first child finishes, the token is stopped: the losers' pending
// waits (sleeps, I/O, locks) return operation_canceled and they finish early. when_any
// resumes only after every child has finished, so no child outlives it. A loser that
// ignores cancellation delays the result until it finishes. If the winner threw, its
// exception is rethrown.
// Cancel safety (as Tokio's select!): a loser that completed anyway — e.g. a channel
// recv() that had already taken a value, or an auto-reset event wait() that had already
// consumed a set(), when the winner finished — has its result dropped with it (the
// value, or the set, is lost). Race only operations whose loss is harmless (sleeps, I/O waits that
// return operation_canceled, lock waits, whose guard is released), or use timeout(),
// which returns a result that arrived at the deadline instead of dropping it.
// Result: variadic form → std::variant<R...> whose index() is the winner's position;
// range form → std::pair<std::size_t, R> (winner index, value). void → std::monostate.
// Thread-safety: children may finish on different workers; the winner is decided by one
// compare-exchange. Cost: when_all's, plus one std::stop_source (a small allocation).
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <atomic>
#include <cstddef>
#include <limits>
#include <optional>
#include <stop_token>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include <corio/runtime/detail/when_child.hpp>
#include <corio/runtime/task.hpp>

namespace corio {

namespace detail {

class when_any_base {
 protected:
  static constexpr std::size_t kNoWinner = std::numeric_limits<std::size_t>::max();

  struct forward_stop {
    std::stop_source* source;
    void operator()() const noexcept { source->request_stop(); }
  };

  static void child_finished(void* ctx, std::size_t index) noexcept {
    auto* self = static_cast<when_any_base*>(ctx);
    std::size_t expected = kNoWinner;
    // acq_rel: the winner's claim is ordered before its stop request; losers see it.
    if (self->m_winner.compare_exchange_strong(expected, index, std::memory_order_acq_rel,
                                               std::memory_order_acquire)) {
      self->m_source.request_stop();
    }
  }

  template <class P>
  void link_parent(std::coroutine_handle<P> parent) {
    m_token = m_source.get_token();
    if (const std::stop_token* outer = inherited_token_of(parent); outer != nullptr && outer->stop_possible()) {
      m_outer.emplace(*outer, forward_stop{&m_source});
    }
  }

  std::stop_source m_source;
  std::stop_token m_token;
  std::optional<std::stop_callback<forward_stop>> m_outer;
  std::atomic<std::size_t> m_winner{kNoWinner};
  when_counter m_counter;
};

template <class... Ts>
class when_any_tuple_awaiter : when_any_base {
 public:
  explicit when_any_tuple_awaiter(task<Ts>... tasks) : m_children(make_when_child(std::move(tasks))...) {}

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> parent) {
    link_parent(parent);
    m_counter.remaining.store(sizeof...(Ts) + 1, std::memory_order_relaxed);
    m_counter.parent = parent;
    std::size_t i = 0;
    std::apply(
        [&](auto&... child) {
          ((child.promise().on_finish = &child_finished, child.promise().on_finish_ctx = this,
            child.promise().index = i++),
           ...);
          (child.start(&m_counter, &m_token), ...);
        },
        m_children);
    return !m_counter.arrive();
  }
  std::variant<non_void_t<Ts>...> await_resume() {
    m_outer.reset();
    return pick<0>(m_winner.load(std::memory_order_acquire));
  }

 private:
  template <std::size_t I>
  std::variant<non_void_t<Ts>...> pick(std::size_t winner) {
    if constexpr (I < sizeof...(Ts)) {
      if (winner == I) {
        return std::variant<non_void_t<Ts>...>(std::in_place_index<I>, std::get<I>(m_children).take());
      }
      return pick<I + 1>(winner);
    } else {
      std::terminate();  // unreachable: some child always finishes first
    }
  }
  std::tuple<when_child<Ts>...> m_children;
};

template <class T>
class when_any_range_awaiter : when_any_base {
 public:
  explicit when_any_range_awaiter(std::vector<task<T>> tasks) {
    m_children.reserve(tasks.size());
    for (auto& t : tasks) {
      m_children.push_back(make_when_child(std::move(t)));
    }
  }
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> parent) {
    link_parent(parent);
    m_counter.remaining.store(m_children.size() + 1, std::memory_order_relaxed);
    m_counter.parent = parent;
    for (std::size_t i = 0; i < m_children.size(); ++i) {
      auto& p = m_children[i].promise();
      p.on_finish = &child_finished;
      p.on_finish_ctx = this;
      p.index = i;
    }
    for (auto& child : m_children) {
      child.start(&m_counter, &m_token);
    }
    return !m_counter.arrive();
  }
  std::pair<std::size_t, non_void_t<T>> await_resume() {
    m_outer.reset();
    std::size_t w = m_winner.load(std::memory_order_acquire);
    return {w, m_children[w].take()};
  }

 private:
  std::vector<when_child<T>> m_children;
};

}  // namespace detail

/// Awaits the first of `tasks` to finish and cancels the others (see the header).
template <class... Ts>
  requires(sizeof...(Ts) > 0)
task<std::variant<detail::non_void_t<Ts>...>> when_any(task<Ts>... tasks) {
  co_return co_await detail::when_any_tuple_awaiter<Ts...>(std::move(tasks)...);
}

/// Range form; `tasks` must not be empty (std::invalid_argument).
template <class T>
task<std::pair<std::size_t, detail::non_void_t<T>>> when_any(std::vector<task<T>> tasks) {
  if (tasks.empty()) {
    throw std::invalid_argument("corio::when_any: empty range");
  }
  co_return co_await detail::when_any_range_awaiter<T>(std::move(tasks));
}

}  // namespace corio
