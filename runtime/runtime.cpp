// corio::runtime, the public facade (runtime/runtime.hpp): validating the configuration,
// starting and shutting down the runtime_core, metrics.
#include <corio/runtime/runtime.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>

#include <corio/runtime/internal/runtime_core.hpp>

namespace corio {

namespace {

bool is_power_of_two(unsigned v) { return v != 0 && (v & (v - 1)) == 0; }

void validate(const runtime_config& c) {
  auto fail = [](const std::string& what) {
    throw std::system_error(make_error_code(errc::invalid_config), "corio::runtime_config: " + what);
  };
  if (c.workers == 0 || c.workers > 1024) {
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
}

}  // namespace

runtime::runtime(const runtime_config& config) {
  validate(config);
  m_core = std::make_unique<detail::runtime_core>(config);
  std::string why;
  if (std::error_code ec = m_core->start(why)) {
    m_core.reset();
    throw std::system_error(ec, "corio: cannot start the runtime: " + why);
  }
}

runtime::~runtime() { shutdown(); }

void runtime::shutdown() {
  if (m_core) {
    if (port::current_worker() != nullptr && &port::current_worker()->rt == m_core.get()) {
      std::fprintf(stderr, "corio: runtime::shutdown called from its own worker thread\n");
      std::abort();
    }
    m_core->shutdown();
  }
}

runtime_metrics runtime::metrics() const { return m_core->metrics(); }

unsigned runtime::worker_count() const noexcept { return static_cast<unsigned>(m_core->workers.size()); }

}  // namespace corio
