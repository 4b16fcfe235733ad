// corio::runtime, the public facade (runtime/runtime.hpp): validating the configuration,
// starting and shutting down the runtime_core, metrics.
#include <corio/runtime/runtime.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <system_error>
#include <thread>

#include <corio/runtime/internal/runtime_core.hpp>

namespace corio {

namespace {

bool is_power_of_two(unsigned v) { return v != 0 && (v & (v - 1)) == 0; }

// CORIO_WORKERS's value, or nullptr when it is unset or empty.
const char* workers_env() noexcept {
  const char* v = std::getenv("CORIO_WORKERS");
  return v != nullptr && *v != '\0' ? v : nullptr;
}

// The count a CORIO_WORKERS value names, or 0 unless it is a decimal number in 1..1024
// (no sign, no spaces).
unsigned parse_workers(const char* v) noexcept {
  unsigned n = 0;
  for (const char* p = v; *p != '\0'; ++p) {
    if (*p < '0' || *p > '9') {
      return 0;
    }
    n = n * 10 + static_cast<unsigned>(*p - '0');
    if (n > 1024) {
      return 0;
    }
  }
  return n;
}

void validate(const runtime_config& c) {
  auto fail = [](const std::string& what) {
    throw std::system_error(make_error_code(errc::invalid_config), "corio::runtime_config: " + what);
  };
  if (c.workers == 0 || c.workers > 1024) {
    if (const char* v = workers_env(); c.workers == 0 && v != nullptr && parse_workers(v) == 0) {
      std::string what = "workers = 0: the environment variable CORIO_WORKERS = '";
      what.append(v).append("' is not a number in 1..1024");
      fail(what);
    }
    fail("workers = " + std::to_string(c.workers) + " (must be 1..1024)");
  }
  if (!is_power_of_two(c.ring_entries) || c.ring_entries > 32768) {
    fail("ring_entries = " + std::to_string(c.ring_entries) + " (must be a power of two in 1..32768)");
  }
  if (!is_power_of_two(c.local_queue_capacity) || c.local_queue_capacity < 4 || c.local_queue_capacity > 65536) {
    fail("local_queue_capacity = " + std::to_string(c.local_queue_capacity) +
         " (must be a power of two in 4..65536)");
  }
  if (c.global_queue_interval == 0 || c.global_queue_interval > 1000000) {
    fail("global_queue_interval = " + std::to_string(c.global_queue_interval) + " (must be 1..1000000)");
  }
  if (c.max_blocking_threads == 0 || c.max_blocking_threads > 4096) {
    fail("max_blocking_threads = " + std::to_string(c.max_blocking_threads) + " (must be 1..4096)");
  }
  if (c.blocking_keep_alive.count() < 0) {
    fail("blocking_keep_alive is negative");
  }
  if (c.timer_takeover_delay.count() < 0) {
    fail("timer_takeover_delay is negative");
  }
}

}  // namespace

unsigned default_workers() noexcept {
  if (const char* v = workers_env()) {
    return parse_workers(v);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw != 0 ? hw : 1;
}

runtime::runtime(const runtime_config& config) {
  validate(config);
  m_core = std::make_shared<detail::runtime_core>(config);
  std::string why;
  if (std::error_code ec = m_core->start(why)) {
    m_core.reset();
    throw std::system_error(ec, "corio: cannot start the runtime: " + why);
  }
}

runtime::~runtime() {
  // After a shutdown(limit) that left jobs running, the helper thread owns the rest: the
  // destructor does not wait for it (that is what the limit was for).
  if (m_core && !m_core->shutdown_begun()) {
    shutdown();
  }
}

void runtime::shutdown() { (void)shutdown(std::chrono::nanoseconds::max()); }

bool runtime::shutdown(saturating_duration limit) {
  if (!m_core) {
    return true;
  }
  if (port::current_worker() != nullptr && &port::current_worker()->rt == m_core.get()) {
    std::fprintf(stderr, "corio: runtime::shutdown called from its own worker thread\n");
    std::abort();
  }
  return m_core->shutdown(limit.get());
}

runtime_metrics runtime::metrics() const { return m_core->metrics(); }

unsigned runtime::worker_count() const noexcept { return static_cast<unsigned>(m_core->workers.size()); }

}  // namespace corio
