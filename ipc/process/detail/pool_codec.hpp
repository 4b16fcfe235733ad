// corio::ipc::detail: the process pool's wire format, typed codecs and batch bookkeeping.
//
// Frames on a worker's socket (native endianness: both ends are the same binary):
//   parent → worker: job_header { u32 len; u32 seq; u64 id; u64 fn } + len bytes
//   worker → parent: result_header { u32 len; u32 status; u64 id } + len bytes
// `fn` is a pool_job_fn pointer, valid in the worker because workers are forked from
// the fork server (the same executable image). `seq` numbers the frames sent to one
// worker (0, 1, 2, ... wrapping): it indexes the worker's withdrawal bitmap (see
// worker_page). status: 0 ok, else a pool_errc value, or status_cancelled /
// status_withdrawn (parent-internal). For pool_errc::job_threw the payload is the
// exception's what() text.
//
// The shared page (one memfd per worker, mapped by both sides), worker_page:
//   running: the id of the job the worker is running (0 between jobs): names the job
//     that killed a crashed worker;
//   withdrawn[]: one bit per seq slot (seq % bits, bits a power of two >= the window):
//     the parent sets a job's bit when its call was cancelled while the job was still
//     queued in the worker; the worker checks the bit before running a job and, if set,
//     answers status_withdrawn at once without running it. The parent clears the bit
//     when that job's answer arrives, before the slot can be reused (a slot is reused
//     only window frames later, and the window bounds the jobs in flight).
// Thread-safety: a pool_batch is filled by the pool under its mutex; its owner reads it
// after `done` fired. Cost: one contiguous buffer per direction per batch, no per-item
// allocation.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <corio/runtime/port.hpp>

namespace corio::ipc {

/// A job function, run in a worker process: reads the job's bytes, appends the result's.
using pool_job_fn = void (*)(std::span<const std::byte> job, std::vector<std::byte>& result);

namespace detail {

struct job_header {
  std::uint32_t len;
  std::uint32_t seq;
  std::uint64_t id;
  std::uint64_t fn;
};
struct result_header {
  std::uint32_t len;
  std::uint32_t status;
  std::uint64_t id;
};

/// Parent-internal statuses (never a pool_errc value): the call was cancelled before
/// the job had a result; the worker skipped a withdrawn job.
inline constexpr std::uint32_t status_cancelled = 0xffffffffU;
inline constexpr std::uint32_t status_withdrawn = 0xfffffffeU;

/// Longest exception text carried back from a worker (longer texts are cut).
inline constexpr std::size_t max_exception_text = 4096;

/// The page shared by the parent and one worker (see the header comment); the
/// withdrawal bitmap's `bits / 64` words follow it in the mapping.
struct worker_page {
  std::atomic<std::uint64_t> running;
  std::uint64_t bits;  // the bitmap's size in bits (a power of two); written before the fork

  static std::uint64_t bits_for(std::size_t window) noexcept {
    std::uint64_t b = 64;
    while (b < window) {
      b <<= 1;
    }
    return b;
  }
  /// Bytes to map for a window of `window` jobs in flight (whole pages).
  static std::size_t bytes_for(std::size_t window) noexcept {
    std::size_t n = sizeof(worker_page) + bits_for(window) / 8;
    return (n + 4095) / 4096 * 4096;
  }
  std::atomic<std::uint64_t>& word(std::uint32_t seq) noexcept {
    auto* words = reinterpret_cast<std::atomic<std::uint64_t>*>(reinterpret_cast<char*>(this) + sizeof(worker_page));
    return words[(seq & (bits - 1)) / 64];
  }
  static std::uint64_t mask(std::uint32_t seq) noexcept { return std::uint64_t{1} << (seq % 64); }
};

/// Appends the bytes of `v` (trivially copyable, or a string).
template <class T>
void encode_value(const T& v, std::vector<std::byte>& out) {
  if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    std::string_view s(v);
    auto* p = reinterpret_cast<const std::byte*>(s.data());
    out.insert(out.end(), p, p + s.size());
  } else {
    static_assert(std::is_trivially_copyable_v<T>, "process_pool: values travel as bytes: trivially copyable or strings");
    auto* p = reinterpret_cast<const std::byte*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
  }
}

/// Reads a T back (a short buffer yields a zero-filled tail for trivially copyable T).
template <class T>
T decode_value(std::span<const std::byte> in) {
  if constexpr (std::is_same_v<T, std::string>) {
    return std::string(reinterpret_cast<const char*>(in.data()), in.size());
  } else {
    static_assert(std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T>);
    T v{};
    std::memcpy(&v, in.data(), in.size() < sizeof(T) ? in.size() : sizeof(T));
    return v;
  }
}

template <class F>
struct fn_traits;
template <class R, class A>
struct fn_traits<R (*)(A)> {
  using arg = std::remove_cvref_t<A>;
  using ret = R;
};

/// One item: decode, call, encode.
template <auto Fn>
void item_job(std::span<const std::byte> in, std::vector<std::byte>& out) {
  using traits = fn_traits<decltype(Fn)>;
  encode_value(Fn(decode_value<typename traits::arg>(in)), out);
}

/// A chunk of items (an array of trivially copyable In) → an array of Out.
template <auto Fn>
void chunk_job(std::span<const std::byte> in, std::vector<std::byte>& out) {
  using In = typename fn_traits<decltype(Fn)>::arg;
  using Out = typename fn_traits<decltype(Fn)>::ret;
  static_assert(std::is_trivially_copyable_v<In> && std::is_trivially_copyable_v<Out>,
                "map_batched needs trivially copyable argument and result types");
  std::size_t n = in.size() / sizeof(In);
  std::size_t base = out.size();
  out.resize(base + n * sizeof(Out));
  for (std::size_t i = 0; i < n; ++i) {
    In x;
    std::memcpy(&x, in.data() + i * sizeof(In), sizeof(In));
    Out y = Fn(x);
    std::memcpy(out.data() + base + i * sizeof(Out), &y, sizeof(Out));
  }
}

/// One waiter, one signal. state: 0 idle, 1 signalled, else the waiting coroutine's address.
class completion_signal {
 public:
  bool await_ready() const noexcept { return m_state.load(std::memory_order_acquire) == 1; }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    m_home = port::current_runtime();
    std::uintptr_t expected = 0;
    // release: publishes m_home; pairs with the acq_rel exchange in signal().
    // acquire (failure): sees the batch results published before signal().
    return m_state.compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(h.address()),
                                           std::memory_order_acq_rel, std::memory_order_acquire);
  }
  void await_resume() const noexcept {}
  void signal() noexcept {
    // acq_rel: publishes the results (release) and reads the waiter and m_home (acquire).
    std::uintptr_t prev = m_state.exchange(1, std::memory_order_acq_rel);
    if (prev > 1) {
      port::wake(std::coroutine_handle<>::from_address(reinterpret_cast<void*>(prev)), m_home);
    }
  }

 private:
  std::atomic<std::uintptr_t> m_state{0};
  corio::detail::runtime_core* m_home = nullptr;
};

/// A set of jobs submitted together, with their results (see the header comment).
struct pool_batch {
  pool_job_fn fn = nullptr;
  std::vector<std::byte> in;
  std::vector<std::size_t> in_off{0};  // job i is in[in_off[i], in_off[i+1])
  std::vector<std::byte> out;
  std::vector<std::size_t> out_off;
  std::vector<std::uint32_t> out_len;
  std::vector<std::uint32_t> status;  // 0 ok, else a pool_errc or status_cancelled
  std::vector<std::size_t> order;     // completion order (map_unordered)
  std::size_t remaining = 0;          // guarded by the pool's mutex
  /// Streaming calls: each result goes to this sink (under the pool's mutex, never
  /// blocking) instead of `out`; called once more with index == size() at the end.
  void (*sink)(void* ctx, std::size_t index, std::uint32_t status, std::span<const std::byte> payload) = nullptr;
  void* sink_ctx = nullptr;
  completion_signal done;

  [[nodiscard]] std::size_t size() const noexcept { return in_off.size() - 1; }
  void add(std::span<const std::byte> job) {
    in.insert(in.end(), job.begin(), job.end());
    in_off.push_back(in.size());
  }
  template <class T>
  void add_value(const T& v) {
    encode_value(v, in);
    in_off.push_back(in.size());
  }
  [[nodiscard]] std::span<const std::byte> job(std::size_t i) const noexcept {
    return std::span(in).subspan(in_off[i], in_off[i + 1] - in_off[i]);
  }
  [[nodiscard]] std::span<const std::byte> result(std::size_t i) const noexcept {
    return std::span(out).subspan(out_off[i], out_len[i]);
  }
};

}  // namespace detail
}  // namespace corio::ipc
