// Helpers of the manager tests (namespace corio_test): waiting, bounded, for a condition
// that a broken build never brings about, so that its test fails instead of hanging; a
// manager_server on a free loopback port (authkey "password") and the run of a test body
// with it serving and a client connected; releasing a proxy and requiring that it worked.
#pragma once

#include <catch2/catch.hpp>

#include <corio/ipc/manager_client.hpp>
#include <corio/ipc/manager_server.hpp>
#include <corio/runtime/runtime.hpp>
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/task.hpp>
#include <corio/runtime/time.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

#include "helpers.hpp"

namespace corio_test {

/// Waits until condition() holds (true) or `limit` passed (false), looking every 1 ms.
inline corio::task<bool> within(std::chrono::seconds limit, std::function<bool()> condition) {
  auto deadline = corio::clock::now() + limit;
  while (!condition()) {
    if (corio::clock::now() >= deadline) {
      co_return false;
    }
    (void)co_await corio::sleep_for(std::chrono::milliseconds(1));
  }
  co_return true;
}

/// A manager_server bound to a free loopback port with `o` and the authkey "password";
/// the test fails (REQUIRE) if it cannot bind.
inline corio::ipc::manager_server bind_loopback_server(corio::ipc::manager_options o = {}) {
  o.listen.auth.authkey = "password";
  auto s = corio::ipc::manager_server::bind(corio::ipc::socket_address::loopback_v4(0), std::move(o));
  REQUIRE(s);
  return std::move(*s);
}

/// Runs body(holder, client) on a runtime of `workers` workers, with holder.server (see
/// bind_loopback_server) serving and `client` connected to it with "password"; then stops
/// the server. Requires that the client connected and that serve() ended without error.
template <class Holder>
void serve_with_client(Holder& holder,
                       std::type_identity_t<std::function<corio::task<void>(Holder&, corio::ipc::manager_client&)>> body,
                       unsigned workers) {
  corio::runtime rt(corio_test::workers(workers));
  rt.block_on([](Holder& h, std::function<corio::task<void>(Holder&, corio::ipc::manager_client&)>& body)
                  -> corio::task<void> {
    auto serving = corio::spawn(h.server.serve());
    auto client = co_await corio::ipc::manager_client::connect(h.server.address().value(), "password");
    REQUIRE(client);
    co_await body(h, *client);
    h.server.stop();
    auto r = co_await serving;
    REQUIRE(r);
  }(holder, body));
}

/// Releases `proxy` (drops its reference on the server) and requires that the release
/// succeeded; a failure reports the error's message.
inline corio::task<void> require_released(corio::ipc::manager_proxy& proxy) {
  auto released = co_await proxy.release();
  INFO((released ? std::string("ok") : released.error().message()));
  REQUIRE(released);
}

}  // namespace corio_test
