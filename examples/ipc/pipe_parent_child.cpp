// pipe_parent_child: the tutorial's Pipe between a parent and a child process.
// The child is forked before the parent starts its runtime (a forked child of a
// multi-threaded process may only call async-signal-safe functions); it writes with plain
// write(2) and exits. The parent reads the messages through the ring with pipe_reader,
// then answers through a second pipe the child reads before exiting.
//   pipe_parent_child [count]
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/pipe.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

using corio::task;

namespace {

void child_main(int out_fd, int in_fd, int count) {
  for (int i = 0; i < count; ++i) {
    char line[64];
    int n = std::snprintf(line, sizeof line, "message %d from child %d\n", i, static_cast<int>(::getpid()));
    if (::write(out_fd, line, static_cast<std::size_t>(n)) != n) {
      ::_exit(1);
    }
  }
  ::close(out_fd);
  char ack[3] = {};
  ::_exit(::read(in_fd, ack, 3) == 3 && ack[0] == 'a' ? 0 : 1);
}

task<int> parent_main(corio::ipc::pipe_reader from_child, corio::ipc::pipe_writer to_child, int count) {
  std::string all;
  std::array<char, 256> buf{};
  for (;;) {
    auto n = co_await from_child.read_some(std::as_writable_bytes(std::span(buf)));
    if (!n) {
      std::fprintf(stderr, "read: %s\n", n.error().message().c_str());
      co_return 1;
    }
    if (*n == 0) {
      break;  // the child closed its end
    }
    all.append(buf.data(), *n);
  }
  std::printf("%s", all.c_str());
  int lines = 0;
  for (char c : all) {
    lines += c == '\n' ? 1 : 0;
  }
  (void)co_await to_child.write_all(std::as_bytes(std::span("ack", 3)));
  std::printf("parent read %d of %d messages\n", lines, count);
  co_return lines == count ? 0 : 1;
}

int example_main(int argc, char** argv) {
  int count = 5;
  example::args args("pipe_parent_child", "a forked child writes messages into a pipe; the parent reads them");
  args.positional("count", count, 0, 1000000, "messages the child writes, 0..1000000 (default 5)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  auto up = corio::ipc::pipe();
  auto down = corio::ipc::pipe();
  if (!up || !down) {
    return 1;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    return 1;
  }
  if (pid == 0) {
    up->reader.close();
    down->writer.close();
    child_main(up->writer.release(), down->reader.release(), count);
  }
  up->writer.close();  // else the parent's read never sees end of file
  down->reader.close();
  int rc = 0;
  {
    corio::runtime rt;
    rc = rt.block_on(parent_main(std::move(up->reader), std::move(down->writer), count));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  bool child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  std::printf("child exited %s\n", child_ok ? "cleanly" : "with an error");
  return rc == 0 && child_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("pipe_parent_child", example_main, argc, argv); }
