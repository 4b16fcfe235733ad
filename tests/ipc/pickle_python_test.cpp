// Tests ipc/pickle.hpp against every Python 3 on the machine: each Python writes the
// samples of pickle_corpus.py with protocols 0 to 5 and its default; corio decodes each
// pickle and compares it with the same sample built in C++; corio encodes its samples
// (protocol 4, and 5 for Pythons that read it) and the Python loads them back and compares
// them strictly (pickle_corpus.py check). The Pythons are found at run time by
// tests/ipc/pythons.hpp: Debian's /usr/bin/python3, python3 on PATH, and pyenv's versions.
#include <corio/ipc/pickle.hpp>

#include <catch2/catch.hpp>

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "helpers.hpp"
#include "pythons.hpp"

#ifndef CORIO_PICKLE_CORPUS
#error "CORIO_PICKLE_CORPUS (the path of pickle_corpus.py) must be defined by the build"
#endif

namespace fs = std::filesystem;
namespace pk = corio::ipc::pickle;
using pk::value;

namespace {

value list_of_range(int n) {
  value::items_type items;
  for (int i = 0; i < n; ++i) {
    items.emplace_back(i);
  }
  return value::make_list(std::move(items));
}

value big(std::string_view decimal) { return value(*pk::big_int::from_decimal(decimal)); }

value power_of_two(int n, std::int64_t plus = 0, bool negative = false) {
  // 2**n + plus, built by doubling a decimal string.
  std::string digits = "1";
  for (int i = 0; i < n; ++i) {
    int carry = 0;
    for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
      int d = (*it - '0') * 2 + carry;
      *it = static_cast<char>('0' + d % 10);
      carry = d / 10;
    }
    if (carry) {
      digits.insert(digits.begin(), static_cast<char>('0' + carry));
    }
  }
  auto b = *pk::big_int::from_decimal(digits);
  if (plus != 0) {
    // digits + plus for small positive plus
    std::string p = std::to_string(plus);
    int carry = 0;
    std::string out = digits;
    auto pi = p.rbegin();
    for (auto it = out.rbegin(); it != out.rend(); ++it) {
      int d = (*it - '0') + carry + (pi != p.rend() ? (*pi++ - '0') : 0);
      *it = static_cast<char>('0' + d % 10);
      carry = d / 10;
    }
    b = *pk::big_int::from_decimal(out);
  }
  if (negative) {
    b = *pk::big_int::from_decimal("-" + b.to_string());
  }
  return value(b);
}

value nested_lists(int depth) {
  value v = value::make_list({});
  for (int i = 0; i < depth; ++i) {
    v = value::list_of(std::move(v));
  }
  return v;
}

// The samples of pickle_corpus.py, built in C++ (same names, same values).
std::map<std::string, value> samples() {
  std::map<std::string, value> s;
  s["none"] = value();
  s["true"] = value(true);
  s["false"] = value(false);
  s["ints"] = value::list_of(0, 1, 255, 256, 65535, 65536, -1, -129, INT32_MAX, INT32_MIN, std::int64_t{1} << 31,
                             INT64_MAX, INT64_MIN);
  s["big_ints"] = value::list_of(power_of_two(63), big("-9223372036854775809"), power_of_two(64), power_of_two(70),
                                 power_of_two(100, 0, true), big("1" + std::string(300, '0')));
  s["huge_int"] = power_of_two(2100, 12345);
  s["floats"] = value::list_of(0.0, -0.0, 1.5, 1e300, -1e-300, std::numeric_limits<double>::infinity(),
                               -std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN(),
                               5e-324);
  s["strs"] = value::list_of("", "hello", "\u00fc\u00f1\u00ee", "\ud55c\uad6d\uc5b4", "\U0001F600",
                             std::string("nul\0inside", 10));
  s["long_str"] = value(std::string(300, 'a'));
  s["lone_surrogate"] = value(std::string("x\xed\xa0\x80y"));  // U+D800 as surrogatepass writes it
  s["bytes"] = value::list_of(value::make_bytes(""), value::make_bytes(std::string_view("\x00\xff", 2)),
                              value::make_bytes(std::string(300, 'b')));
  s["bytearrays"] = value::list_of(value::make_bytearray("xyz"), value::make_bytearray(""));
  s["tuples"] = value::list_of(value::tuple_of(), value::tuple_of(1), value::tuple_of(1, 2), value::tuple_of(1, 2, 3),
                               value::tuple_of(1, 2, 3, 4),
                               value::tuple_of(value::tuple_of(1), value::tuple_of(value::tuple_of())));
  s["lists"] = value::list_of(value::list_of(), value::list_of(1), value::list_of(1, "a", nullptr));
  s["long_list"] = list_of_range(2500);
  s["nested"] = nested_lists(100);
  s["dicts"] = value::list_of(value::make_dict({}), value::make_dict({{"a", 1}}),
                              value::make_dict({{1, "x"},
                                                {"b", value::list_of(1, 2)},
                                                {value::tuple_of(1, 2), nullptr},
                                                {nullptr, true},
                                                {1.5, value::make_bytes("x")},
                                                {-7, value::make_dict({})}}));
  {
    pk::dict d;
    for (int i = 0; i < 1500; ++i) {
      d.insert_or_assign(i, std::to_string(i));
    }
    s["long_dict"] = value(std::move(d));
  }
  s["sets"] = value::list_of(value(pk::set{}), value(pk::set{1, 2, 3}), value::make_frozenset({}),
                             value::make_frozenset({"a", value::tuple_of(1, 2)}));
  {
    pk::set st;
    for (int i = 0; i < 1200; ++i) {
      st.insert(i);
    }
    s["long_set"] = value(std::move(st));
  }
  value a = value::list_of(1, 2);
  s["shared"] = value::list_of(a, a, value::tuple_of(a));
  s["request_dummy"] = value::tuple_of(nullptr, "dummy", value::tuple_of(), value::make_dict({}));
  s["request_get"] = value::tuple_of("7f7326de1490", "get", value::tuple_of(), value::make_dict({{"block", false}}));
  s["request_put"] = value::tuple_of("7f7326de1490", "put",
                                     value::tuple_of(value::tuple_of(value::make_bytes("ab"), "x", 7)),
                                     value::make_dict({}));
  s["reply_create"] = value::tuple_of(
      "#RETURN", value::tuple_of("7f7326de1490", value::tuple_of("empty", "full", "get", "get_nowait", "put", "qsize")));
  s["value_error"] = pk::builtin_exception("ValueError", "bad value");
  s["key_error"] = pk::builtin_exception("KeyError", "k");
  s["runtime_error"] = pk::make_exception("builtins", "RuntimeError", {"x", 2});
  s["file_not_found"] = pk::make_exception("builtins", "FileNotFoundError", {2, "No such file"});
  s["queue_empty"] = value::tuple_of("#ERROR", pk::queue_empty());
  s["queue_full"] = pk::queue_full();
  s["remote_error"] = pk::make_exception("multiprocessing.managers", "RemoteError", {"Traceback text"});
  {
    value e = pk::builtin_exception("ValueError", "with state");
    e.if_object()->state = value::make_dict({{"detail", 5}});
    s["exception_with_state"] = e;
  }
  {
    pk::object token;
    token.module = "multiprocessing.managers";
    token.name = "Token";
    token.new_object = true;
    token.state = value::tuple_of("Queue", value::tuple_of("127.0.0.1", 1001), "7f00");
    s["token"] = value(std::move(token));
  }
  return s;
}

// Python 3.6 spells queue.Empty "queue.Empty", later ones "_queue.Empty": one class.
void normalize_queue_module(value& v) {
  if (auto* o = v.if_object()) {
    if (o->module == "_queue") {
      o->module = "queue";
    }
    for (auto& a : o->args) {
      normalize_queue_module(a);
    }
  } else if (auto* t = v.if_tuple()) {
    for (auto& x : *t) {
      normalize_queue_module(x);
    }
  }
}

struct run_result {
  int status;
  std::string output;
};

run_result run(const std::string& command) {
  run_result r{-1, {}};
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) {
    return r;
  }
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    r.output.append(buf, n);
  }
  int status = ::pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_file(const fs::path& p, const std::vector<std::byte>& data) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}


}  // namespace

TEST_CASE("pickles written by every installed Python decode to the expected values and corio's encodings load back "
          "equal in each of them",
          "[pickle][python]") {
  const auto& pythons = corio_test::pythons();
  REQUIRE_FALSE(pythons.empty());
  const auto expected = samples();
  for (const auto& found : pythons) {
    const std::string& python = found.path;
    auto version = run(quote(python) + " -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'");
    std::string ver = version.output.substr(0, version.output.find('\n'));
    INFO("python " << python << " (" << ver << ")");
    corio_test::temp_dir dir;
    REQUIRE_FALSE(dir.path.empty());

    auto w = run(quote(python) + " " + quote(CORIO_PICKLE_CORPUS) + " write " + quote(dir.path));
    INFO(w.output);
    REQUIRE(w.status == 0);

    // Decode every pickle the Python wrote.
    std::size_t decoded = 0;
    std::set<std::string> names_seen;
    pk::reader reader;
    for (const auto& entry : fs::directory_iterator(dir.path)) {
      std::string file = entry.path().filename().string();
      std::string name = file.substr(0, file.find('.'));
      auto it = expected.find(name);
      INFO("file " << file);
      REQUIRE(it != expected.end());
      names_seen.insert(name);
      std::string bytes = read_file(entry.path());
      auto v = reader.load(bytes);
      INFO("error: " << reader.error_message());
      REQUIRE(v.has_value());
      normalize_queue_module(*v);
      value want = it->second;
      bool python2_names = file.find(".p0.") != std::string::npos || file.find(".p1.") != std::string::npos ||
                           file.find(".p2.") != std::string::npos;
      if (name == "file_not_found" && python2_names) {
        // Protocols 0-2 spell every OSError subclass exceptions.OSError (Python 2 had no
        // subclasses); Python's OSError(2, ...) constructor picks the subclass again.
        want.if_object()->name = "OSError";
      }
      INFO("decoded " << v->repr(300) << "\nexpected " << want.repr(300));
      CHECK(*v == want);
      // The general reader (no single-pass fast path) decodes it identically.
      pk::load_options general;
      general.fast_path = false;
      auto g = pk::loads(bytes, general);
      REQUIRE(g.has_value());
      normalize_queue_module(*g);
      CHECK(*g == *v);
      ++decoded;
    }
    CHECK(names_seen.size() == expected.size());

    // Encode every sample; the Python loads and compares them.
    bool reads_5 = ver != "3.6" && ver != "3.7";
    std::size_t encoded = 0;
    for (const auto& [name, v] : expected) {
      auto p4 = pk::dumps(v);
      REQUIRE(p4.has_value());
      write_file(fs::path(dir.path) / (name + ".corio4.pickle"), *p4);
      ++encoded;
      if (reads_5) {
        pk::dump_options o;
        o.protocol = 5;
        auto p5 = pk::dumps(v, o);
        REQUIRE(p5.has_value());
        write_file(fs::path(dir.path) / (name + ".corio5.pickle"), *p5);
        ++encoded;
      }
    }
    auto c = run(quote(python) + " " + quote(CORIO_PICKLE_CORPUS) + " check " + quote(dir.path));
    INFO(c.output);
    CHECK(c.status == 0);
    CHECK(c.output.find("checked " + std::to_string(encoded) + " corio pickles, 0 failures") != std::string::npos);
    std::cout << "pickle corpus: " << python << " (" << ver << "): decoded " << decoded << " pickles, loaded back "
              << encoded << " corio pickles\n";
  }
}
