// POSIX message queues (ipc/message_queue.hpp): create/open/remove; send/receive that try the
// non-blocking call first, then wait for the queue descriptor's readiness through the ring; and
// the blocking forms for threads that are not workers, with their time limit.
#include <corio/ipc/message_queue.hpp>

#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <string>
#include <system_error>

#include <corio/ipc/detail/posix_name.hpp>
#include <corio/runtime/io.hpp>
#include <corio/runtime/runtime.hpp>

namespace corio::ipc {

namespace {

std::error_code last_os_error() noexcept { return os_error(-errno); }

std::error_code invalid_argument() noexcept { return std::make_error_code(std::errc::invalid_argument); }

result<message_queue> open_queue(std::string_view name, int flags, const message_queue_options* options) {
  if (!detail::valid_posix_ipc_name(name)) {
    return unexpected(invalid_argument());
  }
  const std::string path(name);
  mqd_t q;
  if (options != nullptr) {
    if (options->max_messages <= 0 || options->message_size <= 0 || (options->mode & ~static_cast<mode_t>(0777)) != 0) {
      return unexpected(invalid_argument());  // mode: permission bits only (no setuid, no file type)
    }
    mq_attr attr{};
    attr.mq_maxmsg = options->max_messages;
    attr.mq_msgsize = options->message_size;
    q = ::mq_open(path.c_str(), flags, options->mode, &attr);
  } else {
    q = ::mq_open(path.c_str(), flags);
  }
  if (q == static_cast<mqd_t>(-1)) {
    return unexpected(last_os_error());
  }
  return message_queue(static_cast<int>(q));
}

enum class attempt { done, would_block, failed };

/// Runs `call` (true on success) again after EINTR; sorts EAGAIN from real errors.
template <class Call>
attempt attempt_syscall(Call call, std::error_code& error) {
  for (;;) {
    if (call()) {
      return attempt::done;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN) {
      return attempt::would_block;
    }
    error = last_os_error();
    return attempt::failed;
  }
}

attempt try_send_once(int fd, std::span<const std::byte> message, unsigned priority, std::error_code& error) {
  return attempt_syscall(
      [&] { return ::mq_send(fd, reinterpret_cast<const char*>(message.data()), message.size(), priority) == 0; },
      error);
}

attempt try_receive_once(int fd, std::span<std::byte> buffer, received_message& out, std::error_code& error) {
  return attempt_syscall(
      [&] {
        unsigned priority = 0;
        ssize_t n = ::mq_receive(fd, reinterpret_cast<char*>(buffer.data()), buffer.size(), &priority);
        if (n < 0) {
          return false;
        }
        out = {static_cast<std::size_t>(n), priority};
        return true;
      },
      error);
}

bool valid_priority(unsigned priority) noexcept { return priority < static_cast<unsigned>(MQ_PRIO_MAX); }

/// ppoll(2) until `events` or `deadline`, for the blocking forms: success when the
/// descriptor is ready (look again), timed_out once `deadline` has passed. The time left
/// is taken from the one deadline at each call, so EINTR (and a wake before the deadline)
/// looks again with what is left: it neither ends the wait early nor extends it. A
/// deadline of time_point::max() (a saturated limit) waits without a timeout.
result<void> block_until(int fd, short events, clock::time_point deadline) {
  pollfd p{fd, events, 0};
  for (;;) {
    timespec left{};
    const timespec* timeout = nullptr;
    if (deadline != clock::time_point::max()) {
      // Compared first: a deadline far in the past (a limit of hours::min()) minus now
      // would overflow. The difference of two time points in range fits in nanoseconds.
      const clock::time_point now = clock::now();
      if (deadline <= now) {
        return unexpected(make_error_code(errc::timed_out));
      }
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now).count();
      left.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      left.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      timeout = &left;
    }
    const int n = ::ppoll(&p, 1, timeout, nullptr);
    if (n > 0) {
      return {};
    }
    if (n < 0 && errno != EINTR) {
      return unexpected(last_os_error());
    }
    // Timed out (the kernel's timer never fires early, but the clocks differ: the
    // deadline above decides) or interrupted: look again with the time left.
  }
}

}  // namespace

result<message_queue> message_queue::create(std::string_view name, const message_queue_options& options) {
  int flags = O_RDWR | O_CREAT | O_NONBLOCK | O_CLOEXEC | (options.exclusive ? O_EXCL : 0);
  return open_queue(name, flags, &options);
}

result<message_queue> message_queue::open(std::string_view name, access mode) {
  const int rw = mode == access::send_only ? O_WRONLY : mode == access::receive_only ? O_RDONLY : O_RDWR;
  return open_queue(name, rw | O_NONBLOCK | O_CLOEXEC, nullptr);
}

result<void> message_queue::remove(std::string_view name) {
  if (!detail::valid_posix_ipc_name(name)) {
    return unexpected(invalid_argument());
  }
  if (::mq_unlink(std::string(name).c_str()) != 0) {
    return unexpected(last_os_error());
  }
  return {};
}

task<result<void>> message_queue::send(std::span<const std::byte> message, unsigned priority,
                                       std::stop_token token) const {
  if (!valid_priority(priority)) {
    co_return unexpected(invalid_argument());
  }
  std::error_code error;
  for (bool yielded = false;; yielded = true) {
    switch (try_send_once(fd(), message, priority, error)) {
      case attempt::done: co_return result<void>{};
      case attempt::failed: co_return unexpected(error);
      case attempt::would_block: break;
    }
    if (!yielded) {
      // Full: first let the other tasks of this worker run (a receiver here drains it
      // without a trip through the ring), then wait for room. Only sends do this: a
      // receive that yielded when empty split ping-pong pairs across workers (6 -> 48
      // us per round trip in bench/ipc/mq_bench).
      co_await corio::yield_now{};
      continue;
    }
    // Still full: wait until there is room, then try again (another sender may win it).
    auto ready = co_await corio::io::poll(fd(), POLLOUT, token);
    if (!ready) {
      co_return unexpected(ready.error());
    }
  }
}

task<result<received_message>> message_queue::receive(std::span<std::byte> buffer, std::stop_token token) const {
  std::error_code error;
  received_message got;
  for (;;) {
    switch (try_receive_once(fd(), buffer, got, error)) {
      case attempt::done: co_return got;
      case attempt::failed: co_return unexpected(error);
      case attempt::would_block: break;
    }
    // Empty: wait for a message, then try again (another receiver may take it first).
    auto ready = co_await corio::io::poll(fd(), POLLIN, token);
    if (!ready) {
      co_return unexpected(ready.error());
    }
  }
}

result<void> message_queue::try_send(std::span<const std::byte> message, unsigned priority) const {
  if (!valid_priority(priority)) {
    return unexpected(invalid_argument());
  }
  std::error_code error;
  switch (try_send_once(fd(), message, priority, error)) {
    case attempt::done: return {};
    case attempt::would_block: return unexpected(make_error_code(errc::full));
    case attempt::failed: break;
  }
  return unexpected(error);
}

result<received_message> message_queue::try_receive(std::span<std::byte> buffer) const {
  std::error_code error;
  received_message got;
  switch (try_receive_once(fd(), buffer, got, error)) {
    case attempt::done: return got;
    case attempt::would_block: return unexpected(make_error_code(errc::empty));
    case attempt::failed: break;
  }
  return unexpected(error);
}

result<void> message_queue::send_blocking(std::span<const std::byte> message, unsigned priority,
                                          saturating_duration limit) const {
  const clock::time_point deadline = deadline_after(limit.get());
  for (;;) {
    auto sent = try_send(message, priority);
    if (sent || sent.error() != errc::full) {
      return sent;
    }
    if (auto ok = block_until(fd(), POLLOUT, deadline); !ok) {
      return ok;
    }
  }
}

result<received_message> message_queue::receive_blocking(std::span<std::byte> buffer,
                                                        saturating_duration limit) const {
  const clock::time_point deadline = deadline_after(limit.get());
  for (;;) {
    auto got = try_receive(buffer);
    if (got || got.error() != errc::empty) {
      return got;
    }
    if (auto ok = block_until(fd(), POLLIN, deadline); !ok) {
      return unexpected(ok.error());
    }
  }
}

result<message_queue_attributes> message_queue::attributes() const {
  mq_attr attr{};
  if (::mq_getattr(fd(), &attr) != 0) {
    return unexpected(last_os_error());
  }
  return message_queue_attributes{attr.mq_maxmsg, attr.mq_msgsize, attr.mq_curmsgs};
}

}  // namespace corio::ipc
