// corio::ipc::signal_stream: the process-wide registry of signals held by streams, the
// handler that catches them on threads that do not block them yet, and the reads of both
// (the signalfd, and what the handler recorded).
#include <corio/ipc/signals.hpp>

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <ucontext.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <optional>

#include <corio/runtime/io.hpp>

namespace corio::ipc {

namespace {

constexpr int kMaxSignal = 64;

std::uint64_t bit(int sig) noexcept { return std::uint64_t{1} << (sig - 1); }

// The registry. g_held: signals an open stream holds; g_installed: signals whose
// handler is installed (for good, see the header comment). Under g_mutex.
std::mutex g_mutex;
std::uint64_t g_held = 0;
std::uint64_t g_installed = 0;

// What the handler records for the streams (lock-free atomics: usable in a handler).
// g_caught: signals caught by the handler and not yet taken by a stream; the sender of
// the latest of each; g_wake: an eventfd the handler writes to wake the streams (in each
// stream's epoll set, edge-triggered), created once, before the first handler.
std::atomic<std::uint64_t> g_caught{0};
std::array<std::atomic<pid_t>, kMaxSignal + 1> g_sender_pid{};
std::array<std::atomic<uid_t>, kMaxSignal + 1> g_sender_uid{};
std::atomic<int> g_wake{-1};

bool refused(int sig) noexcept {
  switch (sig) {
    case SIGKILL:
    case SIGSTOP:
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
    case SIGTRAP:
    case SIGSYS:
      return true;
    default:
      return sig < 1 || sig > kMaxSignal;
  }
}

// Runs on a thread that did not block `sig`. Async-signal-safe only: records the signal
// and its sender for the streams, wakes them, and blocks `sig` on this thread from now on
// (the kernel restores uc_sigmask when the handler returns).
void on_signal(int sig, siginfo_t* info, void* context) {
  const int saved = errno;
  ::sigaddset(&static_cast<ucontext_t*>(context)->uc_sigmask, sig);
  // relaxed: the sender is a hint read together with the bit below.
  g_sender_pid[static_cast<std::size_t>(sig)].store(info->si_pid, std::memory_order_relaxed);
  g_sender_uid[static_cast<std::size_t>(sig)].store(info->si_uid, std::memory_order_relaxed);
  // release: the sender stores above are visible to the stream that takes the bit.
  g_caught.fetch_or(bit(sig), std::memory_order_release);
  const std::uint64_t one = 1;
  (void)!::write(g_wake.load(std::memory_order_relaxed), &one, sizeof one);
  errno = saved;
}

// Takes one signal of `bits` that the handler caught, if any.
std::optional<signal_info> take_caught(std::uint64_t bits) noexcept {
  // acquire: pairs with the handler's release (the sender is stored before the bit).
  std::uint64_t mine = g_caught.load(std::memory_order_acquire) & bits;
  while (mine != 0) {
    const int sig = __builtin_ctzll(mine) + 1;
    if ((g_caught.fetch_and(~bit(sig), std::memory_order_acq_rel) & bit(sig)) != 0) {
      return signal_info{.number = sig,
                         .sender_pid = g_sender_pid[static_cast<std::size_t>(sig)].load(std::memory_order_relaxed),
                         .sender_uid = g_sender_uid[static_cast<std::size_t>(sig)].load(std::memory_order_relaxed)};
    }
    mine &= ~bit(sig);  // another stream took it meanwhile
  }
  return std::nullopt;
}

// Installs the handler for every signal of `bits` that lacks it (creating g_wake first).
// Caller holds g_mutex. Returns 0 or an errno.
int install(std::uint64_t bits) noexcept {
  if (g_wake.load(std::memory_order_relaxed) < 0) {
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
      return errno;
    }
    g_wake.store(fd, std::memory_order_relaxed);  // published to handlers by sigaction()
  }
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    if ((bits & bit(sig)) == 0 || (g_installed & bit(sig)) != 0) {
      continue;
    }
    struct sigaction sa {};
    sa.sa_sigaction = &on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    ::sigemptyset(&sa.sa_mask);
    if (::sigaction(sig, &sa, nullptr) != 0) {
      return errno;
    }
    g_installed |= bit(sig);
  }
  return 0;
}

sigset_t to_sigset(std::uint64_t bits) noexcept {
  sigset_t set;
  ::sigemptyset(&set);
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    if ((bits & bit(sig)) != 0) {
      ::sigaddset(&set, sig);
    }
  }
  return set;
}

void give_back(std::uint64_t bits) noexcept {
  if (bits != 0) {
    std::lock_guard lock(g_mutex);
    g_held &= ~bits;
  }
}

}  // namespace

result<signal_stream> signal_stream::open(std::span<const int> set) {
  std::uint64_t bits = 0;
  for (int sig : set) {
    if (refused(sig)) {
      return unexpected(std::make_error_code(std::errc::invalid_argument));
    }
    bits |= bit(sig);
  }
  if (bits == 0) {
    return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  std::lock_guard lock(g_mutex);
  if ((g_held & bits) != 0) {
    return unexpected(std::make_error_code(std::errc::device_or_resource_busy));
  }
  if (int err = install(bits); err != 0) {
    return unexpected(std::error_code(err, std::system_category()));
  }
  const sigset_t mask = to_sigset(bits);
  // This thread, and every thread it creates from now on, blocks the set; the others
  // run on_signal() on their first delivery.
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    return unexpected(std::error_code(errno, std::system_category()));
  }
  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event on_pending{.events = EPOLLIN, .data = {.fd = sfd}};
  epoll_event on_wake{.events = EPOLLIN | EPOLLET, .data = {.fd = -1}};
  if (ep < 0 || ::epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &on_pending) != 0 ||
      ::epoll_ctl(ep, EPOLL_CTL_ADD, g_wake.load(std::memory_order_relaxed), &on_wake) != 0) {
    const int err = errno;
    if (ep >= 0) {
      ::close(ep);
    }
    ::close(sfd);
    return unexpected(std::error_code(err, std::system_category()));
  }
  g_held |= bits;
  return signal_stream(ep, sfd, bits);
}

signal_stream& signal_stream::operator=(signal_stream&& other) noexcept {
  if (this != &other) {
    close();
    owned_fd::operator=(std::move(other));
    m_signalfd = std::exchange(other.m_signalfd, -1);
    m_held = std::exchange(other.m_held, 0);
  }
  return *this;
}

signal_stream::~signal_stream() { close(); }

void signal_stream::close() noexcept {
  owned_fd::close();  // first: cancels a next() waiting in its poll
  if (int sfd = std::exchange(m_signalfd, -1); sfd >= 0) {
    ::close(sfd);  // (an epoll set drops a descriptor that is closed)
  }
  give_back(std::exchange(m_held, 0));  // last: no read of this stream follows
}

task<result<signal_info>> signal_stream::next(std::stop_token token) const {
  for (;;) {
    const int ep = fd();
    if (ep < 0) {
      co_return unexpected(std::make_error_code(std::errc::bad_file_descriptor));
    }
    signalfd_siginfo si{};
    ssize_t n = ::read(m_signalfd, &si, sizeof si);  // non-blocking: takes one pending signal
    if (n == static_cast<ssize_t>(sizeof si)) {
      co_return signal_info{.number = static_cast<int>(si.ssi_signo),
                            .sender_pid = static_cast<pid_t>(si.ssi_pid),
                            .sender_uid = static_cast<uid_t>(si.ssi_uid)};
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      co_return unexpected(std::error_code(errno, std::system_category()));
    }
    if (auto caught = take_caught(m_held)) {
      co_return *caught;
    }
    // Harvest a wake-up that came since (edge-triggered), or see a signal now pending:
    // then look again. Else wait until one of them comes.
    std::array<epoll_event, 2> events{};
    if (::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 0) > 0) {
      continue;
    }
    auto ready = co_await track(corio::io::poll(ep, POLLIN, token));
    if (!ready) {
      co_return unexpected(ready.error());
    }
  }
}

task<result<void>> ctrl_c(std::stop_token token) {
  auto stream = signal_stream::open({SIGINT});
  if (!stream) {
    co_return unexpected(stream.error());
  }
  auto got = co_await stream->next(std::move(token));
  if (!got) {
    co_return unexpected(got.error());
  }
  co_return result<void>{};
}

}  // namespace corio::ipc
