// Scaffolding shared by the process_pool tests: the fork server started before main(),
// and run_with_pool(), which runs one test body against a fresh pool on a fresh
// two-worker runtime and shuts the pool down after it.
#pragma once

#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>

#include <optional>
#include <utility>

#include "helpers.hpp"

namespace corio_test {

/// Started before main(): the program is still single-threaded (see fork.hpp).
inline const bool fork_server_started = corio::ipc::fork_server::start().has_value();

namespace detail {
template <class R, class... Args>
corio::task<std::optional<R>> pool_scope(corio::ipc::pool_options options, corio::task<R> (*body)(corio::ipc::process_pool&, Args...),
                                         Args... args) {
  auto pool = co_await corio::ipc::process_pool::start(options);
  if (!pool) {
    co_return std::nullopt;
  }
  R seen = co_await body(**pool, std::move(args)...);
  co_await (*pool)->shutdown();
  co_return std::optional<R>(std::move(seen));
}
}  // namespace detail

/// Runs `body(pool, args...)` (a coroutine function: no capturing lambda) on a new
/// runtime with two workers, against a pool started with `options`, then shuts the pool
/// down; REQUIREs that the fork server and the pool started. Yields what the body
/// yielded.
template <class R, class... Args, class... Given>
R run_with_pool(corio::ipc::pool_options options, corio::task<R> (*body)(corio::ipc::process_pool&, Args...), Given&&... args) {
  REQUIRE(fork_server_started);
  corio::runtime rt(corio_test::workers(2));
  auto seen = rt.block_on(detail::pool_scope<R, Args...>(options, body, Args(std::forward<Given>(args))...));
  REQUIRE(seen.has_value());
  return std::move(*seen);
}

}  // namespace corio_test
