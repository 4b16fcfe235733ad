// Holds managed_queue: queue.Queue's methods for manager clients (argument checks with
// Python's errors, queue.Empty/queue.Full, blocking waits as coroutines) over a
// corio::channel, and its C++ side.
#include <corio/ipc/manager_queue.hpp>

#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include <corio/runtime/spawn.hpp>
#include <corio/runtime/timeout.hpp>

namespace corio::ipc {

namespace {

// A timeout this long (or longer) means "no timeout": about 31 years.
constexpr double kNoTimeoutSeconds = 1e9;
constexpr std::chrono::nanoseconds kForever = std::chrono::nanoseconds::max();

// Python's truth value of a plain value (`if not block:`).
bool truthy(const pickle::value& v) {
  switch (v.type()) {
    case pickle::kind::none: return false;
    case pickle::kind::boolean: return *v.as<bool>();
    case pickle::kind::integer: return *v.as<std::int64_t>() != 0;
    case pickle::kind::big_integer: return true;
    case pickle::kind::floating: return *v.as<double>() != 0.0;
    case pickle::kind::object: return true;
    default: return v.size() != 0;
  }
}

// Python's `timeout` argument: None (forever) or a non-negative number of seconds.
std::variant<std::chrono::nanoseconds, call_outcome> wait_limit(const pickle::value& timeout) {
  if (timeout.is_none()) {
    return kForever;
  }
  if (timeout.type() == pickle::kind::boolean) {  // a bool is an int in Python: 0 or 1 s
    return std::chrono::nanoseconds(*timeout.as<bool>() ? 1'000'000'000 : 0);
  }
  if (!timeout.is_int() && timeout.type() != pickle::kind::floating) {
    std::string m = "'<' not supported between instances of '";
    m += timeout.type_name();
    m += "' and 'int'";
    return call_outcome::raise("TypeError", m);
  }
  double seconds = timeout.as<double>().value_or(std::numeric_limits<double>::infinity());
  if (std::isnan(seconds) || seconds < 0) {
    return call_outcome::raise("ValueError", "'timeout' must be a non-negative number");
  }
  if (seconds >= kNoTimeoutSeconds) {
    return kForever;
  }
  return std::chrono::nanoseconds(static_cast<std::int64_t>(seconds * 1e9));
}

}  // namespace

managed_queue::managed_queue(std::size_t maxsize)
    : m_maxsize(maxsize), m_items(maxsize == 0 ? unbounded_capacity : maxsize) {}

result<void> managed_queue::put(pickle::value item) { return m_items.try_send(std::move(item)); }

result<pickle::value> managed_queue::try_get() { return m_items.try_recv(); }

task<result<pickle::value>> managed_queue::get(std::stop_token stop) { co_return co_await m_items.recv(stop); }

std::vector<std::string> managed_queue::exposed() const {
  return {"empty", "full", "get", "get_nowait", "put", "put_nowait", "qsize"};
}

call_result managed_queue::call(std::string_view method, const call_args& args) {
  if (method == "get" || method == "get_nowait") {
    return call_get(args, method == "get_nowait");
  }
  if (method == "put" || method == "put_nowait") {
    return call_put(args, method == "put_nowait");
  }
  auto bound = args.bind(method, {});
  if (auto* error = std::get_if<call_outcome>(&bound)) {
    return std::move(*error);
  }
  std::size_t n = m_items.size();
  if (method == "qsize") {
    return call_outcome::returned(n);
  }
  if (method == "empty") {
    return call_outcome::returned(n == 0);
  }
  if (method == "full") {
    return call_outcome::returned(m_maxsize != 0 && n >= m_maxsize);
  }
  return call_outcome::raise("AttributeError", "'Queue' object has no attribute '" + std::string(method) + "'");
}

call_result managed_queue::call_get(const call_args& args, bool nowait) {
  auto bound = nowait ? args.bind("get_nowait", {})
                      : args.bind("get", {{"block", pickle::value(true)}, {"timeout", pickle::value()}});
  if (auto* error = std::get_if<call_outcome>(&bound)) {
    return std::move(*error);
  }
  auto& params = std::get<std::vector<pickle::value>>(bound);
  bool block = !nowait && truthy(params[0]);
  std::chrono::nanoseconds limit = kForever;
  if (block) {
    auto l = wait_limit(params[1]);
    if (auto* error = std::get_if<call_outcome>(&l)) {
      return std::move(*error);
    }
    limit = std::get<std::chrono::nanoseconds>(l);
  }
  if (auto item = m_items.try_recv()) {
    return deliver(std::move(*item));
  }
  if (!block || limit == std::chrono::nanoseconds::zero()) {
    return call_outcome::raised(pickle::queue_empty());
  }
  return deferred_call{[self = shared_from_this(), limit](std::stop_token stop) {
    return wait_get(self, limit, std::move(stop));
  }};
}

call_result managed_queue::call_put(const call_args& args, bool nowait) {
  auto bound = nowait ? args.bind("put_nowait", {{"item", std::nullopt}})
                      : args.bind("put", {{"item", std::nullopt}, {"block", pickle::value(true)},
                                          {"timeout", pickle::value()}});
  if (auto* error = std::get_if<call_outcome>(&bound)) {
    return std::move(*error);
  }
  auto& params = std::get<std::vector<pickle::value>>(bound);
  bool block = !nowait && truthy(params[1]);
  std::chrono::nanoseconds limit = kForever;
  if (block && m_maxsize != 0) {  // as queue.Queue.put: an unbounded queue never looks at timeout
    auto l = wait_limit(params[2]);
    if (auto* error = std::get_if<call_outcome>(&l)) {
      return std::move(*error);
    }
    limit = std::get<std::chrono::nanoseconds>(l);
  }
  if (m_items.try_send(std::move(params[0]))) {
    return call_outcome::returned({});
  }
  // try_send leaves the item with us when it fails (the queue is full).
  if (!block || limit == std::chrono::nanoseconds::zero()) {
    return call_outcome::raised(pickle::queue_full());
  }
  return deferred_call{[self = shared_from_this(), limit, item = std::move(params[0])](std::stop_token stop) {
    return wait_put(self, item, limit, std::move(stop));
  }};
}

task<call_outcome> managed_queue::wait_get(std::shared_ptr<managed_queue> self, std::chrono::nanoseconds limit,
                                           std::stop_token stop) {
  // (No `?:` around a co_await: g++ 12 destroys its result twice; see README.)
  std::optional<result<pickle::value>> r;
  if (limit == kForever) {
    r.emplace(co_await self->m_items.recv(stop));
  } else {
    r.emplace(co_await corio::timeout(self->m_items.recv(stop), limit));
  }
  if (*r) {
    co_return self->deliver(std::move(**r));
  }
  if (r->error() == std::errc::timed_out) {
    co_return call_outcome::raised(pickle::queue_empty());
  }
  co_return call_outcome::stopped();
}

task<call_outcome> managed_queue::wait_put(std::shared_ptr<managed_queue> self, pickle::value item,
                                           std::chrono::nanoseconds limit, std::stop_token stop) {
  std::optional<result<void>> r;
  if (limit == kForever) {
    r.emplace(co_await self->m_items.send(std::move(item), stop));
  } else {
    r.emplace(co_await corio::timeout(self->m_items.send(std::move(item), stop), limit));
  }
  if (*r) {
    co_return call_outcome::returned({});
  }
  if (r->error() == std::errc::timed_out) {
    co_return call_outcome::raised(pickle::queue_full());
  }
  co_return call_outcome::stopped();
}

call_outcome managed_queue::deliver(pickle::value item) {
  call_outcome out = call_outcome::returned(std::move(item));
  // `this` is kept alive by the server while it sends the reply (it holds the object).
  out.undelivered = [this](pickle::value lost) { put_back(std::move(lost)); };
  return out;
}

void managed_queue::put_back(pickle::value item) {
  if (m_items.try_send(std::move(item))) {
    return;
  }
  // Full again (others put meanwhile): wait for room in a task of its own.
  corio::spawn(resend(shared_from_this(), std::move(item))).detach();
}

task<void> managed_queue::resend(std::shared_ptr<managed_queue> self, pickle::value item) {
  (void)co_await self->m_items.send(std::move(item));
}

std::string managed_queue::repr() const { return "<queue.Queue object>"; }

}  // namespace corio::ipc
