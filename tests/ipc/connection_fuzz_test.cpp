// A seeded mutation fuzzer over ipc::connection's frame reader and both sides of the
// handshake (the invariants are in connection_fuzz.hpp). Deterministic: a fixed seed, a
// corpus of valid streams and handshake transcripts, and mutations aimed at length
// prefixes (bit flips, interesting 32-bit values, inserted, deleted, duplicated and cut
// bytes). It runs for a bounded time (CORIO_FUZZ_SECONDS, default 5) or a number of
// executions (CORIO_FUZZ_RUNS), prints how many executions ran, and fails on the first
// broken invariant, printing the input in hex.
#include <catch2/catch.hpp>

#include "connection_fuzz.hpp"
#include "helpers.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

// splitmix64: small, fast and reproducible on every platform.
struct rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(next() % n); }
};

using bytes_t = std::vector<std::byte>;

void put(bytes_t& out, std::string_view s) {
  for (char c : s) {
    out.push_back(static_cast<std::byte>(c));
  }
}

void frame(bytes_t& out, std::string_view body) {
  auto h = corio::ipc::frame::encode_header(body.size());
  out.insert(out.end(), h.view().begin(), h.view().end());
  put(out, body);
}

std::vector<bytes_t> corpus() {
  std::vector<bytes_t> c;
  bytes_t a;
  frame(a, "foo1");
  frame(a, "");
  frame(a, std::string(300, 'x'));
  c.push_back(a);
  bytes_t longform;
  put(longform, std::string("\xff\xff\xff\xff\0\0\0\0\0\0\0\x05", 12));
  put(longform, "hello");
  frame(longform, "next");
  c.push_back(longform);
  // What a 3.12+ client sends to a server: its answer, its challenge, its verdict.
  bytes_t client;
  frame(client, "{sha256}" + std::string(32, 'a'));
  frame(client, "#CHALLENGE#{sha256}" + std::string(40, 'r'));
  frame(client, "#WELCOME#");
  c.push_back(client);
  // A 3.11 client: a raw MD5 answer and a 20-byte challenge.
  bytes_t old_client;
  frame(old_client, std::string(16, 'm'));
  frame(old_client, "#CHALLENGE#" + std::string(20, 'r'));
  c.push_back(old_client);
  // What a server sends to a client: its challenge, its verdict, its answer.
  bytes_t server;
  frame(server, "#CHALLENGE#{sha3_384}" + std::string(40, 'r'));
  frame(server, "#WELCOME#");
  frame(server, "{sha3_384}" + std::string(48, 'a'));
  c.push_back(server);
  // Pickled objects as Python's Connection.send writes them (recv() decodes these).
  namespace pickle = corio::ipc::pickle;
  bytes_t objects;
  for (const pickle::value& v : {pickle::value("foo1"), pickle::value::tuple_of(1, 2.5, nullptr, "x"),
                                 pickle::value::list_of(pickle::value::make_bytes("b"), true, -7)}) {
    auto p = pickle::dumps(v).value();
    frame(objects, std::string_view(reinterpret_cast<const char*>(p.data()), p.size()));
  }
  c.push_back(objects);
  bytes_t failure;
  frame(failure, "#CHALLENGE#" + std::string(20, 'r'));
  frame(failure, "#FAILURE#");
  c.push_back(failure);
  return c;
}

void mutate(bytes_t& b, rng& r) {
  static const std::uint32_t interesting[] = {0,          1,          4,          255,        256,
                                              1000,       1001,       0x7fffffff, 0x80000000, 0xfffffffe,
                                              0xffffffff, 0x00010000, 20,         16,         40};
  int steps = 1 + static_cast<int>(r.below(4));
  for (int i = 0; i < steps; ++i) {
    switch (r.below(7)) {
      case 0:  // flip a bit
        if (!b.empty()) {
          b[r.below(b.size())] ^= static_cast<std::byte>(1u << r.below(8));
        }
        break;
      case 1: {  // an interesting 32-bit value, big-endian (a length prefix)
        if (b.size() >= 4) {
          std::size_t at = r.below(b.size() - 3);
          std::uint32_t v = interesting[r.below(std::size(interesting))];
          for (int k = 0; k < 4; ++k) {
            b[at + static_cast<std::size_t>(k)] = static_cast<std::byte>(v >> (24 - 8 * k));
          }
        }
        break;
      }
      case 2:  // insert random bytes
        for (std::size_t n = 1 + r.below(8); n > 0; --n) {
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(r.below(b.size() + 1)), static_cast<std::byte>(r.next()));
        }
        break;
      case 3:  // delete a range
        if (!b.empty()) {
          std::size_t at = r.below(b.size());
          std::size_t n = 1 + r.below(std::min<std::size_t>(16, b.size() - at));
          b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + n));
        }
        break;
      case 4:  // cut the tail (a truncated stream)
        b.resize(r.below(b.size() + 1));
        break;
      case 5: {  // duplicate a chunk somewhere else
        if (!b.empty() && b.size() < 16384) {
          std::size_t at = r.below(b.size());
          std::size_t n = 1 + r.below(std::min<std::size_t>(64, b.size() - at));
          bytes_t chunk(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + n));
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(r.below(b.size() + 1)), chunk.begin(), chunk.end());
        }
        break;
      }
      default:  // a random byte
        if (!b.empty()) {
          b[r.below(b.size())] = static_cast<std::byte>(r.next());
        }
        break;
    }
  }
}

std::string hex(const bytes_t& b) {
  std::string s;
  char t[3];
  for (std::byte x : b) {
    std::snprintf(t, sizeof t, "%02x", std::to_integer<unsigned>(x));
    s += t;
  }
  return s;
}

long env_or(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtol(v, nullptr, 10) : fallback;
}

}  // namespace

TEST_CASE("fuzz: mutated streams and handshakes never crash, hang, leak or break the frame reader's invariants",
          "[ipc][connection][fuzz][stress]") {
  const long seconds = env_or("CORIO_FUZZ_SECONDS", 5);
  const long max_runs = env_or("CORIO_FUZZ_RUNS", 0);
  rng r{static_cast<std::uint64_t>(env_or("CORIO_FUZZ_SEED", 12))};
  std::size_t fds_before = corio_test::open_fd_count();
  auto rt = std::make_unique<corio::runtime>(corio_test::workers(2));
  auto seeds = corpus();
  long runs = 0;
  std::string failure;
  bytes_t input;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  // Every seed as it is first, then mutations of mutations (each input starts from a seed
  // or from the previous input).
  for (auto& s : seeds) {
    input = s;
    failure = conn_fuzz::fuzz_one(*rt, input, static_cast<std::uint32_t>(r.next()));
    ++runs;
    if (!failure.empty()) {
      break;
    }
  }
  while (failure.empty() && (max_runs > 0 ? runs < max_runs : std::chrono::steady_clock::now() < deadline)) {
    if (r.below(4) == 0 || input.size() > 32768) {
      input = seeds[r.below(seeds.size())];
    }
    mutate(input, r);
    failure = conn_fuzz::fuzz_one(*rt, input, static_cast<std::uint32_t>(r.next()));
    ++runs;
  }
  std::printf("fuzz: %ld executions, %s\n", runs, failure.empty() ? "no failure" : "FAILED");
  INFO("input: " << hex(input));
  CHECK(failure == "");
  rt.reset();
  CHECK(corio_test::open_fd_count() == fds_before);
}
