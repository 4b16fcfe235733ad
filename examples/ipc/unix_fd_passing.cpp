// unix_fd_passing: hand an open file descriptor to another task (or process) over a Unix
// socket with SCM_RIGHTS (IORING_OP_SENDMSG / RECVMSG). The sender opens a temporary file
// and a pipe, passes both descriptors, and closes its copies; the receiver reads the file
// and answers through the passed pipe. The file is made in $TMPDIR (else /tmp) and its
// name removed at once.
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/pipe.hpp>
#include <corio/ipc/unix.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

using corio::task;
using corio::ipc::unix_stream;

namespace {

// The receiver's answer, or nothing when it could not take both descriptors (it says why
// on stderr).
task<std::optional<std::string>> receiver(unix_stream s) {
  std::array<char, 16> tag{};
  auto got = co_await s.recv_fds(std::as_writable_bytes(std::span(tag)), 4);
  if (!got) {
    std::fprintf(stderr, "receiver: recv_fds: %s\n", got.error().message().c_str());
    co_return std::nullopt;
  }
  if (got->fds.size() != 2) {
    // The kernel drops the descriptors it cannot install (MSG_CTRUNC), e.g. past
    // RLIMIT_NOFILE.
    std::fprintf(stderr, "receiver: got %zu of the 2 descriptors sent%s\n", got->fds.size(),
                 got->truncated_fds ? " (the kernel dropped the rest: out of descriptors?)" : "");
    co_return std::nullopt;
  }
  // fds[0]: the file (read from its start); fds[1]: the pipe's write end.
  char text[128] = {};
  auto n = co_await corio::io::read(got->fds[0].fd(), std::as_writable_bytes(std::span(text)), 0);
  std::printf("receiver got %zu descriptors with tag '%.*s'; the file says: %.*s", got->fds.size(),
              static_cast<int>(got->bytes), tag.data(), static_cast<int>(n ? *n : 0), text);
  corio::ipc::pipe_writer reply(got->fds[1].release());
  std::string answer = "thanks, read " + std::to_string(n ? *n : 0) + " bytes";
  (void)co_await reply.write_all(std::as_bytes(std::span(answer)));
  co_return answer;
}

task<int> demo() {
  auto pair = corio::ipc::socketpair();
  auto p = corio::ipc::pipe();
  // In $TMPDIR (else /tmp), as mktemp(1) does.
  const char* tmpdir = std::getenv("TMPDIR");
  std::string path = std::string(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp") + "/corio-fd-passing-XXXXXX";
  int file = ::mkstemp(path.data());
  if (file >= 0) {
    ::unlink(path.c_str());  // the name goes at once: nothing is left behind, however we leave
  }
  corio::ipc::owned_fd file_owner(file);
  if (!pair || !p || file < 0) {
    std::fprintf(stderr, "unix_fd_passing: socketpair, pipe or mkstemp failed\n");
    co_return 1;
  }
  std::string content = "hello through a passed descriptor\n";
  (void)co_await corio::io::write(file, std::as_bytes(std::span(content)), 0);

  auto rx = corio::spawn(receiver(std::move(pair->second)));
  int fds[2] = {file, p->writer.fd()};
  auto sent = co_await pair->first.send_fds(std::as_bytes(std::span("fds", 3)), fds);
  if (!sent) {
    std::fprintf(stderr, "send_fds: %s\n", sent.error().message().c_str());
    co_return 1;
  }
  file_owner.close();  // the receiver holds its own copies now
  p->writer.close();
  std::optional<std::string> expected = co_await rx;
  if (!expected) {
    std::fprintf(stderr, "unix_fd_passing: the receiver could not take the descriptors\n");
    co_return 1;
  }
  std::string answer(expected->size(), '\0');
  auto r = co_await p->reader.read_exact(std::as_writable_bytes(std::span(answer)));
  std::printf("sender read back through the pipe: %s\n", answer.c_str());
  co_return r && answer == *expected ? 0 : 1;
}

int example_main(int argc, char** argv) {
  example::args args("unix_fd_passing", "pass open file descriptors over a Unix socket (SCM_RIGHTS)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  return corio::run(demo());
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("unix_fd_passing", example_main, argc, argv); }
