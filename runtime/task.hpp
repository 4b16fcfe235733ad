// corio::task<T>: a lazy, move-only coroutine that produces a T (or an exception).
//
// A task does nothing until it is awaited (or spawned). Awaiting it starts it by symmetric
// transfer; when it finishes, its awaiter resumes with the value, or the exception is
// rethrown in the awaiter. The awaiting coroutine's cancellation token (if any) is
// inherited by the task, so leaf waits inside it (sleep, I/O, locks) see it.
// Frames come from a per-thread recycling allocator (runtime/detail/frame_allocator.hpp),
// aligned to 16 bytes: a result type aligned beyond that (alignas(64)) does not compile;
// return it in a std::unique_ptr.
// Thread-safety: a task object belongs to one owner; it may be moved between threads
// before it starts. Cost: one frame allocation (recycled), no atomics on the await path.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <coroutine>
#include <cstddef>
#include <exception>
#include <new>
#include <stop_token>
#include <type_traits>
#include <utility>

#include <corio/runtime/detail/frame_allocator.hpp>
#include <corio/runtime/detail/join_state.hpp>
#include <corio/runtime/port.hpp>
#include <corio/runtime/result.hpp>

namespace corio {

template <class T = void>
class task;

namespace detail {

/// Common part of every corio promise.
struct promise_base {
  std::coroutine_handle<> continuation{};
  /// Cancellation token inherited from the awaiter (never owned; the owner outlives us).
  const std::stop_token* inherited_token = nullptr;
  /// Non-null when this frame is the top of a spawned task.
  join_state_base* root = nullptr;
  /// The spawned task whose abort (join_handle::abort) this frame honours, when its token
  /// is that task's own: then inherited_token is null (see inherited_stop). Copied down
  /// the await chain with inherited_token; null below a combinator or shield, which hand
  /// their children a token of their own.
  join_state_base* abort_root = nullptr;
  std::exception_ptr exception{};

  static void* operator new(std::size_t n) { return frame_allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { frame_deallocate(p, n); }

  /// Suspends at creation; on the first resume, a spawned task aborted before it ran
  /// throws errc::aborted instead of running its body (the throw lands in
  /// unhandled_exception, and the task finishes as aborted).
  struct initial_awaiter {
    const promise_base* promise;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    void await_resume() const {
      if (promise->root != nullptr && promise->root->abort_requested()) {
        throw_aborted();
      }
    }
  };
  initial_awaiter initial_suspend() noexcept { return {this}; }
  void unhandled_exception() noexcept { exception = std::current_exception(); }
};

/// The token a leaf awaitable should honour when awaited from a coroutine with promise P
/// (inherited_stop, join_state.hpp). Inside a spawned task it stands for the task's abort:
/// stop_link parks on it without creating the task's stop source; converting it to a
/// `const std::stop_token*` creates that source (once per task).
template <class P>
inherited_stop inherited_token_of(std::coroutine_handle<P> h) noexcept {
  if constexpr (std::is_base_of_v<promise_base, P>) {
    return {h.promise().inherited_token, h.promise().abort_root};
  } else {
    (void)h;
    return {};
  }
}

/// What a task awaited by `parent` inherits: the same token, or the same abort root.
template <class P>
void inherit_stop(promise_base& child, std::coroutine_handle<P> parent) noexcept {
  if constexpr (std::is_base_of_v<promise_base, P>) {
    child.inherited_token = parent.promise().inherited_token;
    child.abort_root = parent.promise().abort_root;
  } else {
    (void)parent;
    child.inherited_token = nullptr;
    child.abort_root = nullptr;
  }
}

template <class Promise>
struct final_awaiter {
  bool await_ready() noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
    Promise& p = h.promise();
    if (p.root != nullptr) {
      p.finish_as_root(h);
      return std::noop_coroutine();
    }
    return port::transfer(p.continuation);
  }
  void await_resume() noexcept {}
};

template <class T>
struct task_promise : promise_base {
  // The frame, and so this promise, is aligned to __STDCPP_DEFAULT_NEW_ALIGNMENT__ only:
  // g++ 12 and clang 19 do not honour a promise's alignment beyond it (nor does the frame
  // allocator). A result stored here would be misaligned: refuse it at compile time.
  static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__,
                "corio: a task's result type cannot be over-aligned (coroutine frames are aligned to "
                "__STDCPP_DEFAULT_NEW_ALIGNMENT__ only): return it in a std::unique_ptr");
  alignas(T) unsigned char storage[sizeof(T)];
  bool has_value = false;

  task_promise() = default;
  task_promise(const task_promise&) = delete;
  ~task_promise() {
    if (has_value) {
      std::launder(reinterpret_cast<T*>(storage))->~T();
    }
  }

  task<T> get_return_object() noexcept;
  final_awaiter<task_promise> final_suspend() noexcept { return {}; }

  template <class U = T>
    requires std::is_convertible_v<U&&, T>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    ::new (static_cast<void*>(storage)) T(std::forward<U>(v));
    has_value = true;
  }

  T& value() {
    if (exception) {
      std::rethrow_exception(exception);
    }
    return *std::launder(reinterpret_cast<T*>(storage));
  }

  void finish_as_root(std::coroutine_handle<> h) noexcept {
    if (!exception && has_value) {
      store_root_value<T>(root, std::launder(reinterpret_cast<T*>(storage)));
    }
    finish_root(h, root, std::move(exception));
  }
};

template <>
struct task_promise<void> : promise_base {
  task<void> get_return_object() noexcept;
  final_awaiter<task_promise> final_suspend() noexcept { return {}; }
  void return_void() noexcept {}
  void value() {
    if (exception) {
      std::rethrow_exception(exception);
    }
  }
  void finish_as_root(std::coroutine_handle<> h) noexcept { finish_root(h, root, std::move(exception)); }
};

}  // namespace detail

/// A lazy coroutine producing a T; see the header comment.
template <class T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::task_promise<T>;
  /// What awaiting the task yields.
  using value_type = T;

  task() noexcept = default;
  /// Takes ownership of a coroutine (the promise's get_return_object uses it).
  explicit task(std::coroutine_handle<promise_type> h) noexcept : m_handle(h) {}
  /// Takes over `other`'s coroutine; `other` becomes invalid.
  task(task&& other) noexcept : m_handle(std::exchange(other.m_handle, {})) {}
  /// Destroys the coroutine held so far (if any), then takes over `other`'s.
  task& operator=(task&& other) noexcept {
    if (this != &other) {
      destroy();
      m_handle = std::exchange(other.m_handle, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() { destroy(); }

  /// True while the task holds a coroutine (not moved-from, not default-constructed).
  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(m_handle); }

  /// What `co_await task` awaits: starts the task by symmetric transfer, yields its value
  /// or rethrows its exception.
  struct awaiter {
    /// The awaited task's coroutine (owned by the task, not by the awaiter).
    std::coroutine_handle<promise_type> child;

    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> parent) noexcept {
      child.promise().continuation = parent;
      detail::inherit_stop(child.promise(), parent);
      return port::transfer(child);
    }
    // A task<result<U>>'s result must not be dropped unseen (result.hpp, rule 4); one of
    // the two is viable for each T.
    T await_resume() requires(!detail::is_result_v<T>) { return take(); }
    [[nodiscard]] T await_resume() requires detail::is_result_v<T> { return take(); }

   private:
    T take() {
      if constexpr (std::is_void_v<T>) {
        child.promise().value();
      } else {
        return std::move(child.promise().value());
      }
    }
  };

  /// Awaiting a task starts it; the awaiter resumes when it finishes.
  /// Precondition: valid().
  awaiter operator co_await() && noexcept { return awaiter{m_handle}; }
  /// The same for a named task (`co_await t;`): the task object keeps the coroutine.
  awaiter operator co_await() & noexcept { return awaiter{m_handle}; }

  /// Releases ownership of the coroutine (used by spawn and the combinators).
  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(m_handle, {}); }

 private:
  void destroy() noexcept {
    if (m_handle) {
      m_handle.destroy();
      m_handle = {};
    }
  }
  std::coroutine_handle<promise_type> m_handle{};
};

namespace detail {
struct stop_token_query {
  const std::stop_token* token = nullptr;
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    token = inherited_token_of(h);
    return false;  // never suspends
  }
  std::stop_token await_resume() const noexcept { return token != nullptr ? *token : std::stop_token{}; }
};
}  // namespace detail

/// `co_await corio::get_stop_token()` yields the cancellation token the current task
/// inherited (from when_any, timeout, ...), inside a spawned task its abort token
/// (join_handle::abort), or an empty token. Useful to hand to blocking calls or to poll
/// in long loops. Never suspends; costs a copy of the token (and, the first time in a
/// spawned task, the creation of its stop source).
inline detail::stop_token_query get_stop_token() noexcept { return {}; }

namespace detail {
template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
  return task<T>{std::coroutine_handle<task_promise>::from_promise(*this)};
}
inline task<void> task_promise<void>::get_return_object() noexcept {
  return task<void>{std::coroutine_handle<task_promise>::from_promise(*this)};
}
}  // namespace detail

}  // namespace corio
