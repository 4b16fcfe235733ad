// A fuzzing driver for compilers without libFuzzer: runs a target's
// LLVMFuzzerTestOneInput on seed inputs, then on mutations of them (bit flips, byte
// changes, dictionary tokens, insertions, deletions, duplicated ranges, splices,
// truncations, interesting length values) for a bounded time or number of runs.
// A crash (signal, sanitizer error or abort) writes the input to crash-<target>-<pid>
// (in $FUZZ_ARTIFACTS or the working directory) and ends the run with a failure.
//
//   driver [--seconds S] [--runs N] [--seed X] [--max-len N] [--dict FILE] [--name NAME]
//          [DIR|FILE]...
//
// Prints one line: "fuzz NAME: E executions in T s from K seeds (seed X), 0 crashes".
// The same seeds and dictionary serve libFuzzer (fuzz/run.sh).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern "C" void __sanitizer_set_death_callback(void (*)()) __attribute__((weak));

namespace {

using bytes = std::vector<std::uint8_t>;

// The input being run, for the crash handler.
const std::uint8_t* g_current = nullptr;
std::size_t g_current_size = 0;
char g_crash_path[4096] = "";

void save_current() {
  if (g_current == nullptr || g_crash_path[0] == '\0') {
    return;
  }
  int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    std::size_t done = 0;
    while (done < g_current_size) {
      ssize_t n = ::write(fd, g_current + done, g_current_size - done);
      if (n <= 0) {
        break;
      }
      done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    const char msg[] = "fuzz: crash input written to ";
    (void)!::write(2, msg, sizeof msg - 1);
    (void)!::write(2, g_crash_path, std::strlen(g_crash_path));
    (void)!::write(2, "\n", 1);
  }
  g_current = nullptr;
}

void on_signal(int sig) {
  save_current();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Parses a libFuzzer dictionary: lines name="value" with \xNN, \\ and \" escapes.
std::vector<bytes> read_dictionary(const std::string& path) {
  std::vector<bytes> tokens;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    auto q = line.find('"');
    auto last = line.rfind('"');
    if (line.empty() || line[0] == '#' || q == std::string::npos || last <= q) {
      continue;
    }
    bytes t;
    for (std::size_t i = q + 1; i < last; ++i) {
      if (line[i] == '\\' && i + 1 < last) {
        if (line[i + 1] == 'x' && i + 3 < last) {
          t.push_back(static_cast<std::uint8_t>(std::stoi(line.substr(i + 2, 2), nullptr, 16)));
          i += 3;
        } else {
          t.push_back(static_cast<std::uint8_t>(line[i + 1]));
          i += 1;
        }
      } else {
        t.push_back(static_cast<std::uint8_t>(line[i]));
      }
    }
    tokens.push_back(std::move(t));
  }
  return tokens;
}

void add_seed_file(const std::filesystem::path& p, std::vector<bytes>& seeds, std::size_t max_len) {
  std::ifstream f(p, std::ios::binary);
  bytes b((std::istreambuf_iterator<char>(f)), {});
  if (b.size() > max_len) {
    b.resize(max_len);
  }
  seeds.push_back(std::move(b));
}

class mutator {
 public:
  mutator(std::uint64_t seed, const std::vector<bytes>& seeds, const std::vector<bytes>& tokens, std::size_t max_len)
      : m_rng(seed), m_seeds(seeds), m_tokens(tokens), m_max_len(max_len) {}

  bytes next() {
    bytes b = m_seeds.empty() ? bytes{} : m_seeds[pick(m_seeds.size())];
    std::size_t n = 1 + pick(4);
    for (std::size_t i = 0; i < n; ++i) {
      mutate(b);
    }
    if (b.size() > m_max_len) {
      b.resize(m_max_len);
    }
    return b;
  }

 private:
  std::size_t pick(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(m_rng() % n); }

  void mutate(bytes& b) {
    switch (pick(10)) {
      case 0:  // flip a bit
        if (!b.empty()) {
          b[pick(b.size())] ^= static_cast<std::uint8_t>(1u << pick(8));
        }
        break;
      case 1:  // a random byte
        if (!b.empty()) {
          b[pick(b.size())] = static_cast<std::uint8_t>(m_rng());
        }
        break;
      case 2:
      case 3: {  // a dictionary token, inserted or overwriting
        if (m_tokens.empty()) {
          break;
        }
        const bytes& t = m_tokens[pick(m_tokens.size())];
        std::size_t at = pick(b.size() + 1);
        if (pick(2) == 0 || at + t.size() > b.size()) {
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), t.begin(), t.end());
        } else {
          std::copy(t.begin(), t.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
        }
        break;
      }
      case 4: {  // insert random bytes
        std::size_t at = pick(b.size() + 1);
        std::size_t n = 1 + pick(4);
        for (std::size_t i = 0; i < n; ++i) {
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::uint8_t>(m_rng()));
        }
        break;
      }
      case 5: {  // delete a range
        if (b.empty()) {
          break;
        }
        std::size_t at = pick(b.size());
        std::size_t n = std::min(b.size() - at, 1 + pick(8));
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + n));
        break;
      }
      case 6: {  // duplicate a range elsewhere
        if (b.empty()) {
          break;
        }
        std::size_t from = pick(b.size());
        std::size_t n = std::min(b.size() - from, 1 + pick(32));
        bytes chunk(b.begin() + static_cast<std::ptrdiff_t>(from), b.begin() + static_cast<std::ptrdiff_t>(from + n));
        std::size_t at = pick(b.size() + 1);
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), chunk.begin(), chunk.end());
        break;
      }
      case 7: {  // splice with another seed
        if (m_seeds.empty()) {
          break;
        }
        const bytes& other = m_seeds[pick(m_seeds.size())];
        std::size_t keep = pick(b.size() + 1);
        std::size_t from = pick(other.size() + 1);
        b.resize(keep);
        b.insert(b.end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
        break;
      }
      case 8:  // truncate
        b.resize(pick(b.size() + 1));
        break;
      case 9: {  // an interesting 1-, 4- or 8-byte number (lengths, memo indices)
        static constexpr std::uint64_t interesting[] = {0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fffffff, 0x80000000,
                                                        0xffffffff, 0x100000000ULL, ~0ULL, 1ULL << 62};
        std::uint64_t v = interesting[pick(std::size(interesting))];
        std::size_t width = std::size_t{1} << pick(4);  // 1, 2, 4 or 8
        if (b.size() < width) {
          break;
        }
        std::size_t at = pick(b.size() - width + 1);
        for (std::size_t i = 0; i < width; ++i) {
          b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
        }
        break;
      }
    }
  }

  std::mt19937_64 m_rng;
  const std::vector<bytes>& m_seeds;
  const std::vector<bytes>& m_tokens;
  std::size_t m_max_len;
};

int run_one(const bytes& b) {
  g_current = b.data();
  g_current_size = b.size();
  int rc = LLVMFuzzerTestOneInput(b.data(), b.size());
  g_current = nullptr;
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 10;
  std::uint64_t runs = ~std::uint64_t{0};
  std::uint64_t seed = std::random_device{}();
  std::size_t max_len = 64 * 1024;
  std::string name = "target";
  std::vector<bytes> seeds;
  std::vector<bytes> tokens;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "fuzz: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seconds") {
      seconds = std::stod(value());
    } else if (a == "--runs") {
      runs = std::stoull(value());
    } else if (a == "--seed") {
      seed = std::stoull(value(), nullptr, 0);
    } else if (a == "--max-len") {
      max_len = std::stoull(value());
    } else if (a == "--dict") {
      tokens = read_dictionary(value());
    } else if (a == "--name") {
      name = value();
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "fuzz: unknown option %s\n", a.c_str());
      return 2;
    } else {
      inputs.push_back(a);
    }
  }
  for (const auto& in : inputs) {
    if (std::filesystem::is_directory(in)) {
      for (const auto& e : std::filesystem::directory_iterator(in)) {
        if (e.is_regular_file()) {
          add_seed_file(e.path(), seeds, max_len);
        }
      }
    } else {
      add_seed_file(in, seeds, max_len);
    }
  }

  const char* dir = std::getenv("FUZZ_ARTIFACTS");
  std::snprintf(g_crash_path, sizeof g_crash_path, "%s/crash-%s-%d", dir ? dir : ".", name.c_str(),
                static_cast<int>(::getpid()));
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) {
    ::signal(sig, on_signal);
  }
  if (__sanitizer_set_death_callback) {
    __sanitizer_set_death_callback(save_current);
  }

  auto start = std::chrono::steady_clock::now();
  std::uint64_t executions = 0;
  for (const auto& s : seeds) {
    run_one(s);
    ++executions;
  }
  mutator m(seed, seeds, tokens, max_len);
  auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(seconds));
  while (executions < runs) {
    if ((executions & 255) == 0 && std::chrono::steady_clock::now() >= deadline) {
      break;
    }
    run_one(m.next());
    ++executions;
  }
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz %s: %llu executions in %.1f s from %zu seeds (seed %llu), 0 crashes\n", name.c_str(),
              static_cast<unsigned long long>(executions), took, seeds.size(), static_cast<unsigned long long>(seed));
  return 0;
}
