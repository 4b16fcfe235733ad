// Pickle codec benchmark: corio's pickle::reader / pickle::dumps (ipc/pickle.hpp) against
// Python's own C pickle module (pickle.loads / pickle.dumps, via pickle_peer.py), on the
// same messages in one run: a manager request, an ('#ERROR', queue.Empty()) reply, a dict
// of 100 str keys, a list of 1000 ints and 64 KiB of bytes. Both sides decode the pickles
// Python writes (protocol 4, with FRAME and MEMOIZE); both encode the decoded message.
//   pickle_bench [--python PROGRAM] [--peer pickle_peer.py] [--repeat N]
// Prints `<benchmark> <system> <value> ns/op` lines, the process CPU time per operation
// (best of N runs each; CPU time, because the wall clock of a shared machine counts other
// processes), and then corio's speed-up over Python per benchmark. Python's figures are
// timeit statements calling pickle.loads / pickle.dumps directly (no wrapper function), so
// they hold one Python-level call each: what a Python service pays per message.
#include <corio/ipc/pickle.hpp>

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#ifndef CORIO_PICKLE_PEER
#define CORIO_PICKLE_PEER "bench/ipc/pickle_peer.py"
#endif

namespace pk = corio::ipc::pickle;
namespace fs = std::filesystem;
namespace {

double cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

template <class F>
double best_ns_per_op(F&& f, std::size_t n, int repeat) {
  double best = 1e300;
  for (int r = 0; r < repeat; ++r) {
    double t0 = cpu_ns();
    for (std::size_t i = 0; i < n; ++i) {
      f();
    }
    double ns = (cpu_ns() - t0) / static_cast<double>(n);
    best = std::min(best, ns);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string python = "python3";
  std::string peer = CORIO_PICKLE_PEER;
  int repeat = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--python") {
      python = argv[i + 1];
    } else if (a == "--peer") {
      peer = argv[i + 1];
    } else if (a == "--repeat") {
      repeat = std::max(1, std::atoi(argv[i + 1]));
    } else {
      std::fprintf(stderr, "usage: pickle_bench [--python PROGRAM] [--peer pickle_peer.py] [--repeat N]\n");
      return 2;
    }
  }
  std::string leaf = "corio-pickle-bench-";
  leaf += std::to_string(::getpid());
  std::string dir = (fs::temp_directory_path() / leaf).string();
  fs::create_directories(dir);
  // Built by append (g++ 12 -O3 warns falsely on "literal" + std::string).
  std::string cmd;
  for (const std::string* part : {&python, &peer, &dir}) {
    if (!cmd.empty()) {
      cmd += ' ';
    }
    cmd += '\'';
    cmd += *part;
    cmd += '\'';
  }
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    std::perror("popen");
    return 1;
  }
  std::map<std::string, double> python_ns;  // "loads/name" -> ns
  std::vector<std::string> names;
  char line[512];
  while (std::fgets(line, sizeof line, p)) {
    char bench[256];
    char sys[64];
    double v = 0;
    if (std::sscanf(line, "%255s %63s %lf", bench, sys, &v) == 3) {
      std::printf("%s", line);
      std::fflush(stdout);
      python_ns[bench] = v;
    }
  }
  if (::pclose(p) != 0 || python_ns.empty()) {
    std::fprintf(stderr, "pickle_bench: the Python peer failed (%s)\n", cmd.c_str());
    fs::remove_all(dir);
    return 1;
  }

  pk::reader reader;
  std::vector<std::byte> out;
  int failed = 0;
  std::vector<std::string> lines;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().stem().string();
    std::ifstream f(entry.path(), std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(f)), {});
    auto v = reader.load(data);
    if (!v) {
      std::fprintf(stderr, "pickle_bench: %s: %s\n", name.c_str(), reader.error_message().c_str());
      ++failed;
      continue;
    }
    std::size_t n = std::max<std::size_t>(1000, 2'000'000 / std::max<std::size_t>(data.size(), 1));
    double loads = best_ns_per_op([&] { (void)reader.load(data); }, n, repeat);
    double dumps = best_ns_per_op(
        [&] {
          out.clear();
          (void)pk::dump(*v, out);
        },
        n, repeat);
    std::printf("pickle_loads/%s corio %.1f ns/op\n", name.c_str(), loads);
    std::printf("pickle_dumps/%s corio %.1f ns/op\n", name.c_str(), dumps);
    char r[256];
    std::string key = "pickle_loads/";
    key += name;
    std::snprintf(r, sizeof r, "ratio pickle_loads/%s corio/python %.2fx faster\n", name.c_str(),
                  python_ns[key] / loads);
    lines.emplace_back(r);
    key = "pickle_dumps/";
    key += name;
    std::snprintf(r, sizeof r, "ratio pickle_dumps/%s corio/python %.2fx faster\n", name.c_str(),
                  python_ns[key] / dumps);
    lines.emplace_back(r);
  }
  for (const auto& l : lines) {
    std::printf("%s", l.c_str());
  }
  fs::remove_all(dir);
  return failed == 0 ? 0 : 1;
}
