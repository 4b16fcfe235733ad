// job_server: the tutorial's job server ("My Module") in corio, serving its unmodified
// Python client (MY_Client: multiprocessing.managers.SyncManager.connect() and proxies).
//
// Two manager servers (ipc/manager_server.hpp), as the tutorial's two QueueManagers:
//   port 1001 (--port-sender):   GetAudioQueue() -> the input queue of jobs
//                                (data_a, data_b, channel_id)
//   port 1002 (--port-receiver): SetResultQueue() -> an object whose set_channel(id)
//                                registers a result channel and answers the tutorial's
//                                {'result': bool, 'message': str} dict;
//                                GetResultQueue(id) -> that channel's result queue, or the
//                                dict {'result': False, 'message': '[Error] Please call
//                                SetResultQueue function first'}
// authkey b'password' (--authkey). --job-workers tasks (default 5, the tutorial's
// num_threads) take jobs, run the job function on data_a and put the result on the job's
// channel (the tutorial's mediator thread is not needed: a worker routes directly).
// The job function (job_function.cpp): str -> upper-cased (ASCII letters), bytes ->
// reversed, int -> its exact square (any int of up to 4,096 bits, negative ones too),
// float -> its square. Anything else, a larger int, or a job function that throws gives
// that job's client, instead of a result, the dict {'result': False, 'message':
// '[Error] ...'}; other jobs go on.
// GetAudioQueue's put refuses, with a ValueError to the client that sends it, a job that
// is not (data_a, data_b, channel_id) or names a channel nobody registered (its result
// could reach nobody); a TypeError for an unhashable channel id. So every job the queue
// accepts gets its result or its error dict.
// Ctrl-C / SIGTERM (or a client's 'shutdown' request to either manager): the input side
// stops taking jobs (its clients' connections close); every job already queued is still
// run and its result routed (none is dropped); then the result side serves --grace-ms
// more (default 2000) so clients can collect, and stops: clients still waiting get
// EOFError. A second signal stops at once: the queued jobs not yet run are counted and
// reported as dropped. The last line says how many jobs were done, and how many results
// were left uncollected. The signals arrive through corio::signals() streams
// (examples/common/shutdown.hpp, ipc/signals.hpp), opened before the runtime so that every
// thread blocks them; each prints a line "job_server: SIGxxx received, ...".
// --start-paused: the job workers take no job until SIGUSR1 (or a second stop signal),
// so that jobs queue up: to see what a stop does with queued jobs (a paused server that
// is stopping waits for SIGUSR1 before running them).
// --max-connections N (default 16384): connections served at once on each port (a
// tutorial client holds one on each); at start the soft limit on open descriptors is
// raised to what they need, and where the hard limit is lower the number that fits is
// served (said on stderr for a number given), as echo_server and http_hello do; the line
// "[Notice] at most M connections at once on each port" gives it. Clients past it wait to
// be accepted, and a line on stderr says so, as another does when accepting runs out of
// descriptors (connection_limit.hpp).
// --max-message-mib N (default 64): the largest request a client may send, in MiB (a
// job's pickle: the tutorial's jobs are audio). Python's server has no such limit; a larger
// request ends that client's connection (its proxy raises BrokenPipeError or EOFError).
//   job_server [--port-sender N] [--port-receiver N] [--authkey KEY] [--job-workers N]
//              [--grace-ms MS] [--start-paused] [--max-connections N] [--max-message-mib N]
//              [--workers N]
// Port 0 picks free ports; the lines "sender listening on ADDR" / "receiver listening on
// ADDR" say which.
#include "../common/args.hpp"
#include "../common/main_guard.hpp"
#include "../common/shutdown.hpp"
#include "connection_limit.hpp"
#include "job_function.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/manager_object.hpp>
#include <corio/ipc/manager_queue.hpp>
#include <corio/ipc/manager_server.hpp>
#include <corio/ipc/pickle.hpp>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::call_args;
using corio::ipc::call_outcome;
using corio::ipc::managed_dict;
using corio::ipc::managed_object;
using corio::ipc::managed_queue;
using corio::ipc::manager_server;
namespace pickle = corio::ipc::pickle;

namespace {

// Python's "{}".format(v): a str as itself, anything else as its repr.
std::string formatted(const pickle::value& v) {
  if (const std::string* s = v.if_str()) {
    return *s;
  }
  return v.repr(200);
}

pickle::value status(bool ok, std::string message) {
  pickle::dict d;
  d.insert_or_assign("result", ok);
  d.insert_or_assign("message", std::move(message));
  return pickle::value(std::move(d));
}

struct key_hash {
  std::size_t operator()(const pickle::value& v) const noexcept { return pickle::value::key_hash(v); }
};
struct key_equal {
  bool operator()(const pickle::value& a, const pickle::value& b) const noexcept {
    return pickle::value::key_equal(a, b);
  }
};

// The result channels by id (the tutorial's result_queue_dict).
class channels {
 public:
  // set_channel: the tutorial's answers.
  pickle::value add(const pickle::value& id) {
    std::lock_guard g(m_lock);
    if (m_queues.contains(id)) {
      return status(false, "[Error] Please give me another channel id, not " + formatted(id));
    }
    m_queues.emplace(id, std::make_shared<managed_queue>());
    return status(true, "[Notice] Successfully channel " + formatted(id) + " added");
  }
  std::shared_ptr<managed_queue> find(const pickle::value& id) {
    std::lock_guard g(m_lock);
    auto it = m_queues.find(id);
    return it == m_queues.end() ? nullptr : it->second;
  }
  // Results queued and not collected, per channel (for the final report).
  std::vector<std::pair<std::string, std::size_t>> uncollected() {
    std::lock_guard g(m_lock);
    std::vector<std::pair<std::string, std::size_t>> out;
    for (auto& [id, q] : m_queues) {
      if (q->size() != 0) {
        out.emplace_back(formatted(id), q->size());
      }
    }
    return out;
  }

 private:
  std::mutex m_lock;
  std::unordered_map<pickle::value, std::shared_ptr<managed_queue>, key_hash, key_equal> m_queues;
};

// GetAudioQueue: a managed_queue whose put checks the job first (see the header comment).
class job_queue : public managed_queue {
 public:
  explicit job_queue(channels& known) : m_known(known) {}

  corio::ipc::call_result call(std::string_view method, const call_args& args) override {
    if (method == "put" || method == "put_nowait") {
      const pickle::value* job = !args.positional().empty() ? &args.positional()[0] : args.keywords().get("item");
      if (job != nullptr) {
        if (auto refusal = check(*job)) {
          return std::move(*refusal);
        }
      }
    }
    return managed_queue::call(method, args);  // (no job: put's own TypeError)
  }

 private:
  std::optional<call_outcome> check(const pickle::value& job) {
    const auto* items = job.if_tuple();
    if (items == nullptr || items->size() != 3) {
      return call_outcome::raise("ValueError", "[Error] a job is (data_a, data_b, channel_id), not " + job.repr(200));
    }
    const pickle::value& id = (*items)[2];
    if (!id.hashable()) {
      return call_outcome::raise("TypeError", "unhashable type: '" + std::string(id.type_name()) + "'");
    }
    if (!m_known.find(id)) {
      return call_outcome::raise("ValueError", "[Error] unknown channel id " + formatted(id) +
                                                   ": call SetResultQueue().set_channel first");
    }
    return std::nullopt;
  }

  channels& m_known;  // outlives the queue (both in server_state)
};

struct server_state {
  channels results;
  std::shared_ptr<job_queue> input = std::make_shared<job_queue>(results);
  std::atomic<std::uint64_t> done{0};        // jobs whose result (or error) was routed
  std::atomic<std::uint64_t> unroutable{0};  // jobs put from C++ past job_queue's check
};

// Runs one job and routes its result.
void run_job(server_state& s, const pickle::value& job) {
  const auto* items = job.if_sequence();
  if (items == nullptr || items->size() != 3) {
    std::fprintf(stderr, "[Warning] not a (data_a, data_b, channel_id) job, dropped: %s\n", job.repr(200).c_str());
    s.unroutable.fetch_add(1, std::memory_order_relaxed);  // relaxed: a count, read at the end
    return;
  }
  const pickle::value& channel_id = (*items)[2];
  auto queue = s.results.find(channel_id);
  if (!queue) {
    std::fprintf(stderr, "[Warning] job for unknown channel %s dropped (put from C++)\n", formatted(channel_id).c_str());
    s.unroutable.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  pickle::value result;
  try {
    result = job_server::job_function((*items)[0]);
  } catch (const std::exception& e) {
    result = status(false, std::string("[Error] job function: ") + e.what());
  }
  (void)queue->put(std::move(result));  // an unbounded queue: never full
  s.done.fetch_add(1, std::memory_order_relaxed);
}

// One of the tutorial's MY_Threads: once `go` is set, takes jobs until `stop`, then runs
// what is still queued (unless `hard` is stopped too) and ends.
task<void> job_worker(server_state& s, corio::event& go, std::stop_token stop, std::stop_token hard) {
  (void)co_await go.wait();
  if (hard.stop_requested()) {
    co_return;  // released by a second signal: what is queued is dropped
  }
  for (;;) {
    auto job = co_await s.input->get(stop);
    if (!job) {
      break;
    }
    run_job(s, *job);
  }
  while (!hard.stop_requested()) {
    auto job = s.input->try_get();
    if (!job) {
      break;
    }
    run_job(s, *job);
    co_await corio::yield_now{};  // lets the signal watcher run: a second signal drops the rest
  }
}

// Serves one manager. When it ends on its own (a failure: the listener broke), the whole
// server stops as on a first signal (when the server is already stopping, that does
// nothing). A client's 'shutdown' request does not end it: manager_options::on_shutdown
// makes that request a first signal (example_main).
task<bool> serve(manager_server& m, const char* name, std::stop_token stop, std::stop_source& all) {
  auto r = co_await m.serve(stop);
  all.request_stop();
  if (!r) {
    std::fprintf(stderr, "job_server: %s manager: %s\n", name, r.error().message().c_str());
    co_return false;
  }
  co_return true;
}

struct run_args {
  manager_server* sender;
  manager_server* receiver;
  server_state* state;
  unsigned job_workers;
  int grace_ms;
  bool paused;                 // --start-paused
  std::stop_source* graceful;  // first signal
  std::stop_source* hard;      // second signal
  std::stop_source* resume;    // SIGUSR1
};

task<int> run(run_args a) {
  server_state& s = *a.state;
  std::stop_source input_side;   // stops the sender manager, then the workers
  std::stop_source result_side;  // stops the receiver manager
  // The workers start taking jobs when `go` is set: at once, or (paused) on SIGUSR1 or a
  // second signal. The callbacks run on the worker that reads the signal; event::set is
  // thread-safe.
  corio::event go;
  std::stop_callback on_resume(a.resume->get_token(), [&go] { go.set(); });
  std::stop_callback on_hard(a.hard->get_token(), [&go] { go.set(); });
  if (!a.paused) {
    go.set();
  }
  std::vector<corio::join_handle<void>> workers;
  for (unsigned i = 0; i < a.job_workers; ++i) {
    workers.push_back(corio::spawn(job_worker(s, go, input_side.get_token(), a.hard->get_token())));
  }
  std::printf("[Notice] Processing Module Ready%s\n", a.paused ? " (paused until SIGUSR1)" : "");
  auto sender = corio::spawn(serve(*a.sender, "sender", input_side.get_token(), *a.graceful));
  auto receiver = corio::spawn(serve(*a.receiver, "receiver", result_side.get_token(), *a.graceful));
  std::printf("[Notice] IPC Queue Manager Ready\n");
  std::fflush(stdout);

  corio::event stopping;
  {
    // Runs on the worker that reads the signal, or on the one serving a client's
    // 'shutdown' (or here, if already stopped); event::set is thread-safe.
    std::stop_callback on_signal(a.graceful->get_token(), [&stopping] { stopping.set(); });
    (void)co_await stopping.wait();
  }
  std::size_t queued = s.input->size();
  std::printf("[Notice] stopping: no new jobs; the %zu queued job(s) still run (a second signal drops them)\n",
              queued);
  std::fflush(stdout);
  a.sender->stop();
  bool ok = co_await sender;
  input_side.request_stop();
  for (auto& w : workers) {
    co_await w;
  }
  std::size_t dropped = s.input->size();
  // Give clients a moment to collect their results, unless a second signal came.
  for (int waited = 0; waited < a.grace_ms && !a.hard->stop_requested(); waited += 10) {
    if (s.results.uncollected().empty()) {
      break;
    }
    (void)co_await corio::sleep_for(10ms);
  }
  result_side.request_stop();
  ok = co_await receiver && ok;
  std::size_t left = 0;
  for (auto& [id, n] : s.results.uncollected()) {
    std::printf("[Notice] channel %s: %zu result(s) not collected\n", id.c_str(), n);
    left += n;
  }
  std::printf("[Notice] stopped: %llu job(s) done, %zu queued job(s) dropped, %llu unroutable, %zu result(s) "
              "not collected\n",
              static_cast<unsigned long long>(s.done.load(std::memory_order_relaxed)), dropped,
              static_cast<unsigned long long>(s.unroutable.load(std::memory_order_relaxed)), left);
  std::fflush(stdout);
  co_return ok ? 0 : 1;
}

void register_types(manager_server& sender, manager_server& receiver, server_state& s) {
  sender.register_object("GetAudioQueue", s.input);
  receiver.register_type("SetResultQueue", [&s](const call_args& args)
                             -> std::variant<std::shared_ptr<managed_object>, call_outcome> {
    auto bound = args.bind("SetResultQueue", {});
    if (auto* error = std::get_if<call_outcome>(&bound)) {
      return std::move(*error);
    }
    auto obj = std::make_shared<corio::ipc::exposed_object>("SetResultQueue");
    obj->def("set_channel", [&s](const call_args& a) {
      auto b = a.bind("set_channel", {{"channel_id", std::nullopt}});
      if (auto* error = std::get_if<call_outcome>(&b)) {
        return std::move(*error);
      }
      const pickle::value& id = std::get<std::vector<pickle::value>>(b)[0];
      if (!id.hashable()) {
        return call_outcome::raise("TypeError", "unhashable type: '" + std::string(id.type_name()) + "'");
      }
      return call_outcome::returned(s.results.add(id));
    });
    return obj;
  });
  receiver.register_type("GetResultQueue", [&s](const call_args& args)
                             -> std::variant<std::shared_ptr<managed_object>, call_outcome> {
    auto bound = args.bind("GetResultQueue", {{"channel_id", std::nullopt}});
    if (auto* error = std::get_if<call_outcome>(&bound)) {
      return std::move(*error);
    }
    const pickle::value& id = std::get<std::vector<pickle::value>>(bound)[0];
    if (!id.hashable()) {
      return call_outcome::raise("TypeError", "unhashable type: '" + std::string(id.type_name()) + "'");
    }
    if (auto q = s.results.find(id)) {
      return q;
    }
    pickle::dict d = *status(false, "[Error] Please call SetResultQueue function first").if_dict();
    return std::make_shared<managed_dict>(std::move(d));
  });
}

// The first SIGINT/SIGTERM (or a 'shutdown' request that came first) requests
// `graceful`, the next `hard`. Ends when `done` is stopped.
task<void> watch_stop_signals(const corio::signal_stream& signals, std::stop_source graceful,
                              std::stop_source hard, std::stop_token done) {
  for (;;) {
    auto got = co_await signals.next(done);
    if (!got) {
      if (got.error() != std::errc::operation_canceled) {
        std::fprintf(stderr, "job_server: waiting for a signal: %s; shutting down\n", got.error().message().c_str());
        graceful.request_stop();
      }
      co_return;
    }
    bool first = !graceful.stop_requested();
    std::printf("job_server: SIG%s received, %s\n", ::sigabbrev_np(got->number),
                first ? "shutting down" : "stopping at once (the queued jobs are dropped)");
    std::fflush(stdout);
    (first ? graceful : hard).request_stop();
  }
}

// The first SIGUSR1 requests `resume` (--start-paused; later ones change nothing and stay
// pending). Ends then, or when `done` is stopped.
task<void> watch_resume_signal(const corio::signal_stream& signals, std::stop_source resume, std::stop_token done) {
  auto got = co_await signals.next(done);
  if (got) {
    resume.request_stop();
  }
}

// run(a) with the signal streams read alongside it, and the managers' connections
// watched (connection_limit.hpp; awaited here, before the managers can go).
task<int> run_with_signals(run_args a, const corio::signal_stream& stops, const corio::signal_stream& resume) {
  std::stop_source done;
  auto stop_watch = corio::spawn(watch_stop_signals(stops, *a.graceful, *a.hard, done.get_token()));
  auto resume_watch = corio::spawn(watch_resume_signal(resume, *a.resume, done.get_token()));
  auto port_watch = corio::spawn(job_server::watch_ports(*a.sender, *a.receiver, done.get_token()));
  int rc = co_await run(a);
  done.request_stop();
  co_await std::move(stop_watch);
  co_await std::move(resume_watch);
  co_await std::move(port_watch);
  co_return rc;
}

// Both managers' options: `authkey`, `served` connections at once on each port, requests
// up to `max_message_mib` MiB, and a client's 'shutdown' request, to either port, as a
// first signal (`graceful`): the receiver must not stop on its own while queued jobs still
// run and their clients collect.
corio::ipc::manager_options manager_settings(const std::string& authkey, unsigned served, unsigned max_message_mib,
                                             std::stop_source& graceful) {
  corio::ipc::manager_options o;
  o.listen.auth.authkey = authkey;
  o.listen.max_connections = served;
  o.listen.connection.max_message_size = std::size_t{max_message_mib} << 20;
  o.on_shutdown = [&graceful] { graceful.request_stop(); };
  return o;
}

// A manager bound to `port` (loopback) with `o`; nullopt, said on stderr, if it cannot bind.
std::optional<manager_server> bind_manager(std::uint16_t port, const corio::ipc::manager_options& o) {
  auto m = manager_server::bind(corio::ipc::socket_address::loopback_v4(port), o);
  if (!m) {
    std::fprintf(stderr, "job_server: bind port %u: %s\n", port, m.error().message().c_str());
    return std::nullopt;
  }
  return std::move(*m);
}

int example_main(int argc, char** argv) {
  std::uint16_t port_sender = 1001;
  std::uint16_t port_receiver = 1002;
  std::string authkey = "password";
  unsigned job_workers = 5;
  unsigned workers = 0;
  int grace_ms = 2000;
  bool paused = false;
  unsigned max_connections = 0;  // 0: job_server::kDefaultMaxConnections, fitted silently
  unsigned max_message_mib = 64;
  example::args args("job_server", "the tutorial's job server: GetAudioQueue on one port, result channels on another");
  args.option<std::uint16_t>("--port-sender", port_sender, 0, 65535, "N",
                             "port of GetAudioQueue (default 1001; 0: any free port)");
  args.option<std::uint16_t>("--port-receiver", port_receiver, 0, 65535, "N",
                             "port of SetResultQueue/GetResultQueue (default 1002; 0: any free port)");
  args.option("--authkey", authkey, "KEY", "the shared key (default password)");
  args.option<unsigned>("--job-workers", job_workers, 1, 1024, "N", "job worker tasks, 1..1024 (default 5)");
  args.option("--grace-ms", grace_ms, 0, 600000, "MS",
              "on shutdown, how long clients may still collect results, 0..600000 (default 2000)");
  args.flag("--start-paused", paused, "job workers take no job until SIGUSR1 (to see what a stop does with queued jobs)");
  args.option("--max-connections", max_connections, 1u, 1000000u, "N",
              "connections at once on each port, 1..1000000 (default 16384, lowered to what the descriptor "
              "limit fits)");
  args.option("--max-message-mib", max_message_mib, 1u, 4096u, "N",
              "the largest request a client may send (a job), in MiB, 1..4096 (default 64); a larger one ends "
              "that client's connection");
  args.workers(workers);
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }

  // Before the runtime (and before the "listening" lines a test waits for): every thread
  // inherits the blocked SIGINT, SIGTERM and SIGUSR1.
  corio::signal_stream stops = example::shutdown_signals("job_server");
  auto resume_signal = corio::signals({SIGUSR1});
  if (!resume_signal) {
    std::fprintf(stderr, "job_server: signals: %s\n", resume_signal.error().message().c_str());
    return 1;
  }

  corio::runtime rt(example::with_workers(workers));
  // Counted with the runtime up: its descriptors are part of the need (connection_limit.hpp).
  const unsigned served = job_server::fit_max_connections(max_connections);
  if (served == 0) {
    return 1;
  }
  std::stop_source graceful, hard, resume;
  const corio::ipc::manager_options o = manager_settings(authkey, served, max_message_mib, graceful);
  auto sender = bind_manager(port_sender, o);
  auto receiver = sender ? bind_manager(port_receiver, o) : std::nullopt;
  if (!receiver) {
    return 1;
  }
  server_state state;
  register_types(*sender, *receiver, state);
  job_server::announce_limit(served);
  // Only now: a runtime that cannot start (main_guard's error) announces no listener.
  std::printf("sender listening on %s\n", sender->address().value().to_string().c_str());
  std::printf("receiver listening on %s\n", receiver->address().value().to_string().c_str());
  std::fflush(stdout);
  return rt.block_on(run_with_signals(
      run_args{&*sender, &*receiver, &state, job_workers, grace_ms, paused, &graceful, &hard, &resume}, stops,
      *resume_signal));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("job_server", example_main, argc, argv); }
