// Fuzz target: the pickle reader (ipc/pickle.hpp) on arbitrary bytes.
// fuzz-sources: @ipc/pickle_sources
// fuzz-args: -lcrypto
//
// Properties checked on every input (a violation aborts, which the fuzzer reports):
// - load() returns a value or a pickle error with a message; it never crashes, leaks or
//   reads outside the input (ASan/UBSan builds);
// - the single-pass fast path and the general reader (load_options::fast_path = false)
//   return the same value or the same error;
// - a decoded value encodes (protocol 4 and 5) and decodes again to an identical value;
// - its repr is bounded, and equal values hash alike.
// Built two ways: with libFuzzer by fuzz/run.sh, and with fuzz/driver.cpp (a seeded
// mutation loop) as the `stress` suite test fuzz_pickle.
#include <corio/ipc/pickle.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

namespace pk = corio::ipc::pickle;

namespace {

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "pickle_fuzz: property violated: %s\n", what);
  std::abort();
}

pk::load_options limits() {
  pk::load_options o;
  o.max_bytes = 1 << 20;
  o.max_depth = 200;
  o.max_memo = 1 << 16;
  o.max_values = 1 << 16;
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static pk::reader reader(limits());  // reused, as a connection reuses its reader
  static pk::reader general([] {
    pk::load_options o = limits();
    o.fast_path = false;
    return o;
  }());
  auto bytes_in = std::as_bytes(std::span(data, size));
  auto v = reader.load(bytes_in);
  auto g = general.load(bytes_in);
  if (v.has_value() != g.has_value() || (v && !(*v == *g)) || (!v && v.error() != g.error())) {
    violated("the single-pass reader and the general reader disagree");
  }
  if (!v) {
    if (v.error().category() != pk::category() || reader.error_message().empty()) {
      violated("a failed load without a pickle error code and message");
    }
    return 0;
  }
  for (int protocol : {4, 5}) {
    pk::dump_options d;
    d.protocol = protocol;
    auto bytes = pk::dumps(*v, d);
    if (!bytes) {
      violated("a decoded value does not encode");
    }
    pk::load_options again = limits();
    again.max_bytes = bytes->size();
    again.max_memo = 1;
    again.max_values = 4 * limits().max_values;  // classes and argument tuples count too
    auto w = pk::loads(*bytes, again);
    if (!w) {
      violated("an encoded value does not decode");
    }
    if (!(*w == *v)) {
      violated("decode(encode(v)) differs from v");
    }
    // (The hash's contract is with key_equal: a NaN is not key_equal to itself.)
    if (v->hashable() && pk::value::key_equal(*w, *v) && pk::value::key_hash(*w) != pk::value::key_hash(*v)) {
      violated("equal values hash differently");
    }
  }
  if (v->repr(256).size() > 256 + 3) {
    violated("repr longer than its limit");
  }
  return 0;
}
