// Shared Catch2 main for corio's tests.
//
// Before running any test it checks that this process may create an io_uring; if the
// kernel or a seccomp filter refuses, the whole executable reports "skipped" to meson
// (exit code 77) with the reason on stderr, instead of failing every test.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <liburing.h>

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  io_uring ring;
  int rc = io_uring_queue_init(2, &ring, 0);
  if (rc < 0) {
    std::fprintf(stderr, "SKIP: io_uring is not available to this process: %s\n", std::strerror(-rc));
    return 77;
  }
  io_uring_queue_exit(&ring);
  return Catch::Session().run(argc, argv);
}
