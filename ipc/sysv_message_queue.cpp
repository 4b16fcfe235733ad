// ipc/sysv_message_queue.cpp: SysV message queues (sysv_message_queue.hpp): keys, create/
// open/remove, and the IPC_NOWAIT fast path (try_send/try_receive) with the message buffer
// it shares with the waits (detail/sysv_io.hpp). The interruptible waits of send/receive
// are in sysv_message_queue_wait.cpp. A test hook (detail::set_sysv_receive_test_hook,
// declared in detail/test_hooks.hpp) runs inside a receive's retry after E2BIG.
#include <corio/ipc/sysv_message_queue.hpp>

#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <limits>
#include <optional>
#include <cstring>
#include <vector>

#include <corio/ipc/detail/sysv_io.hpp>
#include <corio/ipc/detail/test_hooks.hpp>

namespace corio::ipc {

namespace {

std::error_code invalid_argument() noexcept { return std::make_error_code(std::errc::invalid_argument); }
std::error_code removed_error() noexcept { return std::make_error_code(std::errc::identifier_removed); }

// ---- the message buffer ------------------------------------------------------------

/// msgsnd/msgrcv take the type in front of the bytes: a per-thread buffer of longs
/// (aligned for the type) that grows to the largest message this thread has moved.
long* scratch(std::size_t payload) {
  thread_local std::vector<long> words;
  const std::size_t need = 1 + (payload + sizeof(long) - 1) / sizeof(long);
  if (words.size() < need) {
    words.resize(need);
  }
  return words.data();
}

/// The system's message size limit now (msgmax of our IPC namespace). A handle keeps the
/// value it read when it was made, as a fast check; a root process may change the limit
/// at any time, so every decision the snapshot would get wrong reads it again.
std::size_t system_max_message() noexcept {
  msginfo info{};
  if (::msgctl(0, IPC_INFO, reinterpret_cast<msqid_ds*>(&info)) < 0 || info.msgmax <= 0) {
    return 8192;  // the kernel's default
  }
  return static_cast<std::size_t>(info.msgmax);
}

/// The bytes queued on `id` now (IPC_STAT's msg_cbytes): no message queued is longer.
/// Nothing when they cannot be read: IPC_STAT needs the read permission msgrcv needs, so
/// the queue was removed since (or its permissions changed), which a msgrcv reports.
std::optional<std::size_t> queued_bytes(int id) noexcept {
  msqid_ds ds{};
  if (::msgctl(id, IPC_STAT, &ds) < 0) {
    return std::nullopt;
  }
  return static_cast<std::size_t>(ds.__msg_cbytes);
}

// Test hook (detail::set_sysv_receive_test_hook): run after a msgrcv of
// sysv_receive_once failed with E2BIG, before the queue is looked at. relaxed: a test
// sets it while no receive runs and joins the threads that receive before it clears it;
// nothing is published with it.
std::atomic<void (*)(int, int)> g_hook_after_e2big{nullptr};

}  // namespace

// The transfers shared with sysv_message_queue_wait.cpp (declared in detail/sysv_io.hpp).
namespace detail {

std::error_code sysv_transfer_error(int e) noexcept {
  switch (e) {
    case EIDRM:
    case EINVAL: return removed_error();
    case E2BIG: return std::make_error_code(std::errc::message_size);
    default: return os_error(-e);
  }
}

int sysv_send_once(int id, std::span<const std::byte> message, long type, int flags) {
  long* buf = scratch(message.size());
  buf[0] = type;
  if (!message.empty()) {
    std::memcpy(buf + 1, message.data(), message.size());
  }
  const int rc = ::msgsnd(id, buf, message.size(), flags);
  if (rc < 0 && errno == EINVAL) {
    // EINVAL is also msgsnd's answer to a message over msgmax, which may have been
    // lowered since the caller checked it: too long, not a removed queue. (msgsnd never
    // fails with E2BIG itself, so the code is free for this.) The look at the limit may
    // set errno itself: ours is put back.
    errno = message.size() > system_max_message() ? E2BIG : EINVAL;
  }
  return rc;
}

ssize_t sysv_receive_once(int id, std::span<std::byte> out, std::size_t cap, long type, int flags, long* got_type) {
  std::size_t asked = std::min(out.size(), cap);
  long* buf = scratch(asked);
  ssize_t n = ::msgrcv(id, buf, asked, type, flags);
  // Longer than `cap` (the handle's msgmax) but maybe not than the buffer: the message
  // may have been sent while msgmax was higher (raised after the handle was made, or
  // lowered again since). Today's msgmax does not bound it; the queue does: a queued
  // message is never longer than the bytes queued now. So, at most 4 more tries:
  // - bytes queued above `asked`: again with the buffer's room, but no more than the
  //   bytes queued or msgmax now, whichever is more (a huge buffer costs no huge
  //   scratch); each such try asks for more than the last;
  // - bytes queued not above `asked`: the too-long message is gone (another receiver
  //   took it after ours was refused); no longer message is queued, so the E2BIG is
  //   stale: again with the same `asked`, which answers as if it had not happened
  //   (ENOMSG for IPC_NOWAIT, else the wait goes on);
  // - bytes queued unreadable (the queue removed since): once more with the same
  //   `asked`, so that msgrcv itself says why (EIDRM or EINVAL), then no more.
  // A message that grows the queue in between (a blocking receive that found one too
  // long, taken by someone else) is met by the next try. After the last try, E2BIG is
  // message_size.
  for (int tries = 0; n < 0 && errno == E2BIG && out.size() > asked && tries < 4; ++tries) {
    if (auto hook = g_hook_after_e2big.load(std::memory_order_relaxed)) {
      hook(id, flags);
    }
    const std::optional<std::size_t> queued = queued_bytes(id);
    if (!queued) {
      tries = 3;  // (this try is the last)
    } else if (*queued > asked) {
      asked = std::min(out.size(), std::max(system_max_message(), *queued));
      buf = scratch(asked);
    }
    n = ::msgrcv(id, buf, asked, type, flags);
  }
  if (n > 0) {
    std::memcpy(out.data(), buf + 1, static_cast<std::size_t>(n));
  }
  if (n >= 0) {
    *got_type = buf[0];
  }
  return n;
}

}  // namespace detail

// Qualified, so that a definition that does not match its declaration
// (detail/test_hooks.hpp) is an error rather than an overload of its own.
void detail::set_sysv_receive_test_hook(void (*after_e2big)(int id, int flags)) noexcept {
  g_hook_after_e2big.store(after_e2big, std::memory_order_relaxed);
}

namespace {

using detail::sysv_receive_once;
using detail::sysv_send_once;
using detail::sysv_transfer_error;

// ---- small helpers -----------------------------------------------------------------

/// The queue's byte capacity, or nothing when it cannot be read (no read permission).
std::optional<std::size_t> queue_capacity(int id) noexcept {
  msqid_ds ds{};
  if (::msgctl(id, IPC_STAT, &ds) < 0) {
    return std::nullopt;
  }
  return static_cast<std::size_t>(ds.msg_qbytes);
}

enum class attempt { done, would_block, failed };

/// Runs `call` again after EINTR; sorts "would block" (`busy`) from real errors.
template <class Call>
attempt attempt_nowait(Call call, int busy, std::error_code& error) {
  for (;;) {
    if (call() >= 0) {
      return attempt::done;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == busy) {
      return attempt::would_block;
    }
    error = sysv_transfer_error(errno);
    return attempt::failed;
  }
}

}  // namespace

// ---- sysv_key ----------------------------------------------------------------------

result<sysv_key> sysv_key::from_path(const std::string& path, int project) {
  if (project < 1 || project > 255 || path.empty() || path.find('\0') != std::string::npos) {
    return unexpected(invalid_argument());
  }
  const key_t k = ::ftok(path.c_str(), project);
  if (k == static_cast<key_t>(-1)) {
    return unexpected(os_error(-errno));
  }
  if (k == IPC_PRIVATE) {
    return unexpected(invalid_argument());  // cannot happen for a project >= 1; never private
  }
  return sysv_key(k);
}

result<sysv_key> sysv_key::from_value(key_t value) {
  if (value == IPC_PRIVATE) {
    return unexpected(invalid_argument());
  }
  return sysv_key(value);
}

// ---- sysv_message_queue ------------------------------------------------------------

result<sysv_message_queue> sysv_message_queue::create(sysv_key key, const sysv_message_queue_options& options) {
  // max_bytes: the kernel keeps msg_qbytes in an int; a larger value would be cut short
  // (2^32 made a queue of capacity 0, on which every send waits for ever).
  if ((options.mode & ~static_cast<mode_t>(0777)) != 0 ||
      options.max_bytes > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return unexpected(invalid_argument());
  }
  const int mode = static_cast<int>(options.mode);
  int id = -1;
  bool made = false;
  // Exclusive first, so that we know whether this call made the queue (only a new queue
  // gets max_bytes). Open-or-create then opens; a queue removed in between is retried.
  for (int tries = 0; tries < 100 && id < 0; ++tries) {
    id = ::msgget(key.value(), IPC_CREAT | IPC_EXCL | mode);
    if (id >= 0) {
      made = true;
      break;
    }
    if (errno != EEXIST || options.exclusive) {
      return unexpected(os_error(-errno));
    }
    id = ::msgget(key.value(), 0);
    if (id < 0 && errno != ENOENT) {
      return unexpected(os_error(-errno));
    }
  }
  if (id < 0) {
    return unexpected(std::make_error_code(std::errc::resource_unavailable_try_again));
  }
  if (made && options.max_bytes != 0) {
    msqid_ds ds{};
    int rc = ::msgctl(id, IPC_STAT, &ds);
    if (rc == 0) {
      ds.msg_qbytes = static_cast<msglen_t>(options.max_bytes);
      rc = ::msgctl(id, IPC_SET, &ds);
    }
    if (rc != 0) {
      const int e = errno;
      (void)::msgctl(id, IPC_RMID, nullptr);
      return unexpected(os_error(-e));
    }
  }
  return sysv_message_queue(id, system_max_message());
}

result<sysv_message_queue> sysv_message_queue::open(sysv_key key) {
  if (key.is_private()) {
    return unexpected(invalid_argument());
  }
  const int id = ::msgget(key.value(), 0);
  if (id < 0) {
    return unexpected(os_error(-errno));
  }
  return sysv_message_queue(id, system_max_message());
}

result<sysv_message_queue> sysv_message_queue::from_id(int id) {
  if (id < 0) {
    return unexpected(invalid_argument());
  }
  msqid_ds ds{};
  if (::msgctl(id, IPC_STAT, &ds) < 0 && errno != EACCES) {  // EACCES: exists, not readable
    return unexpected(errno == EINVAL || errno == EIDRM ? removed_error() : os_error(-errno));
  }
  return sysv_message_queue(id, system_max_message());
}

result<void> sysv_message_queue::remove() const {
  if (m_id < 0) {
    return unexpected(invalid_argument());
  }
  if (::msgctl(m_id, IPC_RMID, nullptr) < 0) {
    return unexpected(errno == EINVAL || errno == EIDRM ? removed_error() : os_error(-errno));
  }
  return {};
}

result<sysv_message_queue_attributes> sysv_message_queue::attributes() const {
  if (m_id < 0) {
    return unexpected(invalid_argument());
  }
  msqid_ds ds{};
  if (::msgctl(m_id, IPC_STAT, &ds) < 0) {
    return unexpected(errno == EINVAL || errno == EIDRM ? removed_error() : os_error(-errno));
  }
  sysv_message_queue_attributes a;
  a.messages = static_cast<std::size_t>(ds.msg_qnum);
  a.bytes = static_cast<std::size_t>(ds.__msg_cbytes);
  a.max_bytes = static_cast<std::size_t>(ds.msg_qbytes);
  a.mode = static_cast<mode_t>(ds.msg_perm.mode & 0777);
  a.last_sender = ds.msg_lspid;
  a.last_receiver = ds.msg_lrpid;
  return a;
}

namespace {

/// Checks a send's arguments; a null code when they are good.
std::error_code check_send(int id, std::size_t size, std::size_t max_message, long type) noexcept {
  if (id < 0 || type <= 0) {
    return invalid_argument();
  }
  if (size > max_message && size > system_max_message()) {  // (the snapshot, then the limit now)
    return std::make_error_code(std::errc::message_size);
  }
  return {};
}

/// A send that would block: message_size if it can never fit (larger than the queue's
/// byte capacity, or a capacity of 0, which holds no message at all: msgsnd would wait
/// for ever), else a null code (also when the capacity cannot be read).
std::error_code check_fits(int id, std::size_t size) noexcept {
  const std::optional<std::size_t> capacity = queue_capacity(id);
  const bool never = capacity && (*capacity == 0 || size > *capacity);
  return never ? std::make_error_code(std::errc::message_size) : std::error_code{};
}

}  // namespace

result<void> sysv_message_queue::try_send(std::span<const std::byte> message, long type) const {
  if (auto bad = check_send(m_id, message.size(), m_max_message, type)) {
    return unexpected(bad);
  }
  std::error_code error;
  switch (attempt_nowait([&] { return sysv_send_once(m_id, message, type, IPC_NOWAIT); }, EAGAIN, error)) {
    case attempt::done: return {};
    case attempt::would_block: break;
    case attempt::failed: return unexpected(error);
  }
  if (auto never = check_fits(m_id, message.size())) {
    return unexpected(never);
  }
  return unexpected(make_error_code(errc::full));
}

result<sysv_received> sysv_message_queue::try_receive(std::span<std::byte> buffer, long type) const {
  if (m_id < 0) {
    return unexpected(invalid_argument());
  }
  std::error_code error;
  sysv_received got;
  auto call = [&] {
    const ssize_t n = sysv_receive_once(m_id, buffer, m_max_message, type, IPC_NOWAIT, &got.type);
    got.size = n > 0 ? static_cast<std::size_t>(n) : 0;
    return n;
  };
  switch (attempt_nowait(call, ENOMSG, error)) {
    case attempt::done: return got;
    case attempt::would_block: return unexpected(make_error_code(errc::empty));
    case attempt::failed: break;
  }
  return unexpected(error);
}

}  // namespace corio::ipc
