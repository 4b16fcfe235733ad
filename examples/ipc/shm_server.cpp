// shm_server: the tutorial's server.py of SharedMemory, with a process-shared event: it
// creates a named shared-memory block, fills an array in it and then sets a
// process_event (ipc/process_event.hpp) that the client (shm_client, a separate
// program) awaits; it waits for the client's "done" event and removes the name. Ctrl-C or
// SIGTERM while it waits ends the wait: the name is removed all the same (exit 0), never
// left behind in /dev/shm.
//
//   shm_server [--name /NAME] [--count N]   serve; run `shm_client --name /NAME` elsewhere
//                                           (N Fibonacci numbers, 1..1000, default 6;
//                                           modulo 2^64 from the 94th on)
//   shm_server --self-test                  also starts shm_client itself and checks it
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "../common/shutdown.hpp"
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

corio::task<int> serve(const corio::signal_stream& signals, std::string name, std::size_t count, bool self_test) {
  auto shm = corio::ipc::shared_memory::create(name, shm_array::kSize);
  if (!shm) {
    std::fprintf(stderr, "create %s: %s\n", name.c_str(), shm.error().message().c_str());
    co_return 1;
  }
  auto filled = corio::ipc::process_event::construct(*shm, shm_array::kFilledAt);
  auto done = corio::ipc::process_event::construct(*shm, shm_array::kDoneAt);
  if (!filled || !done) {
    (void)corio::ipc::shared_memory::remove(name);
    co_return 1;
  }
  std::printf("server: shared block %s is ready; waiting for the client to read it\n", name.c_str());
  std::fflush(stdout);
  std::optional<corio::ipc::child> client;
  if (self_test) {
    auto c = corio::ipc::command(shm_array::sibling("shm_client")).args({"--name", name}).spawn();
    if (!c) {
      std::fprintf(stderr, "spawn shm_client: %s\n", c.error().message().c_str());
      (void)corio::ipc::shared_memory::remove(name);
      co_return 1;
    }
    client.emplace(std::move(*c));
  }
  // Take our time, so that the client really waits on the event.
  // A cancelled pause would only shorten it.
  (void)co_await corio::sleep_for(100ms);
  auto* numbers = reinterpret_cast<std::uint64_t*>(shm->bytes().data() + shm_array::kArrayAt);
  for (std::size_t i = 0; i < count; ++i) {
    // The tutorial's 1, 1, 2, 3, 5, 8 ..., modulo 2^64 from the 94th on (unsigned: defined).
    numbers[i] = i < 2 ? 1 : numbers[i - 1] + numbers[i - 2];
  }
  *reinterpret_cast<std::uint64_t*>(shm->bytes().data() + shm_array::kCountAt) = count;
  filled->set();  // release: the array is visible to whoever sees the event set
  std::printf("server: filled %zu numbers, event set\n", count);
  std::fflush(stdout);
  std::stop_source stop;  // a signal, or the wait is over
  auto watcher = corio::spawn(example::stop_on_signal(signals, stop, "server"));
  auto read = co_await corio::timeout(done->wait(stop.get_token()), 60s);
  const bool signalled = stop.stop_requested();
  stop.request_stop();
  co_await std::move(watcher);
  (void)corio::ipc::shared_memory::remove(name);
  if (signalled) {
    std::printf("server: name %s removed\n", name.c_str());
    co_return 0;
  }
  if (!read) {
    std::fprintf(stderr, "server: the client never finished: %s\n", read.error().message().c_str());
    co_return 1;
  }
  std::printf("server: the client has read the array; name removed\n");
  if (client) {
    auto st = co_await client->wait();
    co_return st && st->success() ? 0 : 1;
  }
  co_return 0;
}

int example_main(int argc, char** argv) {
  std::string name = "/corio-example-array-" + std::to_string(::getpid());
  std::size_t count = 6;
  bool self_test = false;
  example::args args("shm_server", "fill a named shared array, then set a process-shared event for shm_client");
  args.option("--name", name, "/NAME", "name of the shared-memory block (default: /corio-example-array-PID)");
  args.option<std::size_t>("--count", count, 1, shm_array::kMaxCount, "N",
                                   "how many Fibonacci numbers, 1..1000 (default 6; modulo 2^64 from the 94th on)");
  args.flag("--self-test", self_test, "also start shm_client (next to this program) and check that it read them");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  auto signals = example::shutdown_signals("shm_server");  // before the runtime's threads start
  return corio::run(serve(signals, name, count, self_test));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("shm_server", example_main, argc, argv); }
