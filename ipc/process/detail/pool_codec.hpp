// corio::ipc::detail: the process pool's wire format, typed codecs and batch bookkeeping.
//
// Frames on a worker's socket (native endianness: both ends are the same binary):
//   parent → worker: job_header { u32 len; u32 seq; u64 id; u32 fn; u32 0 } + len bytes
//   worker → parent: result_header { u32 len; u32 status; u64 id } + len bytes
// `fn` is an index into the table of job functions the parent registered in the shared
// page (see worker_page): no function pointer is ever read from the socket. `seq`
// numbers the frames sent to one worker (0, 1, 2, ... wrapping): it indexes the worker's
// withdrawal bitmap. status: 0 ok, else a pool_errc value, or status_cancelled /
// status_withdrawn (parent-internal). A failure's payload is its text (the exception's
// what() for pool_errc::job_threw). Every `len` is at most the pool's max_message
// (itself below 4 GiB): the parent refuses a larger job before it is framed, the worker
// replaces a larger result by a result_too_large failure, and either side treats a
// larger length it reads as a broken stream (the worker exits with
// worker_exit_protocol; the parent kills the worker and recovers it as crashed).
//
// The shared page (one memfd per worker, mapped by both sides), worker_page:
//   running: the id of the job the worker is running (0 between jobs): names the job
//     that killed a crashed worker;
//   max_message: the longest job or result payload (written before the fork);
//   fns[fn_count]: the job functions the parent registered, by index (entries written
//     before fn_count is raised; both before any frame that uses them is sent);
//   withdrawn[]: one bit per seq slot (seq % bits, bits a power of two >= the window):
//     the parent sets a job's bit when its call was cancelled while the job was still
//     queued in the worker; the worker checks the bit before running a job and, if set,
//     answers status_withdrawn at once without running it. The parent clears the bit
//     when that job's answer arrives, before the slot can be reused (a slot is reused
//     only window frames later, and the window bounds the jobs in flight).
// Thread-safety: a pool_batch is filled by the pool under its mutex; its owner reads it
// after `done` fired. Cost: one contiguous buffer per direction per batch, no per-item
// allocation; a bulk batch (map_batched) borrows its input and writes its results into
// the caller's output, one memcpy per result.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
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
  std::uint32_t fn;  // index into worker_page::fns
  std::uint32_t reserved;
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
/// Most distinct job functions one pool can run (the table in the shared page).
inline constexpr std::uint32_t max_job_functions = 1024;
/// The longest payload a frame can carry (its length is 32 bits).
inline constexpr std::size_t max_frame_payload = 0xffffffffU;
/// The exit code of a worker that read a broken frame (a length over max_message, an
/// unregistered function): it runs nothing more. It also sets worker_page::broken_frame
/// (a job may call _exit(3) itself).
inline constexpr int worker_exit_protocol = 3;

/// The page shared by the parent and one worker (see the header comment); the
/// withdrawal bitmap's `bits / 64` words follow it in the mapping.
struct worker_page {
  std::atomic<std::uint64_t> running;
  std::uint64_t bits;         // the bitmap's size in bits (a power of two); written before the fork
  std::uint64_t max_message;  // written before the fork
  std::atomic<std::uint32_t> fn_count;
  std::atomic<std::uint32_t> broken_frame;  // set by a worker before it exits on a broken frame
  std::uint64_t fns[max_job_functions];  // pool_job_fn values; [0, fn_count) are valid

  /// Publishes the registered functions (the parent; under the pool's mutex): entries
  /// first, then the count.
  void publish(std::span<const pool_job_fn> table) noexcept {
    for (std::size_t i = 0; i < table.size(); ++i) {
      fns[i] = reinterpret_cast<std::uint64_t>(table[i]);
    }
    // release: the worker's acquire load of fn_count sees the entries below it.
    fn_count.store(static_cast<std::uint32_t>(table.size()), std::memory_order_release);
  }
  /// The registered function `index` (the worker), or nullptr if there is none.
  [[nodiscard]] pool_job_fn function(std::uint32_t index) const noexcept {
    // acquire: pairs with publish(); the entries below the count are written.
    if (index >= fn_count.load(std::memory_order_acquire)) {
      return nullptr;
    }
    return reinterpret_cast<pool_job_fn>(static_cast<std::uintptr_t>(fns[index]));
  }

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
struct fn_traits {
  static_assert(sizeof(F) == 0,
                "process_pool: a typed job is a function `Out f(In)` or a lambda without captures "
                "(`[](int x) { return x * x; }`); a capturing or generic lambda cannot run in another process");
};
template <class R, class A>
struct fn_traits<R (*)(A)> {
  using arg = std::remove_cvref_t<A>;
  using ret = R;
};

/// The signature of a typed job `Fn`: a function pointer, or a lambda without captures
/// (unary `+` converts it to its function pointer; a capturing lambda has none).
template <auto Fn>
using job_traits = fn_traits<decltype(+Fn)>;

/// One item: decode, call, encode.
template <auto Fn>
void item_job(std::span<const std::byte> in, std::vector<std::byte>& out) {
  using traits = job_traits<Fn>;
  encode_value(Fn(decode_value<typename traits::arg>(in)), out);
}

/// A chunk of items (an array of trivially copyable In) → an array of Out, written into
/// `out` grown once to its final size.
template <auto Fn>
void chunk_job(std::span<const std::byte> in, std::vector<std::byte>& out) {
  using In = typename job_traits<Fn>::arg;
  using Out = typename job_traits<Fn>::ret;
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
///
/// Bulk calls (map_batched) copy nothing per job: the jobs are slices of one borrowed
/// input (`in_view`, kept alive by `in_keep`, which the worker's outbox shares while it
/// writes from it: a cancelled call may free the batch before its bytes are written),
/// and a job's result of the expected size is copied straight into its slice of the
/// caller's pre-sized output (`direct_out`) as it arrives; `placed[i]` says it was.
struct pool_batch {
  pool_job_fn fn = nullptr;
  std::uint32_t fn_index = 0;  // fn's index in the pool's table (set when queued)
  std::vector<std::byte> in;
  std::vector<std::size_t> in_off{0};  // job i is input()[in_off[i], in_off[i+1])
  std::span<const std::byte> in_view;  // with in_keep: the input instead of `in`
  std::shared_ptr<const void> in_keep;
  std::vector<std::byte> out;
  std::vector<std::size_t> out_off;
  std::vector<std::uint32_t> out_len;
  std::byte* direct_out = nullptr;      // job i's result goes to [direct_off[i], direct_off[i+1])
  std::vector<std::size_t> direct_off;  // (only with direct_out)
  std::vector<std::uint8_t> placed;     // job i's result was copied to direct_out
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
  /// Adds a job that is the next `bytes` bytes of the borrowed input (see borrow()).
  void add_slice(std::size_t bytes) { in_off.push_back(in_off.back() + bytes); }
  /// Makes `view` (kept alive by `keep`) the input that add_slice() jobs slice.
  void borrow(std::span<const std::byte> view, std::shared_ptr<const void> keep) noexcept {
    in_view = view;
    in_keep = std::move(keep);
  }
  /// Where the jobs' bytes are: the borrowed input, or the batch's own `in`.
  [[nodiscard]] std::span<const std::byte> input() const noexcept {
    return in_keep ? in_view : std::span<const std::byte>(in);
  }
  [[nodiscard]] std::span<const std::byte> job(std::size_t i) const noexcept {
    return input().subspan(in_off[i], in_off[i + 1] - in_off[i]);
  }
  /// Bulk calls: job i's result, when it succeeds with exactly direct_off[i + 1] -
  /// direct_off[i] bytes, is copied to `dst` + direct_off[i] (which must hold
  /// direct_off.back() bytes and outlive the call).
  void deliver_to(std::byte* dst, std::vector<std::size_t> offsets) noexcept {
    direct_out = dst;
    direct_off = std::move(offsets);
  }
  /// Copies a result to its place in direct_out if it is one of those (under the pool's
  /// mutex); false if it must be kept in `out`.
  bool place(std::size_t i, std::uint32_t status, std::span<const std::byte> payload) noexcept {
    if (direct_out == nullptr || status != 0 || payload.size() != direct_off[i + 1] - direct_off[i]) {
      return false;
    }
    if (!payload.empty()) {
      std::memcpy(direct_out + direct_off[i], payload.data(), payload.size());
    }
    placed[i] = 1;
    return true;
  }
  [[nodiscard]] std::span<const std::byte> result(std::size_t i) const noexcept {
    return std::span(out).subspan(out_off[i], out_len[i]);
  }
};

}  // namespace detail
}  // namespace corio::ipc
