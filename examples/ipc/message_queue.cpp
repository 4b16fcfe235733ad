// message_queue: the tutorial's queue between processes, as a POSIX message queue. A child
// process (forked through corio's fork server) sends numbered jobs, urgent ones with a
// higher priority, then "done"; the parent's task awaits them without blocking its
// worker and prints them in the order the kernel hands them out (priority first).
//
// The queue's name (/corio-example-PID) outlives the processes until it is removed, so the
// parent removes it however it ends: also on Ctrl-C or SIGTERM, which end its waits (the
// child is killed and reaped first; exit status 1).
//
//   message_queue [jobs]                 default 8
//   message_queue --hold-ms MS [jobs]    wait MS with the queue made and full before
//                                        receiving (look at it in /dev/mqueue, if mounted)
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "../common/shutdown.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/message_queue.hpp>
#include <corio/ipc/process/process.hpp>

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

corio::task<int> parent(const corio::signal_stream& signals, std::string name, int jobs,
                        std::chrono::milliseconds hold) {
  corio::ipc::message_queue_options options;
  options.max_messages = 4;  // fewer than the jobs: the child waits for room
  options.message_size = 128;
  auto q = corio::ipc::message_queue::create(name, options);
  if (!q) {
    std::fprintf(stderr, "create %s: %s\n", name.c_str(), q.error().message().c_str());
    co_return 1;
  }
  std::printf("parent: message queue %s created\n", name.c_str());
  std::fflush(stdout);
  std::stop_source stop;  // a signal came, or the parent is done
  auto watcher = corio::spawn(example::stop_on_signal(signals, stop, "parent"));
  // The callable travels to the fork server as bytes: the name goes as a char array.
  std::array<char, 64> name_chars{};
  name.copy(name_chars.data(), name_chars.size() - 1);
  auto child = co_await corio::ipc::fork([name_chars, jobs] {
    auto mine = corio::ipc::message_queue::open(name_chars.data());
    if (!mine) {
      return 2;
    }
    for (int i = 0; i < jobs; ++i) {
      const bool urgent = i % 3 == 2;
      const std::string job = "job " + std::to_string(i) + (urgent ? " (urgent)" : "");
      if (!mine->send_blocking(bytes_of(job), urgent ? 10 : 1)) {
        return 3;
      }
    }
    const std::string done = "done";
    return mine->send_blocking(bytes_of(done), 0) ? 0 : 4;  // lowest priority: comes last
  });
  if (!child) {
    std::fprintf(stderr, "fork: %s\n", child.error().message().c_str());
    stop.request_stop();
    co_await std::move(watcher);
    (void)corio::ipc::message_queue::remove(name);
    co_return 1;
  }
  if (hold.count() > 0) {
    std::printf("parent: the child fills the queue and waits for room; holding for %lld ms\n",
                static_cast<long long>(hold.count()));
    std::fflush(stdout);
    (void)co_await corio::sleep_for(hold, stop.get_token());  // a signal ends it early
  }
  std::vector<std::byte> buf(128);
  int received = 0;
  bool failed = false;
  while (!stop.stop_requested()) {
    // A child that fails stops sending: give up after a while instead of waiting forever.
    auto m = co_await corio::timeout(q->receive(buf, stop.get_token()), std::chrono::seconds(10));
    if (!m) {
      if (!stop.stop_requested()) {
        std::fprintf(stderr, "receive: %s\n", m.error().message().c_str());
      }
      failed = true;
      break;
    }
    std::string text(reinterpret_cast<const char*>(buf.data()), m->size);
    if (text == "done") {
      break;
    }
    ++received;
    std::printf("parent %d got \"%s\" (priority %u)\n", ::getpid(), text.c_str(), m->priority);
  }
  const bool signalled = stop.stop_requested();
  if (failed || signalled) {
    (void)child->kill();  // it may be waiting for room in a queue nobody reads any more
  }
  auto status = co_await child->wait();  // killed or done: it ends at once
  stop.request_stop();
  co_await std::move(watcher);
  (void)corio::ipc::message_queue::remove(name);
  if (signalled) {
    std::printf("parent: %d of %d jobs received before the signal; queue %s removed\n", received, jobs, name.c_str());
    co_return 1;
  }
  const bool ok = received == jobs && status && status->code() == 0;
  std::printf("%d of %d jobs received, child %s\n", received, jobs, ok ? "exited 0" : "failed");
  co_return ok ? 0 : 1;
}

int example_main(int argc, char** argv) {
  int jobs = 8;
  int hold_ms = 0;
  example::args args("message_queue", "a forked child sends jobs to its parent through a POSIX message queue");
  args.option("--hold-ms", hold_ms, 0, 86400000, "MS",
              "wait this long with the queue made (its name printed) before receiving (default 0)");
  args.positional("jobs", jobs, 0, 1000000, "jobs the child sends, 0..1000000 (default 8)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  // First, while the program is single-threaded: the helper that forks every child.
  if (auto ok = corio::ipc::fork_server::start(); !ok) {
    std::fprintf(stderr, "fork server: %s\n", ok.error().message().c_str());
    return 1;
  }
  auto signals = example::shutdown_signals("message_queue");  // before the runtime's threads start
  return corio::run(parent(signals, "/corio-example-" + std::to_string(::getpid()), jobs,
                           std::chrono::milliseconds(hold_ms)));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("message_queue", example_main, argc, argv); }
