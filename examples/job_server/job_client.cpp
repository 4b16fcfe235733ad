// job_client: a C++ client of job_server (and of the tutorial's own Python server), doing
// what the tutorial's MY_Client does, with ipc::manager_client (ipc/manager_client.hpp):
// SetResultQueue().set_channel(id), GetResultQueue(id), GetAudioQueue(), then for each job
// put (data_a, data_b, id) and take the results: first without blocking (get_nowait:
// queue.Empty while nothing is there), then each result with a timeout (get(True, s)).
// --tasks N runs N clients at once, each a task with its own channel ("ID-1" ... "ID-N")
// and its own proxies. Every result is printed as "c++ client CHANNEL received REPR".
// Every wait on the server is bounded on this side too, by --timeout-ms + 2000 ms (the
// server's own get timeout plus a margin for the round trip; default 12 s): each reply
// (the connections' idle_timeout), each handshake and each connect. A server that stops
// answering (hung, stopped, overloaded past that) ends the client with "no answer from
// the server within N ms" and exit status 1, instead of a wait without end; the proxies
// it made are then not released (a decref would wait on that server again): their
// references stay on it, as a killed Python client's do. There is no way to wait without
// a bound (the tutorial's MY_Client's blocking get): pass a large --timeout-ms.
//   job_client [--port-sender N] [--port-receiver N] [--authkey KEY] [--channel ID]
//              [--tasks N] [--timeout-ms MS] JOB...
// A JOB is sent as an int if it reads as one, else a float if it reads as one, else bytes
// for "b:TEXT", else a str. Exit status 0 when every job got its result and every proxy
// was released. The soft descriptor limit is raised to fit --tasks (4 descriptors each);
// where the hard limit cannot, the client says so and exits 2.
#include "../common/args.hpp"
#include "../common/descriptor_limit.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/manager_client.hpp>
#include <corio/ipc/pickle.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <stop_token>
#include <string>
#include <system_error>
#include <vector>

using corio::task;
using corio::ipc::manager_client;
using corio::ipc::manager_proxy;
using corio::ipc::manager_reply;
namespace pickle = corio::ipc::pickle;

namespace {

pickle::value parse_job(const std::string& s) {
  std::int64_t i = 0;
  auto [ip, iec] = std::from_chars(s.data(), s.data() + s.size(), i);
  if (iec == std::errc() && ip == s.data() + s.size()) {
    return i;
  }
  double d = 0;
  auto [dp, dec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (dec == std::errc() && dp == s.data() + s.size()) {
    return d;
  }
  if (s.starts_with("b:")) {
    return pickle::value::make_bytes(s.substr(2));
  }
  return s;
}

struct settings {
  std::uint16_t port_sender = 1001;
  std::uint16_t port_receiver = 1002;
  std::string authkey = "password";
  int timeout_ms = 10000;
};

// The margin on top of --timeout-ms for a reply's round trip (see the header comment).
constexpr int kRoundTripMarginMs = 2000;

int reply_limit_ms(const settings& s) { return s.timeout_ms + kRoundTripMarginMs; }

// The client options of every connection: each reply, handshake and connect bounded by
// reply_limit_ms (a handshake and a connect also by their defaults, if shorter).
corio::ipc::client_options connection_options(const settings& s) {
  const std::chrono::milliseconds limit(reply_limit_ms(s));
  corio::ipc::client_options o;
  o.auth.authkey = s.authkey;
  o.auth.timeout = std::min<std::chrono::nanoseconds>(o.auth.timeout, limit);
  o.connect_timeout = std::min<std::chrono::nanoseconds>(o.connect_timeout, limit);
  o.connection.idle_timeout = limit;
  return o;
}

// One client's channel, and whether the server left a request of it unanswered.
struct client_state {
  std::string channel;
  int reply_limit_ms = 0;
  bool unanswered = false;
};

// Reports a failed step; yields false.
bool failed(const client_state& c, const char* step, const std::string& why) {
  std::fprintf(stderr, "job_client %s: %s: %s\n", c.channel.c_str(), step, why.c_str());
  return false;
}

// The same for a step that failed with `error` (timed_out: the server did not answer).
bool failed(client_state& c, const char* step, std::error_code error) {
  if (error == std::errc::timed_out) {
    c.unanswered = true;
    return failed(c, step, "no answer from the server within " + std::to_string(c.reply_limit_ms) + " ms");
  }
  return failed(c, step, error.message());
}

// The same for a call whose reply was not the one expected (or that failed).
bool failed(client_state& c, const char* step, const corio::result<manager_reply>& r) {
  return r ? failed(c, step, r->value.repr(300)) : failed(c, step, r.error());
}

// Checks that the channel starts empty, puts `jobs` on `input`, takes their results from
// `results`; false at the first failed step (reported).
task<bool> send_and_receive(const settings& s, client_state& c, const std::vector<std::string>& jobs,
                            manager_proxy& results, manager_proxy& input) {
  auto nothing = co_await results.call("get_nowait");
  if (!nothing || !nothing->raised("queue", "Empty")) {
    co_return failed(c, "get_nowait before any job (queue.Empty expected)", nothing);
  }
  for (const std::string& job : jobs) {
    auto args = pickle::value::items_of(pickle::value::tuple_of(parse_job(job), "c++", c.channel));
    auto put = co_await input.call("put", std::move(args));
    if (!put || !put->ok()) {
      co_return failed(c, "put", put);
    }
  }
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    auto got = co_await results.call("get", pickle::value::items_of(true, s.timeout_ms / 1000.0));
    if (!got || !got->ok()) {
      std::fflush(stdout);
      co_return failed(c, "get with a timeout", got);
    }
    std::printf("c++ client %s received %s\n", c.channel.c_str(), got->value.repr().c_str());
  }
  std::fflush(stdout);
  co_return true;
}

// SetResultQueue().set_channel(channel), the setter released after (unless the server
// did not answer); prints the server's notice. False when refused or failed (reported).
task<bool> register_channel(client_state& c, const manager_client& receiver) {
  auto setter = co_await receiver.create("SetResultQueue");
  if (!setter) {
    co_return failed(c, "SetResultQueue", setter.error());
  }
  auto set = co_await setter->call("set_channel", pickle::value::items_of(c.channel));
  if (!set && set.error() == std::errc::timed_out) {
    co_return failed(c, "set_channel", set);  // the setter's reference stays (see the header comment)
  }
  (void)co_await setter->release();
  const pickle::value* ok = set && set->ok() ? set->value.get("result") : nullptr;
  if (ok == nullptr || !(*ok == pickle::value(true))) {
    co_return failed(c, "set_channel", set);
  }
  const pickle::value* message = set->value.get("message");
  std::printf("c++ client %s: %s\n", c.channel.c_str(),
              message && message->is_str() ? message->if_str()->c_str() : "");
  co_return true;
}

// One tutorial client: register `channel`, send `jobs`, receive their results.
task<bool> one_client(settings s, std::string channel, std::vector<std::string> jobs) {
  client_state c{std::move(channel), reply_limit_ms(s)};
  const corio::ipc::client_options options = connection_options(s);
  auto sender = co_await manager_client::connect(corio::ipc::socket_address::loopback_v4(s.port_sender), options);
  if (!sender) {
    co_return failed(c, "connect", sender.error());
  }
  auto receiver = co_await manager_client::connect(corio::ipc::socket_address::loopback_v4(s.port_receiver), options);
  if (!receiver) {
    co_return failed(c, "connect", receiver.error());
  }
  if (!co_await register_channel(c, *receiver)) {
    co_return false;
  }
  auto results = co_await receiver->create("GetResultQueue", pickle::value::items_of(c.channel));
  if (!results) {
    co_return failed(c, "GetResultQueue", results.error());
  }
  auto input = co_await sender->create("GetAudioQueue");
  bool all = false;
  if (!input) {
    failed(c, "GetAudioQueue", input.error());
  } else {
    all = co_await send_and_receive(s, c, jobs, *results, *input);
  }
  // Every proxy made is released, whichever step failed (a proxy dropped without
  // release() leaves its reference, and with it the object, on the server), unless the
  // server left a request unanswered (see the header comment).
  if (!c.unanswered) {
    // A release that fails (the server gone, no descriptor for its connection) leaves
    // that reference on the server: said, and the client fails.
    if (auto r = co_await results->release(); !r) {
      all = failed(c, "release of the result queue", r.error());
    }
    if (input) {
      if (auto r = co_await input->release(); !r) {
        all = failed(c, "release of the job queue", r.error());
      }
    }
  }
  co_return all;
}

task<int> run(settings s, std::string channel, unsigned tasks, std::vector<std::string> jobs) {
  std::vector<corio::join_handle<bool>> clients;
  for (unsigned i = 1; i <= tasks; ++i) {
    std::string name = tasks == 1 ? channel : channel + "-" + std::to_string(i);
    clients.push_back(corio::spawn(one_client(s, name, jobs)));
  }
  bool ok = true;
  for (auto& c : clients) {
    bool one = co_await c;
    ok = ok && one;
  }
  co_return ok ? 0 : 1;
}

int example_main(int argc, char** argv) {
  settings s;
  std::string channel = "cpp";
  unsigned tasks = 1;
  std::vector<std::string> jobs;
  example::args args("job_client", "a C++ client of job_server: register a channel, send jobs, print the results");
  args.option<std::uint16_t>("--port-sender", s.port_sender, 1, 65535, "N", "port of GetAudioQueue (default 1001)");
  args.option<std::uint16_t>("--port-receiver", s.port_receiver, 1, 65535, "N",
                             "port of SetResultQueue/GetResultQueue (default 1002)");
  args.option("--authkey", s.authkey, "KEY", "the shared key (default password)");
  args.option("--channel", channel, "ID", "the result channel id (default cpp)");
  args.option<unsigned>("--tasks", tasks, 1, 1000, "N", "clients at once, 1..1000, channels ID-1..ID-N (default 1)");
  args.option("--timeout-ms", s.timeout_ms, 1, 3600000, "MS",
              "how long to wait for each result (default 10000); a server that sends no reply within MS + 2000 ms "
              "ends the client (exit 1)");
  args.rest("JOB", jobs, "jobs to send (int, float, b:BYTES or str)", true);
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  corio::runtime rt;
  // Each task holds two proxy connections and opens short ones (create, decref): room for
  // 4 descriptors each, the soft limit raised to fit (a stock 1,024 does not fit 1,000).
  if (const unsigned fit = example::fit_descriptor_limit("job_client", tasks, 4, example::chosen_by::user);
      fit < tasks) {
    std::fprintf(stderr, "job_client: --tasks %u: at most %u fit under the descriptor limit; run fewer\n", tasks, fit);
    return 2;
  }
  return rt.block_on(run(s, channel, tasks, jobs));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("job_client", example_main, argc, argv); }
