// The harness shared by bench/ipc/mq_bench and bench/ipc/sysv_bench, which run several
// systems side by side on the same work: their command line (--rounds, --messages,
// --workers, --repeat, --only, --bench), the clocks they read, and the loop that runs
// every benchmark's systems `repeat` times, in an order that alternates from one repeat to
// the next, and prints
//   #R <benchmark> <system> <value> <unit> (cpu <ns> ns/op)    after each run
//   -- medians of R<note>
//   <benchmark> <system> <median> <unit> (cpu <ns> ns/op)      names in alphabetical order
// (the CPU time is the process's, user + system over all threads, per operation of the
// run). What is timed, each benchmark's own loop, stays in its program. shm_bench and
// accept_burst take only median() from it, accept_rate median() and cpu_seconds().
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace side_by_side {

/// Seconds of wall time since t0.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The process's CPU time so far (user + system, all threads), in seconds.
inline double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/// The median of v (the upper middle one of an even count); 0 when v is empty.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

/// The command line: `PROGRAM [--rounds N] [--messages N] [--workers N] [--repeat N]
/// [--only SYSTEM] [--bench NAME]`.
struct options {
  int rounds = 0;
  int messages = 0;
  unsigned workers = 2;
  int repeat = 3;
  std::string only;        // --only: run this system only
  std::string only_bench;  // --bench: run this benchmark only
};

/// Reads argv's options over `o`, which holds the program's defaults. On an unknown option
/// prints the usage, on a count below 1 says so (stderr, naming `program`), and returns 2,
/// the exit status; otherwise nothing. (An option left without its value is ignored.)
inline std::optional<int> parse(int argc, char** argv, const char* program, options& o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--rounds") {
      o.rounds = std::atoi(argv[i + 1]);
    } else if (a == "--messages") {
      o.messages = std::atoi(argv[i + 1]);
    } else if (a == "--workers") {
      o.workers = static_cast<unsigned>(std::atoi(argv[i + 1]));
    } else if (a == "--repeat") {
      o.repeat = std::atoi(argv[i + 1]);
    } else if (a == "--only") {
      o.only = argv[i + 1];
    } else if (a == "--bench") {
      o.only_bench = argv[i + 1];
    } else {
      std::fprintf(stderr,
                   "usage: %s [--rounds N] [--messages N] [--workers N] [--repeat N] [--only SYSTEM] "
                   "[--bench NAME]\n",
                   program);
      return 2;
    }
  }
  if (o.rounds < 1 || o.messages < 1 || o.workers < 1 || o.repeat < 1) {
    std::fprintf(stderr, "%s: every count must be >= 1\n", program);
    return 2;
  }
  return std::nullopt;
}

/// One system of a benchmark: `run` does the work once and yields the benchmark's value;
/// `ops` is how many operations that is (the CPU time is reported per operation).
struct system_run {
  std::string name;
  long ops;
  std::function<double()> run;
};

/// A benchmark: its name, the unit of its values, and the systems that do its work.
struct bench_plan {
  std::string name, unit;
  std::vector<system_run> systems;
};

/// What the runs of one system measured: its values and its CPU ns per operation, one of
/// each per repeat.
struct measured {
  std::vector<double> values, cpu_ns;
};

/// [benchmark][system] -> what its runs measured.
using results = std::map<std::string, std::map<std::string, measured>>;

/// Runs every benchmark of `plan` (only o.only_bench, when given) o.repeat times, each
/// time all of its systems (only o.only, when given), starting one further down the list
/// at each repeat; prints a line per run (flushed), then "-- medians of R" and `note`, then
/// the medians. Yields what was measured, for the program's ratios.
inline results run(const std::vector<bench_plan>& plan, const options& o, const char* note) {
  results out;
  for (int r = 0; r < o.repeat; ++r) {
    for (const auto& b : plan) {
      if (!o.only_bench.empty() && b.name != o.only_bench) {
        continue;
      }
      // Alternate the order of the systems from one repeat to the next.
      for (std::size_t k = 0; k < b.systems.size(); ++k) {
        const auto& sys = b.systems[(k + static_cast<std::size_t>(r)) % b.systems.size()];
        if (!o.only.empty() && sys.name != o.only) {
          continue;
        }
        const double c0 = cpu_seconds();
        const double v = sys.run();
        const double cpu_ns = (cpu_seconds() - c0) * 1e9 / static_cast<double>(sys.ops);
        out[b.name][sys.name].values.push_back(v);
        out[b.name][sys.name].cpu_ns.push_back(cpu_ns);
        std::printf("#%d %s %s %.2f %s (cpu %.0f ns/op)\n", r + 1, b.name.c_str(), sys.name.c_str(), v,
                    b.unit.c_str(), cpu_ns);
        std::fflush(stdout);
      }
    }
  }
  std::map<std::string, std::string> unit;
  for (const auto& b : plan) {
    unit[b.name] = b.unit;
  }
  std::printf("-- medians of %d%s\n", o.repeat, note);
  for (const auto& [bench, systems] : out) {
    for (const auto& [system, m] : systems) {
      std::printf("%s %s %.2f %s (cpu %.0f ns/op)\n", bench.c_str(), system.c_str(), median(m.values),
                  unit[bench].c_str(), median(m.cpu_ns));
    }
  }
  return out;
}

}  // namespace side_by_side
