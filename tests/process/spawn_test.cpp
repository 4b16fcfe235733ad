// Tests for ipc/process/command.hpp and child.hpp: exit codes and signals, spawn errors,
// stdio round trips (large, both ways at once), env/cwd, fd and signal hygiene, process
// groups, try_wait/kill, cancellation with kill, and reaping of dropped children.
// Built twice: as is, and with CORIO_TEST_PIDFD_POLL, where every wait takes the
// pidfd-poll fallback of kernels without IORING_OP_WAITID (detail/exit_wait.hpp).
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/process/detail/exit_wait.hpp>
#include <corio/ipc/process/process.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <stop_token>
#include <string>

#include "helpers.hpp"
#include "process_helpers.hpp"

using namespace std::chrono_literals;
using corio::ipc::command;
using corio::ipc::stdio;
using corio_test::workers;

namespace {

#ifdef CORIO_TEST_PIDFD_POLL
const bool g_pidfd_poll = [] {
  corio::ipc::detail::set_exit_wait(corio::ipc::detail::exit_wait::force_pidfd_poll);
  return true;
}();
#endif

corio::task<corio::result<corio::ipc::exit_status>> run_status(command cmd) { co_return co_await cmd.status(); }
corio::task<corio::result<corio::ipc::process_output>> run_output(command cmd) { co_return co_await cmd.output(); }
corio::task<corio::ipc::process_result<corio::ipc::exit_status>> detailed_status(command cmd) {
  co_return co_await cmd.status();
}
corio::task<corio::ipc::process_result<corio::ipc::process_output>> detailed_output(command cmd) {
  co_return co_await cmd.output();
}

template <class T>
T run2(corio::task<T> t) {
  corio::runtime rt(workers(2));
  return rt.block_on(std::move(t));
}

}  // namespace

TEST_CASE("command: wait yields the exit code", "[process][command]") {
  auto st = run2(run_status(command("sh").args({"-c", "exit 7"})));
  REQUIRE(st);
  CHECK(st->code() == 7);
  CHECK_FALSE(st->signal());
  CHECK_FALSE(st->success());
  auto ok = run2(run_status(command("/bin/true")));
  REQUIRE(ok);
  CHECK(ok->success());
}

TEST_CASE("command: wait yields the terminating signal", "[process][command]") {
  auto st = run2(run_status(command("sh").args({"-c", "kill -9 $$"})));
  REQUIRE(st);
  CHECK(st->signal() == 9);
  CHECK_FALSE(st->code());
  CHECK(st->to_string().find("signal 9") == 0);
}

TEST_CASE("command: a missing program is ENOENT from spawn, not a child exiting 127", "[process][command]") {
  auto c = command("corio-no-such-program-xyz").spawn();
  REQUIRE_FALSE(c);
  CHECK(c.error() == std::errc::no_such_file_or_directory);
  auto p = command("/nonexistent/dir/prog").spawn();
  REQUIRE_FALSE(p);
  CHECK(p.error() == std::errc::no_such_file_or_directory);
}

TEST_CASE("command: a program that cannot be spawned is named in the error", "[process][command]") {
  auto c = command("corio-no-such-program-xyz").env("PATH", "/nonexistent:/also-not").spawn();
  REQUIRE_FALSE(c);
  CHECK(c.error() == std::errc::no_such_file_or_directory);
  CHECK(c.detail() == R"(cannot run "corio-no-such-program-xyz" (not found in PATH "/nonexistent:/also-not"))");
  CHECK(c.error_message().find("corio-no-such-program-xyz") != std::string::npos);
  auto p = command("/nonexistent/dir/prog").spawn();
  REQUIRE_FALSE(p);
  CHECK(p.detail() == R"(cannot run "/nonexistent/dir/prog")");
  auto st = run2(detailed_status(command("/nonexistent/dir/prog")));
  REQUIRE_FALSE(st);
  CHECK(st.detail() == R"(cannot run "/nonexistent/dir/prog")");
}

TEST_CASE("command: a PATH entry holding a directory named like the program is passed over, as execvp does",
          "[process][command]") {
  char dir[] = "/tmp/corio-path-XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string shadow = std::string(dir) + "/true";
  REQUIRE(::mkdir(shadow.c_str(), 0755) == 0);
  const std::string path = std::string(dir) + ":/bin:/usr/bin";
  // With env() (or a parent-death signal) corio searches PATH itself; before, it took the
  // directory and the spawn failed with EACCES.
  auto with_env = run2(run_status(command("true").env("PATH", path)));
  auto with_pdeath = run2(run_status(command("true").env("PATH", path).parent_death_signal(SIGKILL)));
  ::rmdir(shadow.c_str());
  ::rmdir(dir);
  REQUIRE(with_env);
  CHECK(with_env->code() == 0);
  REQUIRE(with_pdeath);
  CHECK(with_pdeath->code() == 0);
}

TEST_CASE("command: a program found in PATH that fails with ENOENT is not reported as not found",
          "[process][command]") {
  // The program is there; the working directory asked for is not.
  auto c = command("true").cwd("/nonexistent-corio-dir").spawn();
  REQUIRE_FALSE(c);
  CHECK(c.error() == std::errc::no_such_file_or_directory);
  CHECK(c.detail().find("not found in PATH") == std::string::npos);
  CHECK(c.detail().find("\"/nonexistent-corio-dir\"") != std::string::npos);
}

namespace {
/// spawn()'s error for `cmd` (which must be refused), or "spawned" if it was not.
std::string refusal(const command& cmd) {
  auto c = cmd.spawn();
  if (c) {
    return "spawned";
  }
  return c.error() == std::errc::invalid_argument ? c.detail() : "other error: " + c.error_message();
}
}  // namespace

TEST_CASE("command: a NUL in the program, an argument, the directory or the environment is refused, named",
          "[process][command]") {
  using namespace std::string_literals;
  CHECK(refusal(command("/bin/echo").arg("ok").arg("x\0; y"s)) ==
        R"(cannot run "/bin/echo": argument 2 ("x\0; y") contains a NUL byte)");
  CHECK(refusal(command("/bin/echo\0evil"s)) ==
        R"(cannot run "/bin/echo\0evil": the program name "/bin/echo\0evil" contains a NUL byte)");
  CHECK(refusal(command("/bin/true").cwd("/tmp\0/x"s)) ==
        R"(cannot run "/bin/true": the working directory "/tmp\0/x" contains a NUL byte)");
  CHECK(refusal(command("/bin/true").env("PATH=/evil:/usr/bin;X", "x")) ==
        R"(cannot run "/bin/true": the environment variable name "PATH=/evil:/usr/bin;X" contains '=')");
  CHECK(refusal(command("/bin/true").env("A\0B"s, "x")) ==
        R"(cannot run "/bin/true": the environment variable name "A\0B" contains a NUL byte)");
  CHECK(refusal(command("/bin/true").env("A", "x\0y"s)) ==
        R"(cannot run "/bin/true": the value of environment variable "A" contains a NUL byte)");
  CHECK(refusal(command("/bin/true").env("", "x")) == R"(cannot run "/bin/true": an environment variable name is empty)");
  CHECK(refusal(command("/bin/true").env_remove("X=Y")) ==
        R"(cannot run "/bin/true": the environment variable name "X=Y" contains '=')");
  // Refused before anything runs: output() and status() give the same error.
  auto out = run2(detailed_output(command("sh").args({"-c", "echo ran"}).env("X=Y", "1")));
  REQUIRE_FALSE(out);
  CHECK(out.error() == std::errc::invalid_argument);
  CHECK(out.detail().find("contains '='") != std::string::npos);
}

TEST_CASE("command: a file without execute permission is EACCES", "[process][command]") {
  char path[] = "/tmp/corio-noexec-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "#!/bin/sh\n", 10) == 10);
  ::close(fd);
  ::chmod(path, 0644);
  auto c = command(path).spawn();
  ::unlink(path);
  REQUIRE_FALSE(c);
  CHECK(c.error() == std::errc::permission_denied);
}

TEST_CASE("command: output collects stdout and stderr", "[process][command]") {
  auto out = run2(run_output(command("sh").args({"-c", "echo hello; echo oops >&2; exit 3"})));
  REQUIRE(out);
  CHECK(out->out == "hello\n");
  CHECK(out->err == "oops\n");
  CHECK(out->status.code() == 3);
}

namespace {
struct round_trip {
  std::string out;
  std::string err;
  bool ok = false;
};
corio::task<round_trip> big_round_trip(std::string input) {
  // cat echoes while it reads: without concurrent reading and writing, both pipes fill
  // and parent and child deadlock.
  auto c = command("sh")
               .args({"-c", "cat; head -c 300000 /dev/zero >&2"})
               .stdin_mode(stdio::piped())
               .stdout_mode(stdio::piped())
               .stderr_mode(stdio::piped())
               .spawn();
  round_trip r;
  if (!c) {
    co_return r;
  }
  auto out = co_await c->output(std::move(input));
  if (out) {
    r.ok = out->status.success();
    r.out = std::move(out->out);
    r.err = std::move(out->err);
  }
  co_return r;
}
}  // namespace

TEST_CASE("child: output moves 8 MiB in and out at once without a pipe deadlock", "[process][child]") {
  std::string input(8 << 20, '\0');
  for (std::size_t i = 0; i < input.size(); ++i) {
    input[i] = static_cast<char>('a' + i % 23);
  }
  auto r = run2(big_round_trip(input));
  CHECK(r.ok);
  CHECK(r.out.size() == input.size());
  CHECK(r.out == input);
  CHECK(r.err.size() == 300000);
}

TEST_CASE("command: env set, remove and clear, and cwd", "[process][command]") {
  ::setenv("CORIO_TEST_DROP", "x", 1);
  auto out = run2(run_output(command("sh")
                                 .args({"-c", "echo \"$CORIO_A|${CORIO_TEST_DROP-unset}\"; pwd"})
                                 .env("CORIO_A", "one two")
                                 .env_remove("CORIO_TEST_DROP")
                                 .cwd("/tmp")));
  REQUIRE(out);
  CHECK(out->out == "one two|unset\n/tmp\n");

  auto clear = run2(run_output(command("env").env_clear().env("ONLY", "1").env("PATH", "/usr/bin:/bin")));
  REQUIRE(clear);
  CHECK((clear->out == "ONLY=1\nPATH=/usr/bin:/bin\n"));
  ::unsetenv("CORIO_TEST_DROP");
}

TEST_CASE("command: a custom PATH is searched for the program", "[process][command]") {
  auto bad = command("sh").env("PATH", "/nonexistent").spawn();
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == std::errc::no_such_file_or_directory);
}

TEST_CASE("command: the child inherits only fds 0-2, an empty signal mask and default dispositions",
          "[process][command]") {
  int leak = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  REQUIRE(leak >= 3);
  ::signal(SIGUSR2, SIG_IGN);  // a parent's ignored signal must not reach the child
  std::string script = "test -e /proc/self/fd/" + std::to_string(leak) +
                       " && echo leaked; grep -E '^(SigBlk|SigIgn)' /proc/self/status";
  auto out = run2(run_output(command("sh").args({"-c", script})));
  ::signal(SIGUSR2, SIG_DFL);
  ::close(leak);
  REQUIRE(out);
  CAPTURE(out->out);
  CHECK(out->out.find("leaked") == std::string::npos);
  CHECK(out->out.find("SigBlk:\t0000000000000000") != std::string::npos);
  // Standard signals 1-31 all default. (glibc's posix_spawn leaves its two internal
  // real-time signals, 32 and 33, ignored in the exec'd image; harmless and documented.)
  auto at = out->out.find("SigIgn:\t");
  REQUIRE(at != std::string::npos);
  unsigned long long ignored = std::stoull(out->out.substr(at + 8, 16), nullptr, 16);
  CHECK((ignored & 0x7fffffffULL) == 0);
}

TEST_CASE("command: stdio from a given fd and /dev/null", "[process][command]") {
  char path[] = "/tmp/corio-out-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  auto st = run2(run_status(command("sh")
                                .args({"-c", "cat; echo to-file"})
                                .stdin_mode(stdio::null())
                                .stdout_mode(stdio::from_fd(fd))));
  REQUIRE(st);
  CHECK(st->success());
  char buf[64] = {};
  CHECK(::pread(fd, buf, sizeof buf - 1, 0) == 8);
  CHECK(std::string(buf) == "to-file\n");
  ::close(fd);
  ::unlink(path);
}

namespace {
std::string read_all(int fd) {
  std::string text;
  char buf[256];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      return text;
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
}
}  // namespace

TEST_CASE("command: inherit_fd passes extra fds (3 and 5) and closes every other", "[process][command]") {
  int a[2];
  int b[2];
  REQUIRE(::pipe2(a, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(b, O_CLOEXEC) == 0);
  int gap = ::open("/dev/null", O_RDONLY);  // without O_CLOEXEC: must still be closed
  REQUIRE(gap >= 3);
  // Passing a pipe's write end as 5 and another's as 3; fd 4 and the rest must be shut.
  std::string script = "echo hi >&5; echo three >&3; for f in 4 6 7 " + std::to_string(gap) +
                       " " + std::to_string(a[1]) + " " + std::to_string(b[1]) +
                       "; do case $f in 3|5) ;; *) test -e /proc/self/fd/$f && echo open $f;; esac; done; true";
  auto out = run2(run_output(command("sh").args({"-c", script}).inherit_fd(b[1], 5).inherit_fd(a[1], 3)));
  ::close(a[1]);
  ::close(b[1]);
  ::close(gap);
  std::string on5 = read_all(b[0]);
  std::string on3 = read_all(a[0]);
  ::close(a[0]);
  ::close(b[0]);
  REQUIRE(out);
  CAPTURE(out->out, out->err);
  CHECK(out->status.success());
  CHECK(on5 == "hi\n");
  CHECK(on3 == "three\n");
  CHECK(out->out.empty());  // no "open N"
}

TEST_CASE("command: inherit_fd swaps fds without clobbering a source, and checks its arguments",
          "[process][command]") {
  int a[2];
  int b[2];
  REQUIRE(::pipe2(a, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(b, O_CLOEXEC) == 0);
  // The child gets a's write end as b's number and b's as a's (a dup2 order trap).
  auto st = run2(run_status(command("sh")
                                .args({"-c", "echo to-a >&" + std::to_string(b[1]) + "; echo to-b >&" + std::to_string(a[1])})
                                .inherit_fd(a[1], b[1])
                                .inherit_fd(b[1], a[1])));
  ::close(a[1]);
  ::close(b[1]);
  std::string got_a = read_all(a[0]);
  std::string got_b = read_all(b[0]);
  ::close(a[0]);
  ::close(b[0]);
  REQUIRE(st);
  CHECK(st->success());
  CHECK(got_a == "to-a\n");
  CHECK(got_b == "to-b\n");
  auto bad = command("/bin/true").inherit_fd(-1, 3).spawn();
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == std::errc::bad_file_descriptor);
  auto neg = command("/bin/true").inherit_fd(0, -2).spawn();
  REQUIRE_FALSE(neg);
  CHECK(neg.error() == std::errc::invalid_argument);
}

namespace {
struct group_seen {
  pid_t pid = 0;
  pid_t pgid = -1;
  bool killed = false;
};
corio::task<group_seen> group_check() {
  group_seen g;
  auto c = command("sleep").arg("5").process_group(0).spawn();
  if (!c) {
    co_return g;
  }
  g.pid = c->id();
  g.pgid = ::getpgid(c->id());
  (void)c->kill(SIGTERM);
  auto st = co_await c->wait();
  g.killed = st && st->signal() == SIGTERM;
  co_return g;
}
}  // namespace

TEST_CASE("command: process_group(0) makes the child a group leader", "[process][command]") {
  auto g = run2(group_check());
  CHECK(g.pid > 0);
  CHECK(g.pgid == g.pid);
  CHECK(g.killed);
}

namespace {
struct try_wait_seen {
  bool running_first = false;
  bool reaped_after = false;
  int signal = 0;
  bool kill_after_reap_is_esrch = false;
};
corio::task<try_wait_seen> try_wait_check() {
  try_wait_seen s;
  auto c = command("sleep").arg("5").spawn();
  if (!c) {
    co_return s;
  }
  auto first = c->try_wait();
  s.running_first = first && !first->has_value();
  (void)c->kill();
  for (int i = 0; i < 200; ++i) {
    auto again = c->try_wait();
    if (again && again->has_value()) {
      s.reaped_after = true;
      s.signal = (*again)->signal().value_or(0);
      break;
    }
    (void)co_await corio::sleep_for(5ms);
  }
  auto k = c->kill();
  s.kill_after_reap_is_esrch = !k && k.error() == std::errc::no_such_process;
  co_return s;
}
}  // namespace

TEST_CASE("child: try_wait sees running then killed; kill after reaping is ESRCH", "[process][child]") {
  auto s = run2(try_wait_check());
  CHECK(s.running_first);
  CHECK(s.reaped_after);
  CHECK(s.signal == SIGKILL);
  CHECK(s.kill_after_reap_is_esrch);
}

namespace {
struct cancel_seen {
  bool cancelled = false;
  pid_t pid = 0;
  long elapsed_ms = 0;
};
corio::task<void> stop_later(std::stop_source* src) {
  (void)co_await corio::sleep_for(50ms);
  src->request_stop();
}
corio::task<cancel_seen> cancel_with_kill() {
  cancel_seen s;
  auto c = command("sleep").arg("30").spawn();
  if (!c) {
    co_return s;
  }
  s.pid = c->id();
  std::stop_source src;
  auto stopper = corio::spawn(stop_later(&src));
  auto t0 = std::chrono::steady_clock::now();
  auto st = co_await c->wait(src.get_token(), corio::ipc::on_cancel::kill);
  s.elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  s.cancelled = !st && st.error() == std::errc::operation_canceled;
  co_await stopper;
  co_return s;
}
struct wait_for_seen {
  corio::result<corio::ipc::exit_status> st = corio::unexpected(std::make_error_code(std::errc::io_error));
  pid_t pid = -1;
};
corio::task<wait_for_seen> wait_for_short() {
  wait_for_seen s;
  auto c = command("sleep").arg("30").spawn();
  if (!c) {
    s.st = corio::unexpected(c.error());
    co_return s;
  }
  s.pid = c->id();
  s.st = co_await c->wait_for(100ms);
  co_return s;
}

corio::task<corio::result<corio::ipc::exit_status>> status_with_timeout(command cmd, std::chrono::milliseconds limit) {
  co_return co_await corio::timeout(cmd.status(), limit);
}
corio::task<corio::result<corio::ipc::process_output>> output_with_timeout(command cmd,
                                                                           std::chrono::milliseconds limit) {
  co_return co_await corio::timeout(cmd.output(), limit);
}
struct child_output_seen {
  corio::result<corio::ipc::process_output> out = corio::unexpected(std::make_error_code(std::errc::io_error));
  pid_t pid = -1;
};
corio::task<child_output_seen> child_output_with_timeout() {
  child_output_seen s;
  auto c = command("sh").args({"-c", "echo started; exec sleep 30"}).stdout_mode(stdio::piped()).spawn();
  if (!c) {
    s.out = corio::unexpected(c.error());
    co_return s;
  }
  s.pid = c->id();
  s.out = co_await corio::timeout(c->output(), 200ms);
  co_return s;
}

std::string pid_file(const char* tag) {
  return "/tmp/corio_spawn_test_" + std::to_string(::getpid()) + "_" + tag;
}
}  // namespace

TEST_CASE("child: a cancelled wait with on_cancel::kill kills the child, which is then reaped", "[process][child]") {
  auto s = run2(cancel_with_kill());
  CHECK(s.cancelled);
  CHECK(s.elapsed_ms < 20'000);  // the child sleeps 30 s: the wait ended by the cancel, not by the child
  // The child is killed and reaped before the cancelled wait returns: its pid is gone.
  CHECK(corio_test::pid_gone(s.pid));
  CHECK(corio_test::zombies_after_settle(2000ms) == 0);
  char state = 0;
  pid_t ppid = 0;
  bool still_ours = corio_test::proc_state(s.pid, state, ppid) && ppid == ::getpid();
  CHECK_FALSE(still_ours);
}

TEST_CASE("child: wait_for times out and kills", "[process][child]") {
  auto t0 = std::chrono::steady_clock::now();
  auto s = run2(wait_for_short());
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(s.pid > 0);
  REQUIRE_FALSE(s.st);
  CHECK(s.st.error() == std::errc::timed_out);
  CHECK(s.st.error() == corio::errc::timed_out);  // "operation timed out", not "Connection timed out"
  CHECK(ms < 20'000);  // the child sleeps 30 s: the wait ended by wait_for, not by the child
  // Killed *and* reaped by the time wait_for returned: not running, not a zombie.
  CHECK(corio_test::pid_gone(s.pid));
  CHECK(corio_test::zombies_after_settle(2000ms) == 0);
}

namespace {
corio::task<corio::result<corio::ipc::exit_status>> wait_for_with_huge_limit() {
  auto c = command("sh").args({"-c", "sleep 0.05; exit 3"}).spawn();
  if (!c) {
    co_return corio::unexpected(c.error());
  }
  co_return co_await c->wait_for(std::chrono::hours::max());
}
}  // namespace

TEST_CASE("child: wait_for with hours::max() as its limit waits for the exit", "[process][child]") {
  auto st = run2(wait_for_with_huge_limit());
  REQUIRE(st);
  CHECK(st->code() == 3);
}

TEST_CASE("command: a cancelled status() kills and reaps the child", "[process][command]") {
  std::string path = pid_file("status");
  ::unlink(path.c_str());
  auto st = run2(status_with_timeout(command("sh").args({"-c", "echo $$ > " + path + "; exec sleep 30"}), 300ms));
  pid_t pid = corio_test::pid_from_file(path);
  ::unlink(path.c_str());
  REQUIRE(pid > 0);
  REQUIRE_FALSE(st);
  CHECK(st.error() == std::errc::timed_out);
  CHECK(st.error() == corio::errc::timed_out);
  CHECK(st.error().message() == "operation timed out");
  CHECK(corio_test::pid_gone(pid));  // right after the await: killed and reaped
}

TEST_CASE("command: a cancelled output() kills and reaps the child", "[process][command]") {
  std::string path = pid_file("output");
  ::unlink(path.c_str());
  auto out = run2(output_with_timeout(command("sh").args({"-c", "echo $$ > " + path + "; exec sleep 30"}), 300ms));
  pid_t pid = corio_test::pid_from_file(path);
  ::unlink(path.c_str());
  REQUIRE(pid > 0);
  REQUIRE_FALSE(out);
  CHECK(out.error() == std::errc::timed_out);
  CHECK(corio_test::pid_gone(pid));
}

TEST_CASE("child: a cancelled output() kills and reaps the child", "[process][child]") {
  auto s = run2(child_output_with_timeout());
  REQUIRE(s.pid > 0);
  REQUIRE_FALSE(s.out);
  CHECK(s.out.error() == std::errc::timed_out);
  CHECK(corio_test::pid_gone(s.pid));
}

TEST_CASE("child: dropped children are reaped (no zombies)", "[process][child]") {
  std::vector<pid_t> pids;
  for (int i = 0; i < 50; ++i) {
    auto c = command("/bin/true").spawn();
    REQUIRE(c);
    pids.push_back(c->id());
  }
  pid_t killed = -1;
  {
    auto k = command("sleep").arg("30").kill_on_drop(true).spawn();
    REQUIRE(k);
    killed = k->id();
  }
  // Every pid must disappear entirely (reaped by the orphan reaper; the kill_on_drop one
  // SIGKILLed first, else it would live for 30 s), not merely stop being a zombie.
  CHECK(corio_test::pid_gone_within(killed, 3000ms));
  bool all_gone = true;
  for (pid_t p : pids) {
    all_gone = all_gone && corio_test::pid_gone_within(p, 3000ms);
  }
  CHECK(all_gone);
  CHECK(corio_test::zombies_after_settle(3000ms) == 0);
}

TEST_CASE("command: spawn works off a runtime, wait needs one", "[process][command]") {
  auto c = command("/bin/true").spawn();
  REQUIRE(c);
  corio::runtime rt(workers(1));
  auto st = rt.block_on(c->wait());
  REQUIRE(st);
  CHECK(st->success());
}

namespace {
[[maybe_unused]] corio::task<bool> uses_waitid() { co_return corio::ipc::detail::exit_wait_uses_waitid(); }

/// Spawns `n` children: waits for the even ones, drops the odd ones. Counts bad waits.
corio::task<int> spawn_wait_and_drop(int n) {
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    auto c = command("/bin/true").spawn();
    if (!c) {
      ++bad;
      continue;
    }
    if (i % 2 == 0) {
      auto st = co_await c->wait();
      bad += st && st->success() ? 0 : 1;
    }
  }
  co_return bad;
}
corio::task<int> spawn_wait_and_drop_2x(int n) {
  auto [a, b] = co_await corio::when_all(spawn_wait_and_drop(n), spawn_wait_and_drop(n));
  co_return a + b;
}
}  // namespace

#ifdef CORIO_TEST_PIDFD_POLL
TEST_CASE("child: the forced fallback waits by polling the pidfd", "[process][child]") {
  CHECK_FALSE(run2(uses_waitid()));
}
#endif

TEST_CASE("child: 1,000 children, half waited and half dropped, leave no zombie", "[process][child]") {
  auto bad = run2(spawn_wait_and_drop_2x(500));
  CHECK(bad == 0);
  CHECK(corio_test::zombies_after_settle(10s) == 0);
}

namespace {
/// Makes output() and status() tasks from commands that are then gone (replaced in
/// place by another command, or temporaries), and only then awaits them.
corio::task<std::string> await_after_the_command_is_gone() {
  std::optional<command> cmd(std::in_place, "echo");
  cmd->arg("first");
  auto out = cmd->output();
  auto st = cmd->status();
  cmd.emplace("false");  // the first command destroyed, another in its storage
  auto temporary = command("echo").arg("from a temporary").output();
  auto temporary_status = command("sh").args({"-c", "exit 3"}).status();
  auto a = co_await std::move(out);
  auto b = co_await std::move(st);
  auto c = co_await std::move(temporary);
  auto d = co_await std::move(temporary_status);
  if (!a || !b || !c || !d) {
    co_return "an error";
  }
  co_return a->out + std::to_string(b->code().value_or(-1)) + " " + c->out + std::to_string(d->code().value_or(-1));
}
}  // namespace

TEST_CASE("command: output() and status() tasks own their command, so they may outlive it", "[process][command]") {
  CHECK(run2(await_after_the_command_is_gone()) == "first\n0 from a temporary\n3");
}
