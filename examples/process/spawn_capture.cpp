// spawn_capture: run a command and capture its output (the tutorial's subprocess).
//
//   spawn_capture [program args...]     default: uname -a
// Exits 1 if the command fails, or if a missing program or an argument with a NUL (both
// tried afterwards) is spawned instead of refused.
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/process/process.hpp>

#include <cstdio>
#include <string>
#include <vector>

corio::task<int> capture(std::vector<std::string> argv) {
  corio::ipc::command cmd(argv.front());
  cmd.args(std::vector<std::string>(argv.begin() + 1, argv.end()));
  auto out = co_await cmd.output();  // stdout and stderr read concurrently, then the status
  if (!out) {
    std::fprintf(stderr, "%s\n", out.error_message().c_str());  // names the program
    co_return 1;
  }
  std::printf("status: %s\nstdout (%zu bytes): %s", out->status.to_string().c_str(), out->out.size(),
              out->out.c_str());
  if (!out->err.empty()) {
    std::printf("stderr: %s", out->err.c_str());
  }
  // A missing program is an error from spawn(), not a child exiting 127, and the error
  // says which program (error() alone is ENOENT):
  auto missing = corio::ipc::command("no-such-program-here").spawn();
  std::printf("missing program: %s\n", missing ? "spawned?!" : missing.error_message().c_str());
  // So is an argument that a C string would cut (here at the NUL): nothing is spawned.
  using namespace std::string_literals;
  auto cut = corio::ipc::command("echo").arg("x\0; rm -rf ~"s).spawn();
  std::printf("argument with a NUL: %s\n", cut ? "spawned?!" : cut.error_message().c_str());
  // Exit 1 if the command failed or either of those was spawned after all.
  co_return out->status.success() && !missing && !cut ? 0 : 1;
}

int example_main(int argc, char** argv) {
  std::vector<std::string> command;
  example::args args("spawn_capture", "run a command and capture its stdout, stderr and exit status");
  args.rest("program", command, "the command to run and its arguments, verbatim (default: uname -a)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  if (command.empty()) {
    command = {"uname", "-a"};
  }
  return corio::run(capture(std::move(command)));
}

int main(int argc, char** argv) { return example::main_guard("spawn_capture", example_main, argc, argv); }
