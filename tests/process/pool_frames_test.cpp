// Tests for process_pool's frame limits (pool_options::max_message, shown with a small
// limit instead of gigabytes) and for a worker process fed broken frames directly: it
// runs no function the parent did not register and no frame over the limit.
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <corio/ipc/process/detail/pool_state.hpp>

#include "pool_helpers.hpp"

using corio::ipc::pool_errc;
using corio::ipc::process_pool;
using corio_test::run_with_pool;

namespace {

/// Echoes the job's bytes, or `n` bytes for a job that is a decimal number n.
void echo_or_make(std::span<const std::byte> in, std::vector<std::byte>& out) {
  std::string text(reinterpret_cast<const char*>(in.data()), in.size());
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos) {
    out.resize(out.size() + std::stoul(text), std::byte{'r'});
  } else {
    out.insert(out.end(), in.begin(), in.end());
  }
}
std::vector<std::byte> bytes_of(const std::string& s) {
  auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}
int twice(int x) { return 2 * x; }

struct limits_seen {
  std::size_t max_message = 0;
  std::vector<corio::ipc::pool_result<std::vector<std::byte>>> jobs;
  corio::ipc::pool_result<std::vector<int>> batched;
  std::vector<pid_t> pids_before;
  std::vector<pid_t> pids_after;
  std::size_t replaced = 0;
};

corio::task<limits_seen> pool_limits(process_pool& p) {
  limits_seen s;
  s.max_message = p.max_message();
  s.pids_before = p.worker_pids();
  std::vector<std::vector<std::byte>> jobs;
  jobs.push_back(bytes_of("small"));
  jobs.push_back(bytes_of(std::string(4097, 'j')));  // a job over the limit: never sent
  jobs.push_back(bytes_of("4096"));                  // a result exactly at the limit
  jobs.push_back(bytes_of("5000"));                  // a result over it: dropped
  jobs.push_back(bytes_of("after"));
  s.jobs = co_await p.map(&echo_or_make, std::move(jobs));
  // 10,000 ints = 40,000 bytes: map_batched's chunks stay within the limit.
  std::vector<int> xs(10000);
  for (int i = 0; i < 10000; ++i) {
    xs[static_cast<std::size_t>(i)] = i;
  }
  s.batched = co_await p.map_batched<&twice>(std::move(xs));
  s.pids_after = p.worker_pids();
  s.replaced = p.replaced();
  co_return s;
}

}  // namespace

TEST_CASE("process_pool: a job or result over max_message fails that job only, with a clear error",
          "[process][pool][limits]") {
  auto s = run_with_pool({.workers = 2, .max_message = 4096}, &pool_limits);
  CHECK(s.max_message == 4096);
  REQUIRE(s.jobs.size() == 5);
  REQUIRE(s.jobs[0]);
  CHECK(s.jobs[0]->size() == 5);
  REQUIRE_FALSE(s.jobs[1]);
  CHECK(s.jobs[1].error() == pool_errc::job_too_large);
  CHECK(s.jobs[1].detail() == "a job of 4097 bytes is over the pool's limit of 4096 bytes (pool_options::max_message)");
  REQUIRE(s.jobs[2]);
  CHECK(s.jobs[2]->size() == 4096);
  REQUIRE_FALSE(s.jobs[3]);
  CHECK(s.jobs[3].error() == pool_errc::result_too_large);
  CHECK(s.jobs[3].detail() ==
        "a result of 5000 bytes is over the pool's limit of 4096 bytes (pool_options::max_message)");
  REQUIRE(s.jobs[4]);
  CHECK(s.jobs[4]->size() == 5);
  REQUIRE(s.batched);
  REQUIRE(s.batched->size() == 10000);
  CHECK((*s.batched)[9999] == 19998);
  CHECK(s.pids_after == s.pids_before);  // no worker died or was replaced
  CHECK(s.replaced == 0);
}

namespace {

int g_calls_seen = 0;  // in a worker: how often the registered function ran
void count_call(std::span<const std::byte>, std::vector<std::byte>& out) {
  ++g_calls_seen;
  out.push_back(std::byte{static_cast<unsigned char>(g_calls_seen)});
}

/// A worker process fed by hand: its socket, its page, its exit.
struct bare_worker {
  corio::ipc::detail::pool_worker w;
  corio::ipc::detail::process_fd sock;
};

corio::task<corio::result<corio::ipc::exit_status>> feed_worker(std::vector<corio::ipc::detail::job_header> frames,
                                                                std::vector<std::byte>* answers) {
  using namespace corio::ipc::detail;
  bare_worker b;
  process_fd memfd;
  if (!make_page(b.w, 64, 4096, memfd)) {
    co_return corio::unexpected(std::make_error_code(std::errc::io_error));
  }
  corio::ipc::pool_job_fn table[1] = {&count_call};
  b.w.page->publish(table);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    co_return corio::unexpected(std::make_error_code(std::errc::io_error));
  }
  b.sock = process_fd(sv[0]);
  process_fd theirs(sv[1]);
  std::vector<std::byte> arg(sizeof b.w.page_bytes);
  std::memcpy(arg.data(), &b.w.page_bytes, sizeof b.w.page_bytes);
  std::vector<int> fds;
  fds.push_back(theirs.get());
  fds.push_back(memfd.get());
  auto c = co_await corio::ipc::fork_raw(&pool_worker_main, std::move(arg), std::move(fds));
  if (!c) {
    co_return corio::unexpected(c.error());
  }
  theirs.close();
  for (const auto& h : frames) {
    (void)!::write(b.sock.get(), &h, sizeof h);  // no payload: every frame here has len 0
  }
  ::shutdown(b.sock.get(), SHUT_WR);  // end-of-file after the frames
  auto status = co_await c->wait();
  std::byte buf[4096];
  for (ssize_t n; (n = ::read(b.sock.get(), buf, sizeof buf)) > 0;) {
    answers->insert(answers->end(), buf, buf + n);
  }
  co_return status;
}

struct fed {
  corio::result<corio::ipc::exit_status> status;
  std::vector<std::byte> answers;
};
fed run_fed(std::vector<corio::ipc::detail::job_header> frames) {
  REQUIRE(corio_test::fork_server_started);
  corio::runtime rt(corio_test::workers(2));
  fed f;
  f.status = rt.block_on(feed_worker(std::move(frames), &f.answers));
  return f;
}

}  // namespace

TEST_CASE("process_pool worker: a frame naming an unregistered function or over the limit stops it, calling nothing",
          "[process][pool][limits]") {
  using corio::ipc::detail::job_header;
  using corio::ipc::detail::result_header;
  using corio::ipc::detail::worker_exit_protocol;
  // Registered function 0, twice: two answers, then a clean exit at end-of-file.
  auto ok = run_fed({job_header{0, 0, 1, 0, 0}, job_header{0, 1, 2, 0, 0}});
  REQUIRE(ok.status);
  CHECK(ok.status->code() == 0);
  CHECK(ok.answers.size() == 2 * (sizeof(result_header) + 1));

  // Function 7 is not in the table: the worker answers the job before it, then exits
  // with worker_exit_protocol instead of calling whatever index 7 would point at.
  auto unregistered = run_fed({job_header{0, 0, 1, 0, 0}, job_header{0, 1, 2, 7, 0}, job_header{0, 2, 3, 0, 0}});
  REQUIRE(unregistered.status);
  CHECK(unregistered.status->code() == worker_exit_protocol);
  CHECK(unregistered.answers.size() == sizeof(result_header) + 1);

  // A length over the page's max_message (4096): the same.
  auto oversized = run_fed({job_header{4097, 0, 1, 0, 0}});
  REQUIRE(oversized.status);
  CHECK(oversized.status->code() == worker_exit_protocol);
  CHECK(oversized.answers.empty());
}
