// jobs_bench: C++ clients of the job server (ipc::manager_client) doing job round trips
// for bench/jobs/jobs.sh: --clients tasks, each with its own channel and proxies, put
// (i, None, channel) then a blocking get of the result, for --seconds. Prints one line:
// "JOBS JOBS_PER_S P50_US P99_US".
// With --overlap 1 each client sends its get together with its put (corio::when_all of the
// two calls: they go to the two servers' connections at once), so the wait for the result
// is already queued at the result server when the job is put: one round trip per job
// instead of two in sequence. The tutorial's clients (and Python proxies) cannot do this;
// a C++ client can, with the same proxies and the same server. A failed put stops the get
// sent with it. Each client releases its proxies at the end (the server is left with
// none of its objects).
//   jobs_bench --port-sender N --port-receiver N [--clients N] [--seconds S] [--workers N]
//              [--overlap 0|1]
#include "../../examples/common/args.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/manager_client.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <stop_token>
#include <string>
#include <tuple>
#include <vector>

using corio::task;
using corio::ipc::manager_client;
namespace pickle = corio::ipc::pickle;
using clock_type = std::chrono::steady_clock;

namespace {

struct shared {
  std::mutex lock;  // guards latencies (clients run on any worker)
  std::vector<std::int64_t> latencies;
  bool failed = false;
};

// The put of an overlapped job: a failed put stops the get sent with it (which would
// otherwise wait for a result that never comes).
task<corio::result<corio::ipc::manager_reply>> put_or_stop(task<corio::result<corio::ipc::manager_reply>> put,
                                                           std::stop_source* get_stop) {
  auto r = co_await std::move(put);
  if (!r || !r->ok()) {
    get_stop->request_stop();
  }
  co_return r;
}

task<void> client(std::uint16_t sport, std::uint16_t rport, int index, int seconds, bool overlap, shared& out) {
  std::vector<std::int64_t> mine;
  auto sender = co_await manager_client::connect(corio::ipc::socket_address::loopback_v4(sport), "password");
  auto receiver = co_await manager_client::connect(corio::ipc::socket_address::loopback_v4(rport), "password");
  std::string channel = "cpp-bench-" + std::to_string(index);
  bool ok = sender && receiver;
  if (ok) {
    auto setter = co_await receiver->create("SetResultQueue");
    ok = setter.has_value();
    if (ok) {
      auto set = co_await setter->call("set_channel", pickle::value::items_of(channel));
      ok = set && set->ok();
      (void)co_await setter->release();
    }
  }
  if (ok) {
    auto results = co_await receiver->create("GetResultQueue", pickle::value::items_of(channel));
    auto input = co_await sender->create("GetAudioQueue");
    ok = results && input;
    auto end = clock_type::now() + std::chrono::seconds(seconds);
    for (std::int64_t i = 0; ok && clock_type::now() < end; ++i) {
      auto t0 = clock_type::now();
      auto put_call = input->call("put", pickle::value::items_of(pickle::value::tuple_of(i, nullptr, channel)));
      corio::result<corio::ipc::manager_reply> put;
      corio::result<corio::ipc::manager_reply> got;
      if (overlap) {
        std::stop_source get_stop;
        std::tie(put, got) = co_await corio::when_all(put_or_stop(std::move(put_call), &get_stop),
                                                      results->call("get", {}, {}, get_stop.get_token()));
      } else {
        put = co_await std::move(put_call);
        got = co_await results->call("get");
      }
      ok = put && put->ok() && got && got->ok() && got->value == pickle::value(i * i);
      mine.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count());
    }
    // Drop this client's references on the server (whichever proxy was made).
    for (auto* made : {&results, &input}) {
      if (*made) {
        auto released = co_await (*made)->release();
        ok = ok && released.has_value();
      }
    }
  }
  std::lock_guard g(out.lock);
  out.failed = out.failed || !ok;
  out.latencies.insert(out.latencies.end(), mine.begin(), mine.end());
}

task<int> run(std::uint16_t sport, std::uint16_t rport, int clients, int seconds, bool overlap) {
  shared out;
  std::vector<corio::join_handle<void>> all;
  for (int i = 0; i < clients; ++i) {
    all.push_back(corio::spawn(client(sport, rport, i, seconds, overlap, out)));
  }
  for (auto& h : all) {
    co_await h;
  }
  if (out.failed || out.latencies.empty()) {
    std::fprintf(stderr, "jobs_bench: a client failed\n");
    co_return 1;
  }
  auto& l = out.latencies;
  std::sort(l.begin(), l.end());
  std::printf("%zu %.1f %.1f %.1f\n", l.size(), static_cast<double>(l.size()) / seconds, l[l.size() / 2] / 1e3,
              l[std::min(l.size() - 1, l.size() * 99 / 100)] / 1e3);
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint16_t sport = 0;
  std::uint16_t rport = 0;
  int clients = 1;
  int seconds = 3;
  unsigned workers = 0;
  int overlap = 0;
  example::args args("jobs_bench", "job round trips of C++ clients against a job server");
  args.option<std::uint16_t>("--port-sender", sport, 1, 65535, "N", "port of GetAudioQueue");
  args.option<std::uint16_t>("--port-receiver", rport, 1, 65535, "N", "port of the result channels");
  args.option("--clients", clients, 1, 1000, "N", "clients at once (default 1)");
  args.option("--seconds", seconds, 1, 3600, "S", "how long each client runs (default 3)");
  args.option("--overlap", overlap, 0, 1, "0|1", "send each get together with its put (default 0)");
  args.workers(workers);
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (sport == 0 || rport == 0) {
    return args.fail("--port-sender and --port-receiver are required");
  }
  corio::runtime rt(example::with_workers(workers));
  return rt.block_on(run(sport, rport, clients, seconds, overlap != 0));
}
