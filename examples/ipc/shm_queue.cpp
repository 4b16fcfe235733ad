// shm_queue: jobs across processes through corio's shared-memory queue
// (ipc/shm_queue.hpp) — the tutorial's multiprocessing.Queue of jobs and results,
// without pickling and without a kernel copy.
//
// The producer creates two queues, NAME-jobs and NAME-results, sends `jobs` numbers
// through the first with `co_await send()`, closes it, and collects the squares the
// consumers send back through the second. Each consumer receives jobs until the queue is
// closed and drained. Every wait (full, empty) is a futex wait through the worker's ring.
// The producer is the only sender of jobs and the only receiver of results, so it claims
// those two sides (claim_sending / claim_receiving: no lock per message), and releases
// the jobs claim right after the close, so that the consumers see the end at once.
// However the producer ends (all answers in, no answer within --timeout-ms, a failed
// spawn or claim, Ctrl-C or SIGTERM), it closes both queues first, which ends every
// consumer's wait and its own sender's, and removes both names: nothing is left waiting
// and nothing is left in /dev/shm. Interrupted or timed out, it exits with status 1.
// The consumers it starts itself get SIGTERM when it dies, even by kill -9 (they would
// wait in the queue for ever; its names stay in /dev/shm then). One of them that dies or
// fails is named at once on stderr with how it ended ("consumer 1234: signal 9
// (Killed)"); once all it started have ended, one or more of them failed, it stops
// waiting for answers, says how many came, and exits 1.
//
//   shm_queue [jobs]                          the producer, starting 2 consumers itself
//   shm_queue --role producer --name /N [jobs] [--consumers K]   starts K consumers
//                                             itself (default 0: start your own); exits
//                                             1 at once, saying which name to remove, if
//                                             /N-jobs or /N-results exists already (it
//                                             leaves that object alone)
//   shm_queue --role consumer --name /N       started separately, any number of them; it
//                                             waits up to 30 s for the producer's names,
//                                             but exits 1 at once, saying which name to
//                                             remove, on one that holds no queue, a
//                                             queue its creator died building, or one
//                                             whose messages cannot hold a job or an
//                                             answer (another program's)
// A consumer (the producer) that receives a message of another length than a job (an
// answer) says so and exits 1: it was not sent by this example.
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "../common/shutdown.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>
#include <corio/ipc/shm_queue.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

struct job {
  std::int64_t n;
};
struct answer {
  std::int64_t n;
  std::int64_t square;
  pid_t by;
};

template <class T>
std::span<const std::byte> bytes_of(const T& v) {
  return std::as_bytes(std::span(&v, 1));
}

std::string self_path() {
  char self[PATH_MAX] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  return n > 0 ? std::string(self, static_cast<std::size_t>(n)) : std::string("shm_queue");
}

/// Whether waiting may mend a failed open: the name does not exist yet (the producer has
/// not created it), or its creator is still building it. Anything else (owner_dead: a
/// queue its creator died building; wrong_protocol_type: the name holds another object,
/// or a queue of another layout version (an older corio's); permission_denied ...) stays as it is however long one waits.
bool worth_waiting(std::error_code e) {
  return e == std::errc::no_such_file_or_directory || e == std::errc::resource_unavailable_try_again;
}

/// Opens a queue the producer creates, retrying for up to 30 s while waiting may help.
corio::task<corio::result<corio::ipc::shm_queue>> open_when_there(std::string name) {
  const auto give_up = corio::clock::now() + 30s;
  for (;;) {
    auto q = corio::ipc::shm_queue::open(name);
    if (q || !worth_waiting(q.error()) || corio::clock::now() > give_up) {
      co_return q;
    }
    // A failed pause (cancelled, off a worker) ends the retry.
    if (auto slept = co_await corio::sleep_for(10ms); !slept) {
      co_return corio::unexpected(slept.error());
    }
  }
}

/// Says why the consumer could not open `name`, and what to do about it.
void report_open_failure(const std::string& name, std::error_code e) {
  if (e == std::errc::owner_dead) {
    std::fprintf(stderr,
                 "consumer: open %s: owner_dead: its creator died before it finished building the queue; "
                 "remove the name (rm /dev/shm%s) and start the producer again\n",
                 name.c_str(), name.c_str());
  } else if (e == std::errc::wrong_protocol_type) {
    std::fprintf(stderr,
                 "consumer: open %s: wrong_protocol_type: the name holds a shared-memory object that is not a "
                 "queue of this corio version (not a queue, or an older corio's); remove it (rm /dev/shm%s) or give producer and consumers another --name\n",
                 name.c_str(), name.c_str());
  } else if (worth_waiting(e)) {
    std::fprintf(stderr, "consumer: open %s: %s (for 30 s): is the producer running, with this --name?\n",
                 name.c_str(), e.message().c_str());
  } else {
    std::fprintf(stderr, "consumer: open %s: %s\n", name.c_str(), e.message().c_str());
  }
}

/// Says why the producer could not create `name`, and what to do about it.
void report_create_failure(const std::string& name, std::error_code e) {
  if (e == std::errc::file_exists) {
    std::fprintf(stderr,
                 "producer: create %s: %s: the name is taken, by a producer running with this --name or one "
                 "killed before it removed its names; if none runs, remove it (rm /dev/shm%s), or give "
                 "producer and consumers another --name\n",
                 name.c_str(), e.message().c_str(), name.c_str());
  } else {
    std::fprintf(stderr, "producer: create %s: %s\n", name.c_str(), e.message().c_str());
  }
}

/// Whether `q`'s messages can hold `need` bytes (`what`: a job, an answer); says why not
/// otherwise. A queue made by another program under this name may allow fewer.
bool holds(const corio::ipc::shm_queue& q, std::size_t need, const char* what) {
  if (q.max_message_size() >= need) {
    return true;
  }
  std::fprintf(stderr,
               "consumer: open %s: its messages hold at most %zu bytes, %s takes %zu: not this example's queue; "
               "remove it (rm /dev/shm%s) or give producer and consumers another --name\n",
               q.name().c_str(), q.max_message_size(), what, need, q.name().c_str());
  return false;
}

/// Whether a received message of `got` bytes is one of `need` bytes (`what`: a job, an
/// answer), as this example's peers send them; says why not otherwise.
bool whole(const char* who, const std::string& name, std::size_t got, std::size_t need, const char* what) {
  if (got == need) {
    return true;
  }
  std::fprintf(stderr, "%s: receive from %s: a message of %zu bytes, %s takes %zu: not sent by this example\n", who,
               name.c_str(), got, what, need);
  return false;
}

corio::task<int> consumer(std::string name) {
  auto jobs = co_await open_when_there(name + "-jobs");
  if (!jobs) {
    report_open_failure(name + "-jobs", jobs.error());
    co_return 1;
  }
  auto results = co_await open_when_there(name + "-results");
  if (!results) {
    report_open_failure(name + "-results", results.error());
    co_return 1;
  }
  if (!holds(*jobs, sizeof(job), "a job") || !holds(*results, sizeof(answer), "an answer")) {
    co_return 1;
  }
  std::vector<std::byte> buffer(jobs->max_message_size());
  int done = 0;
  for (;;) {
    auto got = co_await jobs->receive(buffer);
    if (!got) {
      if (got.error() == corio::errc::closed) {
        break;  // closed and drained: no more jobs
      }
      std::fprintf(stderr, "consumer: receive: %s\n", got.error().message().c_str());
      co_return 1;
    }
    if (!whole("consumer", jobs->name(), *got, sizeof(job), "a job")) {
      co_return 1;
    }
    job j{};
    std::memcpy(&j, buffer.data(), sizeof j);
    const answer a{j.n, j.n * j.n, ::getpid()};
    if (auto sent = co_await results->send(bytes_of(a)); !sent) {
      std::fprintf(stderr, "consumer: send: %s\n", sent.error().message().c_str());
      co_return 1;
    }
    ++done;
  }
  std::printf("consumer %d: %d jobs done\n", ::getpid(), done);
  co_return 0;
}

// On the first signal of `signals`, closes both queues: every wait on them ends (the
// producer's, its sender's, the consumers'). Ends quietly once `stop` is stopped.
corio::task<void> close_on_signal(const corio::signal_stream& signals, std::stop_token stop,
                                  const corio::ipc::shm_queue* jobs, const corio::ipc::shm_queue* results) {
  if (auto got = co_await signals.next(stop)) {
    std::printf("producer: SIG%s received, shutting down\n", ::sigabbrev_np(got->number));
    std::fflush(stdout);
    jobs->close();
    results->close();
  }
}

/// Sends jobs 1..count through `jobs` (the sole sender: it claims that side), then
/// closes it. False if the claim or a send failed (closed: the producer is ending).
corio::task<bool> send_jobs(const corio::ipc::shm_queue* jobs, int count) {
  auto claim = co_await jobs->claim_sending();
  if (!claim) {
    std::fprintf(stderr, "producer: claim: %s\n", claim.error().message().c_str());
    co_return false;
  }
  for (int i = 1; i <= count; ++i) {
    const job j{i};
    if (!co_await claim->send(bytes_of(j))) {
      co_return false;
    }
  }
  jobs->close();     // the consumers drain what is queued, then stop ...
  claim->release();  // ... once no send can be in flight: a held claim would delay that
  co_return true;
}

/// What the answers added up to.
struct tally {
  bool ok = true;  ///< all `count` answers came, each whole
  std::int64_t sum = 0;
  int answers = 0;
  std::vector<pid_t> by;  ///< the consumers that answered
  bool consumers_gone = false;  ///< gave up: all consumers it started ended, one failed
};

/// The consumers the producer started, each awaited beside the work by watch_consumer.
/// The counts are atomics because the watchers may run on different workers; the default
/// (seq_cst) order is more than they need (only the last end reads them, after its own
/// fetch_add), and costs nothing at two consumers.
struct consumer_watch {
  int started = 0;
  std::atomic<int> ended{0};
  std::atomic<int> failed{0};
  std::stop_source gone;  ///< every consumer started has ended, and one or more failed
};

/// Awaits (and reaps) consumer `c`. One that failed (killed, or an exit code other than
/// 0) is named at once on stderr, with how it ended. The last one to end stops `w->gone`
/// if any failed: no answer can come from them any more (the ones they sent are queued).
corio::task<void> watch_consumer(corio::ipc::child c, consumer_watch* w) {
  const int pid = static_cast<int>(c.id());
  auto st = co_await c.wait();
  if (!st || !st->success()) {
    const std::string how = st ? st->to_string() : "its wait failed: " + st.error().message();
    std::fprintf(stderr, "consumer %d: %s\n", pid, how.c_str());
    w->failed.fetch_add(1);
  }
  if (w->ended.fetch_add(1) + 1 == w->started && w->failed.load() > 0) {
    w->gone.request_stop();
  }
}

/// Receives `count` answers from `results` (the sole receiver: it claims that side),
/// giving up when none comes for `answer_timeout`, the queue is closed (a signal), a
/// message is not an answer, or `gone` is stopped and no answer is queued.
corio::task<tally> collect_answers(const corio::ipc::shm_queue* results, int count,
                                   std::chrono::milliseconds answer_timeout, std::stop_token gone) {
  tally t;
  std::vector<std::byte> buffer(results->max_message_size());
  auto collector = co_await results->claim_receiving();
  if (!collector) {
    std::fprintf(stderr, "producer: claim: %s\n", collector.error().message().c_str());
    t.ok = false;
  }
  for (int i = 0; t.ok && i < count; ++i) {
    auto got = co_await corio::timeout(collector->receive(buffer, gone), answer_timeout);
    if (!got && gone.stop_requested()) {
      got = collector->try_receive(buffer);  // one its consumer sent before it ended
      t.consumers_gone = !got;
    }
    if (t.consumers_gone) {
      t.ok = false;
    } else if (!got) {
      // closed: a signal came (the watcher closed the queues); else timed_out and such
      std::fprintf(stderr, "producer: receive: %s\n", got.error().message().c_str());
      t.ok = false;
    } else if (!whole("producer", results->name(), *got, sizeof(answer), "an answer")) {
      t.ok = false;
    } else {
      answer a{};
      std::memcpy(&a, buffer.data(), sizeof a);
      t.sum += a.square;
      ++t.answers;
      if (std::find(t.by.begin(), t.by.end(), a.by) == t.by.end()) {
        t.by.push_back(a.by);
      }
    }
  }
  co_return t;
}

/// Starts `n` consumers of the queues `name`, each awaited by a watch_consumer task
/// (in `watchers`) once all have started; false (with a message) if one could not be.
/// Each gets SIGTERM when the producer dies (kill -9 too), which ends it at once: it has
/// no handler and holds no name. Linux sends it when the spawning *thread* exits: this
/// is a worker of the producer's runtime, which lives until the producer has awaited
/// every watcher, so every consumer has ended by then.
bool start_consumers(const std::string& name, int n, consumer_watch& watch,
                     std::vector<corio::join_handle<void>>& watchers) {
  std::vector<corio::ipc::child> consumers;
  bool ok = true;
  for (int i = 0; i < n && ok; ++i) {
    auto c = corio::ipc::command(self_path())
                 .args({"--role", "consumer", "--name", name})
                 .parent_death_signal(SIGTERM)
                 .spawn();
    if (!c) {
      std::fprintf(stderr, "spawn a consumer: %s\n", c.error().message().c_str());
      ok = false;  // no work: the queues are closed, which ends those started
    } else {
      consumers.push_back(std::move(*c));
    }
  }
  if (!consumers.empty()) {
    std::printf("producer: consumers started (pids");
    for (const auto& c : consumers) {
      std::printf(" %d", static_cast<int>(c.id()));
    }
    std::printf(")\n");
  }
  watch.started = static_cast<int>(consumers.size());  // before a watcher can count an end
  for (auto& c : consumers) {
    watchers.push_back(corio::spawn(watch_consumer(std::move(c), &watch)));
  }
  return ok;
}

/// Says that the producer stopped waiting because every consumer it started has ended,
/// one or more of them failed, and what that cost.
void report_consumers_gone(const consumer_watch& watch, const tally& t, int count) {
  const int failed = watch.failed.load();
  std::fprintf(stderr,
               "producer: all %d consumer(s) it started have ended, %d failed: %d of %d answers arrived (a "
               "consumer that dies loses at most the one job it holds%s)\n",
               watch.started, failed, t.answers, count, count - t.answers > failed ? "; the rest were never taken" : "");
}

corio::task<int> producer(const corio::signal_stream& signals, std::string name, int count, int consumer_count,
                          std::chrono::milliseconds answer_timeout) {
  const std::string jobs_name = name + "-jobs";
  const std::string results_name = name + "-results";
  // Each name is removed on failure only if this producer created it: a name that was
  // there already (file_exists) is someone else's, or a killed run's, for the user to see.
  auto jobs = corio::ipc::shm_queue::create(jobs_name, {.capacity = 16, .max_message_size = sizeof(job)});
  if (!jobs) {
    report_create_failure(jobs_name, jobs.error());
    co_return 1;
  }
  auto results = corio::ipc::shm_queue::create(results_name, {.capacity = 16, .max_message_size = sizeof(answer)});
  if (!results) {
    report_create_failure(results_name, results.error());
    (void)corio::ipc::shm_queue::remove(jobs_name);
    co_return 1;
  }
  std::stop_source stop;  // the producer is done: ends the wait for a signal
  auto watcher = corio::spawn(close_on_signal(signals, stop.get_token(), &*jobs, &*results));
  consumer_watch watch;
  std::vector<corio::join_handle<void>> watchers;
  bool ok = start_consumers(name, consumer_count, watch, watchers);
  std::printf("producer: %d jobs through %s\n", count, jobs_name.c_str());
  std::fflush(stdout);
  // Send the jobs while collecting the answers: both queues are bounded (16), so doing
  // one after the other would fill them both and stop everyone.
  auto sender = corio::spawn(send_jobs(&*jobs, ok ? count : 0));
  tally answers;
  answers.ok = ok;
  if (ok) {
    answers = co_await collect_answers(&*results, count, answer_timeout, watch.gone.get_token());
  }
  if (answers.consumers_gone) {
    report_consumers_gone(watch, answers, count);
  }
  // Done, one way or another. Closing ends every wait still on the queues: the sender's
  // send into a full jobs queue (nothing else would ever end it), the consumers' receives
  // (they drain what is queued, then stop) and their sends of answers nobody will read.
  // (After all answers came the jobs queue is closed already, and nobody sends results.)
  jobs->close();
  results->close();
  ok = (co_await std::move(sender)) && ok && answers.ok;
  // The names stay until the consumers it started have ended: one slow to start still
  // opens them (it finds the queues closed and ends at once, status 0). Each watcher has
  // named its consumer on stderr if it failed.
  for (auto& w : watchers) {
    co_await std::move(w);
  }
  ok = ok && watch.failed.load() == 0;
  stop.request_stop();
  co_await std::move(watcher);
  (void)corio::ipc::shm_queue::remove(jobs_name);
  (void)corio::ipc::shm_queue::remove(results_name);
  const std::int64_t expected = static_cast<std::int64_t>(count) * (count + 1) * (2 * count + 1) / 6;
  std::printf("producer: sum of squares 1..%d = %lld (expected %lld), answered by %zu process(es)\n", count,
              static_cast<long long>(answers.sum), static_cast<long long>(expected), answers.by.size());
  co_return ok && answers.sum == expected ? 0 : 1;
}

int example_main(int argc, char** argv) {
  std::string role = "producer";
  std::string name;
  int jobs = 1000;
  int consumers = -1;
  int timeout_ms = 60000;
  example::args args("shm_queue", "jobs and results between processes through corio's shared-memory queue");
  args.option("--role", role, "producer|consumer", "what this process does (default: producer)");
  args.option("--name", name, "/NAME", "queue name prefix (default: /corio-example-jobs-PID)");
  args.option<int>("--consumers", consumers, 0, 64, "K",
                   "consumers the producer starts itself, 0..64 (default: 2 without --name, else 0)");
  args.option("--timeout-ms", timeout_ms, 1, 86400000, "MS",
              "the producer gives up (status 1) when no answer comes for this long (default 60000)");
  args.positional("jobs", jobs, 1, 1000000, "how many jobs, 1..1000000 (default 1000; the sum of squares fits 64 bits)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (role != "producer" && role != "consumer") {
    std::fprintf(stderr, "shm_queue: --role: expected producer or consumer, got '%s'\n", role.c_str());
    return 2;
  }
  if (role == "consumer") {
    if (name.empty()) {
      std::fprintf(stderr, "shm_queue: a consumer needs --name (the producer's)\n");
      return 2;
    }
    return corio::run(consumer(name));
  }
  if (consumers < 0) {
    consumers = name.empty() ? 2 : 0;
  }
  if (name.empty()) {
    name = "/corio-example-jobs-" + std::to_string(::getpid());
  }
  auto signals = example::shutdown_signals("shm_queue");  // before the runtime's threads start
  return corio::run(producer(signals, name, jobs, consumers, std::chrono::milliseconds(timeout_ms)));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("shm_queue", example_main, argc, argv); }
