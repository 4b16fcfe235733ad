// sysv_queue: the tutorial's sysv_ipc.MessageQueue, typed messages between a parent and a
// forked child through one SysV message queue, as corio awaitables on both sides.
//
// The classic SysV idiom: the message type addresses the reader. The parent sends jobs as
// type 1 (the child reads only type 1); the child answers each with its square, as type 2
// when it is urgent (a multiple of 5) and type 3 otherwise, then says "bye" as type 9.
// The parent first waits for exactly type 9, then drains the answers with type -3 (the
// lowest type up to 3 first): every urgent answer comes out before the normal ones.
//
// The parent awaits the child's exit beside its own work (a watcher task that owns the
// child; the exit stops a stop_source whose token the hold, the sends and the receive
// take): a child that ends without its bye (killed, or failed: its runtime could not
// start, a call on the queue failed) ends them at once, with "sysv_queue: the child ended
// before sending bye: signal 9 (Killed)" (or its exit code) and exit status 1; a child
// alive but silent is given up after 20 s. A child given up is killed by its watcher.
//
// A SysV queue outlives its processes (until remove() or a reboot), so the parent removes
// it however it ends (a guard object, so an exception too): also on Ctrl-C or SIGTERM,
// where the removal is what stops the work (every wait on the queue, the child's too,
// ends with identifier_removed; the child is killed; exit status 1).
//
// The parent prints the queue's id and the child's pid as it starts (look at the queue
// with `ipcs -q`, at the child with `ps`).
//   sysv_queue [jobs]     default 10, at most 200 (the answers must fit the queue)
//   sysv_queue --hold-ms MS [jobs]   wait MS before sending
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "../common/shutdown.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>
#include <corio/ipc/sysv_message_queue.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stop_token>
#include <string>
#include <vector>

namespace {

using corio::ipc::sysv_message_queue;

constexpr long to_child = 1, urgent = 2, normal = 3, bye = 9;

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

std::string text_of(const std::vector<std::byte>& buf, std::size_t n) {
  return std::string(reinterpret_cast<const char*>(buf.data()), n);
}

/// The child: answers jobs until "stop", on its own runtime.
corio::task<int> child_main(int id) {
  auto q = sysv_message_queue::from_id(id);
  if (!q) {
    co_return 2;
  }
  std::vector<std::byte> buf(64);
  for (;;) {
    auto job = co_await q->receive(buf, to_child);
    if (!job) {
      co_return 3;
    }
    const std::string text = text_of(buf, job->size);
    if (text == "stop") {
      break;
    }
    const long n = std::atol(text.c_str());
    const std::string answer = std::to_string(n) + "^2 = " + std::to_string(n * n);
    if (!co_await q->send(bytes_of(answer), n % 5 == 0 ? urgent : normal)) {
      co_return 4;
    }
  }
  co_return co_await q->send(bytes_of("bye from " + std::to_string(::getpid())), bye) ? 0 : 5;
}

// Removes the queue when the parent's scope ends, however it ends (an exception too).
struct queue_remover {
  const sysv_message_queue& q;
  explicit queue_remover(const sysv_message_queue& queue) noexcept : q(queue) {}
  queue_remover(const queue_remover&) = delete;
  queue_remover& operator=(const queue_remover&) = delete;
  ~queue_remover() { (void)q.remove(); }  // fails harmlessly for a queue already removed
};

// On the first signal of `signals`, stops `stop` and then removes the queue (which ends
// every wait on it); ends quietly once `stop` is stopped by the parent. The stop comes
// first, so that the waits the removal ends see a signal, not a child gone early.
corio::task<void> remove_on_signal(const corio::signal_stream& signals, std::stop_source stop,
                                   const sysv_message_queue* q) {
  if (auto got = co_await signals.next(stop.get_token())) {
    stop.request_stop();
    std::printf("parent: SIG%s received, removing the queue\n", ::sigabbrev_np(got->number));
    std::fflush(stdout);
    (void)q->remove();
  }
}

// Owns the child: awaits its end (and reaps it), then stops `child_gone`. A child that
// dies or fails (killed, its runtime unable to start, an error) never says bye: the
// parent's waits take `child_gone`'s token, so they end at once instead of after the hold
// or the 20 s limit. A stop on `give_up` (the parent gave up, or a signal came) kills the
// child and reaps it; the status is then operation_canceled.
corio::task<corio::result<corio::ipc::exit_status>> watch_exit(corio::ipc::child c, std::stop_token give_up,
                                                              std::stop_source child_gone) {
  auto status = co_await c.wait(give_up, corio::ipc::on_cancel::kill);
  child_gone.request_stop();
  co_return status;
}

// Waits for the child's bye in `buf`: until it comes, `over` is stopped (the child ended,
// or a signal came) or 20 s pass (a child alive but stuck).
corio::task<corio::result<corio::ipc::sysv_received>> await_bye(const sysv_message_queue& q,
                                                                std::vector<std::byte>& buf, std::stop_token over) {
  auto done = co_await corio::timeout(q.receive(buf, bye, over), std::chrono::seconds(20));
  if (!done && over.stop_requested()) {
    co_return q.try_receive(buf, bye);  // a child that said bye and exited: its bye is queued
  }
  co_return done;
}

// Drains and prints the `jobs` answers (all queued once the bye came) with type -3: the
// urgent ones (type 2) first. Yields how many came; `urgent_first` says whether the order held.
int print_answers(const sysv_message_queue& q, std::vector<std::byte>& buf, int jobs, bool& urgent_first) {
  long last_type = urgent;
  for (int answers = 0; answers < jobs; ++answers) {
    auto a = q.try_receive(buf, -normal);
    if (!a) {
      std::fprintf(stderr, "answer %d: %s\n", answers + 1, a.error().message().c_str());
      return answers;
    }
    urgent_first = urgent_first && a->type >= last_type;
    last_type = a->type;
    std::printf("  %-7s %s\n", a->type == urgent ? "urgent" : "normal", text_of(buf, a->size).c_str());
  }
  return jobs;
}

// Sends the jobs and "stop" (type 1), after the hold; false once `over` is stopped (a
// signal came, or the child ended) before the sending, or a send failed (the queue removed).
corio::task<bool> send_jobs(const sysv_message_queue& q, int jobs, std::chrono::milliseconds hold,
                            std::stop_token over) {
  if (hold.count() > 0) {
    (void)co_await corio::sleep_for(hold, over);  // a signal or the child's end ends it early
  }
  bool ok = !over.stop_requested();
  for (int i = 1; i <= jobs && ok; ++i) {
    ok = static_cast<bool>(co_await q.send(bytes_of(std::to_string(i)), to_child, over));
  }
  co_return ok && co_await q.send(bytes_of("stop"), to_child, over);
}

// Runs the exchange with a forked child; yields the exit status.
corio::task<int> exchange(const sysv_message_queue& q, corio::ipc::child child, std::stop_source& stop, int jobs,
                          std::chrono::milliseconds hold) {
  const pid_t pid = child.id();
  std::printf("parent: child %d forked\n", pid);
  std::fflush(stdout);
  // Two sources beside `stop` (a signal): `give_up` tells the watcher to kill the child
  // (the parent failed, or a signal came: then a child stuck after its bye cannot hold
  // the parent), and `child_gone`, which ends the parent's waits, is stopped once no bye
  // can come: by the watcher when the child has ended, at once on a signal.
  std::stop_source give_up;
  std::stop_source child_gone;
  std::stop_callback on_signal(stop.get_token(), [give_up, child_gone]() mutable {
    give_up.request_stop();
    child_gone.request_stop();
  });
  auto exit_watch = corio::spawn(watch_exit(std::move(child), give_up.get_token(), child_gone));
  bool failed = !co_await send_jobs(q, jobs, hold, child_gone.get_token());
  std::vector<std::byte> buf(64);
  auto done = co_await await_bye(q, buf, child_gone.get_token());
  const bool ended_early = !done && child_gone.stop_requested() && !stop.stop_requested();
  bool urgent_first = true;
  int answers = 0;
  if (done) {
    std::printf("parent %d got \"%s\" (type %ld)\n", ::getpid(), text_of(buf, done->size).c_str(), done->type);
    answers = failed ? 0 : print_answers(q, buf, jobs, urgent_first);
  } else if (!ended_early) {
    std::fprintf(stderr, "waiting for bye: %s\n", done.error().message().c_str());
  }
  failed = failed || answers < jobs;
  if (failed) {
    give_up.request_stop();  // the watcher kills the child, unless it has ended already
  }
  auto status = co_await std::move(exit_watch);
  if (ended_early) {
    std::fprintf(stderr, "sysv_queue: the child ended before sending bye: %s\n",
                 status ? status->to_string().c_str() : status.error().message().c_str());
    co_return 1;
  }
  const bool child_ok = status && status->success();
  std::printf("%d of %d answers, urgent ones first: %s; child %s\n", answers, jobs, urgent_first ? "yes" : "no",
              child_ok ? "exited 0" : "failed");
  co_return !failed && urgent_first && child_ok ? 0 : 1;
}

corio::task<int> parent(const corio::signal_stream& signals, int jobs, std::chrono::milliseconds hold) {
  // A private queue: no key can find it; the child gets its id.
  auto made = sysv_message_queue::create(corio::ipc::sysv_key::private_key());
  if (!made) {
    std::fprintf(stderr, "create: %s\n", made.error().message().c_str());
    co_return 1;
  }
  const sysv_message_queue q = *made;
  const queue_remover remove_at_end{q};
  const int id = q.id();
  std::printf("parent: queue id %d\n", id);
  std::fflush(stdout);
  std::stop_source stop;  // a signal came (the queue is gone), or the parent is done
  auto watcher = corio::spawn(remove_on_signal(signals, stop, &q));
  auto child = co_await corio::ipc::fork([id] { return child_main(id); });
  int rc = 1;
  if (child) {
    rc = co_await exchange(q, std::move(*child), stop, jobs, hold);
  } else {
    std::fprintf(stderr, "fork: %s\n", child.error().message().c_str());
  }
  stop.request_stop();
  co_await std::move(watcher);
  co_return rc;  // remove_at_end removes the queue
}

int example_main(int argc, char** argv) {
  int jobs = 10;
  int hold_ms = 0;
  example::args args("sysv_queue", "typed messages between a parent and a forked child through a SysV message queue");
  args.option("--hold-ms", hold_ms, 0, 86400000, "MS",
              "wait this long with the queue made (its id printed) before sending (default 0)");
  args.positional("jobs", jobs, 1, 200, "jobs for the child, 1..200 (default 10; the answers must fit the queue)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  // First, while the program is single-threaded: the helper that forks every child.
  if (auto ok = corio::ipc::fork_server::start(); !ok) {
    std::fprintf(stderr, "fork server: %s\n", ok.error().message().c_str());
    return 1;
  }
  auto signals = example::shutdown_signals("sysv_queue");  // before the runtime's threads start
  return corio::run(parent(signals, jobs, std::chrono::milliseconds(hold_ms)));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("sysv_queue", example_main, argc, argv); }
