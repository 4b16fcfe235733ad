// shm_client: the tutorial's client.py of SharedMemory: attaches to the block shm_server
// created, by name, awaits the server's process_event (ipc/process_event.hpp) without
// blocking a worker, prints the array and sets the "done" event.
//
//   shm_client --name /NAME     attach to a running shm_server's block
//   shm_client --self-test      start shm_server itself first (it then waits for us)
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "shm_array.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>
#include <corio/ipc/process_event.hpp>
#include <corio/ipc/shared_memory.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

using namespace std::chrono_literals;

namespace {

/// Opens the block and its event, retrying while the server has not built them yet.
corio::task<corio::result<corio::ipc::shared_memory>> attach(const std::string& name) {
  const auto give_up = corio::clock::now() + 30s;
  for (;;) {
    auto shm = corio::ipc::shared_memory::open(name);
    if (shm && corio::ipc::process_event::attach(*shm, shm_array::kDoneAt)) {
      co_return shm;
    }
    if (corio::clock::now() > give_up) {
      co_return corio::unexpected(shm ? corio::make_error_code(corio::errc::timed_out) : shm.error());
    }
    // Not created or not built yet. A failed pause (cancelled, off a worker) ends the retry.
    if (auto slept = co_await corio::sleep_for(10ms); !slept) {
      co_return corio::unexpected(slept.error());
    }
  }
}

corio::task<int> read_array(std::string name, bool self_test) {
  std::optional<corio::ipc::child> server;
  if (self_test) {
    auto s = corio::ipc::command(shm_array::sibling("shm_server")).args({"--name", name}).spawn();
    if (!s) {
      std::fprintf(stderr, "spawn shm_server: %s\n", s.error().message().c_str());
      co_return 1;
    }
    server.emplace(std::move(*s));
  }
  auto shm = co_await attach(name);
  if (!shm) {
    std::fprintf(stderr, "client: attach %s: %s\n", name.c_str(), shm.error().message().c_str());
    co_return 1;
  }
  // shm_server builds "filled" before "done", which attach() waited for; a block that still
  // lacks one was not built by shm_server (or not this version of it).
  auto filled = corio::ipc::process_event::attach(*shm, shm_array::kFilledAt);
  auto done = corio::ipc::process_event::attach(*shm, shm_array::kDoneAt);
  if (!filled || !done) {
    std::fprintf(stderr, "client: %s holds no process_event at offset %zu: %s\n", name.c_str(),
                 !filled ? shm_array::kFilledAt : shm_array::kDoneAt,
                 (!filled ? filled.error() : done.error()).message().c_str());
    co_return 1;
  }
  std::printf("client: attached to %s; waiting for the server's event\n", name.c_str());
  std::fflush(stdout);
  auto ready = co_await corio::timeout(filled->wait(), 60s);
  if (!ready) {
    std::fprintf(stderr, "client: %s\n", ready.error().message().c_str());
    co_return 1;
  }
  const auto count = *reinterpret_cast<const std::uint64_t*>(shm->bytes().data() + shm_array::kCountAt);
  const auto* numbers = reinterpret_cast<const std::int64_t*>(shm->bytes().data() + shm_array::kArrayAt);
  std::printf("client: Shared Array is : [");
  bool fibonacci = count >= 1 && count <= shm_array::kMaxCount;
  for (std::uint64_t i = 0; i < count && i < shm_array::kMaxCount; ++i) {
    std::printf("%s%lld", i == 0 ? "" : " ", static_cast<long long>(numbers[i]));
    fibonacci = fibonacci && numbers[i] == (i < 2 ? 1 : numbers[i - 1] + numbers[i - 2]);
  }
  std::printf("]\n");
  std::fflush(stdout);
  done->set();
  if (server) {
    auto st = co_await server->wait();
    fibonacci = fibonacci && st && st->success();
  }
  co_return fibonacci ? 0 : 1;
}

int example_main(int argc, char** argv) {
  std::string name;
  bool self_test = false;
  example::args args("shm_client", "await shm_server's process-shared event, then read the shared array");
  args.option("--name", name, "/NAME", "name of the server's shared-memory block");
  args.flag("--self-test", self_test, "start shm_server (next to this program) first");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (name.empty()) {
    if (!self_test) {
      std::fprintf(stderr, "shm_client: --name is required (or --self-test); see --help\n");
      return 2;
    }
    name = "/corio-example-array-" + std::to_string(::getpid());
  }
  return corio::run(read_array(name, self_test));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("shm_client", example_main, argc, argv); }
