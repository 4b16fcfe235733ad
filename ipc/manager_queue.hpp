// corio::ipc::managed_queue: a FIFO queue of pickle values with Python's queue.Queue
// interface, shared through a manager_server (ipc/manager_server.hpp) and usable from C++
// tasks on the server side at the same time.
//
// Concept: what `SyncManager.register('Q', callable=lambda: queue.Queue())` gives Python
// clients. Exposed methods (Python's queue.Queue / multiprocessing.Queue signatures):
//   put(item, block=True, timeout=None), put_nowait(item),
//   get(block=True, timeout=None), get_nowait(), qsize(), empty(), full().
// get on an empty queue without blocking (or after its timeout) raises queue.Empty in the
// client; put on a full bounded queue raises queue.Full; a negative timeout is
// ValueError("'timeout' must be a non-negative number"), as in Python. A blocking get or
// put waits as a coroutine of the server (never a thread): thousands of clients may wait
// at once. A timeout of 10^9 s or more means "no timeout" (nothing overflows).
// Nothing is lost but what cannot be sent: a get stopped because its client disconnected
// has taken nothing; an item whose reply could not be delivered (the client left just as
// it got it) goes back into the queue, at its end (the order of the remaining items
// changes); an item whose reply cannot be sent at all (it does not pickle, or is above a
// max_send_size set lower) is answered '#UNSERIALIZABLE' and dropped, as Python does
// (manager_server.hpp).
// C++ side: put()/try_get()/get() on the same queue (a job server's workers take jobs
// with `co_await q.get(stop)`).
// Thread-safety: every member from any thread. Cost: each operation is one operation on
// a corio::channel (one spin-lock section); a blocking wait is one coroutine frame.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include <corio/ipc/manager_object.hpp>
#include <corio/ipc/pickle.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>
#include <corio/sync/channel.hpp>

namespace corio::ipc {

/// A queue.Queue shared with manager clients (see the header comment).
class managed_queue : public managed_object, public std::enable_shared_from_this<managed_queue> {
 public:
  /// A queue holding at most `maxsize` items; 0 (Python's default) means unbounded.
  /// Create it with std::make_shared (a put-back after a lost reply keeps it alive).
  explicit managed_queue(std::size_t maxsize = 0);

  /// Appends an item without waiting. Errors: errc::full (bounded and full).
  result<void> put(pickle::value item);
  /// Takes the oldest item without waiting. Errors: errc::empty.
  result<pickle::value> try_get();
  /// Takes the oldest item, waiting for one. Errors: std::errc::operation_canceled
  /// (`stop` or the inherited token; nothing was taken).
  [[nodiscard]] task<result<pickle::value>> get(std::stop_token stop = {});
  /// Items queued now (a snapshot).
  [[nodiscard]] std::size_t size() noexcept { return m_items.size(); }
  /// The bound given at construction (0: unbounded).
  [[nodiscard]] std::size_t maxsize() const noexcept { return m_maxsize; }

  [[nodiscard]] std::vector<std::string> exposed() const override;
  [[nodiscard]] call_result call(std::string_view method, const call_args& args) override;
  [[nodiscard]] std::string repr() const override;

 private:
  call_result call_get(const call_args& args, bool nowait);
  call_result call_put(const call_args& args, bool nowait);
  call_outcome deliver(pickle::value item);
  void put_back(pickle::value item);
  static task<call_outcome> wait_get(std::shared_ptr<managed_queue> self, std::chrono::nanoseconds limit,
                                     std::stop_token stop);
  static task<call_outcome> wait_put(std::shared_ptr<managed_queue> self, pickle::value item,
                                     std::chrono::nanoseconds limit, std::stop_token stop);
  static task<void> resend(std::shared_ptr<managed_queue> self, pickle::value item);

  std::size_t m_maxsize;
  channel<pickle::value> m_items;
};

}  // namespace corio::ipc
