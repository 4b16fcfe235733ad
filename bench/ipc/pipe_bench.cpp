// pipe_bench: pipe throughput with 64 KiB writes. corio: a writer task and a reader task
// on a 2-worker runtime through ipc::pipe(); the floor: plain blocking write(2)/read(2)
// between two threads. Prints "pipe_64k <system> <MB/s> MB/s".
//   pipe_bench [--mib 4096] [--workers 2]
#include <corio/corio.hpp>
#include <corio/ipc/pipe.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t kChunk = 64 * 1024;

corio::task<bool> writer(const corio::ipc::pipe_writer& w, std::size_t total) {
  std::vector<std::byte> buf(kChunk, std::byte{1});
  for (std::size_t done = 0; done < total; done += kChunk) {
    if (!co_await w.write_all(buf)) {
      co_return false;
    }
  }
  co_return true;
}

corio::task<std::size_t> reader(const corio::ipc::pipe_reader& r) {
  std::vector<std::byte> buf(kChunk);
  std::size_t got = 0;
  for (;;) {
    auto n = co_await r.read_some(buf);
    if (!n || *n == 0) {
      co_return got;
    }
    got += *n;
  }
}

corio::task<std::size_t> run_corio(corio::ipc::pipe_pair& p, std::size_t total) {
  auto rd = corio::spawn(reader(p.reader));
  bool ok = co_await writer(p.writer, total);
  p.writer.close();
  std::size_t got = co_await rd;
  co_return ok ? got : 0;
}

double blocking_floor(std::size_t total) {
  int fds[2];
  if (::pipe(fds) != 0) {
    return 0;
  }
  auto t0 = std::chrono::steady_clock::now();
  std::thread rd([&] {
    std::vector<char> buf(kChunk);
    while (::read(fds[0], buf.data(), buf.size()) > 0) {
    }
  });
  std::vector<char> buf(kChunk, 1);
  for (std::size_t done = 0; done < total; done += kChunk) {
    std::size_t off = 0;
    while (off < kChunk) {
      ssize_t n = ::write(fds[1], buf.data() + off, kChunk - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
  }
  ::close(fds[1]);
  rd.join();
  ::close(fds[0]);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(total) / s / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t mib = 4096;
  unsigned workers = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--mib") == 0) mib = std::strtoul(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--workers") == 0) workers = static_cast<unsigned>(std::atoi(argv[i + 1]));
  }
  std::size_t total = mib << 20;
  corio::runtime_config c;
  c.workers = workers;
  double corio_mbs = 0;
  {
    corio::runtime rt(c);
    auto p = corio::ipc::pipe();
    if (!p) return 1;
    auto t0 = std::chrono::steady_clock::now();
    std::size_t got = rt.block_on(run_corio(*p, total));
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (got != total) {
      std::fprintf(stderr, "pipe_bench: corio moved %zu of %zu bytes\n", got, total);
      return 1;
    }
    corio_mbs = static_cast<double>(total) / s / 1e6;
  }
  double floor_mbs = blocking_floor(total);
  std::printf("pipe_64k corio %.0f MB/s\n", corio_mbs);
  std::printf("pipe_64k blocking-threads %.0f MB/s\n", floor_mbs);
  std::printf("pipe_64k corio/blocking %.2f ratio\n", corio_mbs / floor_mbs);
  return 0;
}
