// example::args: the small command-line parser every corio example uses.
//
// Concept: an example declares its flags (`--self-test`), its options with a value
// (`--port N`, `--port=N`) and its positional arguments, each with a help line; parse()
// then fills them in, or prints usage for `--help`/`-h` (exit status 0), or prints one
// line naming what is wrong plus a hint to stderr (exit status 2). Integers are checked
// completely: `--port abc`, `--port 99999`, `--port -1` and `--port 12x` are errors,
// never a wrapped or default value, and nothing has started when they are reported.
// `--` ends the options; a `rest` positional takes every argument from the first one on
// verbatim (for a command line to run, which may contain its own `-x` options).
// Thread-safety: call from main() before starting anything. Cost: negligible.
#pragma once

#include <charconv>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <corio/runtime/config.hpp>

namespace example {

/// The runtime's limits on runtime_config::workers (runtime/config.hpp).
inline constexpr unsigned kMinWorkers = 1;
inline constexpr unsigned kMaxWorkers = 1024;

class args {
 public:
  /// `program` names the example in messages; `summary` is the first line of --help.
  args(std::string program, std::string summary) : m_program(std::move(program)), m_summary(std::move(summary)) {}

  /// A flag without a value: sets `out` to true when present.
  args& flag(std::string name, bool& out, std::string help) {
    m_options.push_back({std::move(name), "", std::move(help), [&out](std::string_view) -> std::string {
                           out = true;
                           return {};
                         }});
    return *this;
  }

  /// An integer option `name VALUE` (or `name=VALUE`) in [min, max]; `out` keeps its
  /// value when the option is absent.
  template <std::integral T>
  args& option(std::string name, T& out, T min, T max, std::string metavar, std::string help) {
    std::string what = name;
    m_options.push_back({std::move(name), std::move(metavar), std::move(help),
                         [&out, min, max, what](std::string_view v) { return parse_integer(what, v, min, max, out); }});
    return *this;
  }

  /// A string option `name VALUE`; an empty value is an error.
  args& option(std::string name, std::string& out, std::string metavar, std::string help) {
    std::string what = name;
    m_options.push_back({std::move(name), std::move(metavar), std::move(help),
                         [&out, what](std::string_view v) -> std::string {
                           if (v.empty()) {
                             return what + ": the value is empty";
                           }
                           out = std::string(v);
                           return {};
                         }});
    return *this;
  }

  /// `--port N`: 0..65535 (0: the kernel picks one).
  args& port(std::uint16_t& out) {
    return option<std::uint16_t>("--port", out, 0, 65535, "N", "TCP port, 0..65535 (0: any free port)");
  }

  /// `--workers N`: 1..1024 worker threads; `out` stays 0 (one per CPU) when absent.
  args& workers(unsigned& out) {
    return option<unsigned>("--workers", out, kMinWorkers, kMaxWorkers, "N",
                            "worker threads, 1..1024 (default: one per CPU)");
  }

  /// An optional positional integer in [min, max] (in declaration order).
  template <std::integral T>
  args& positional(std::string name, T& out, T min, T max, std::string help) {
    std::string what = name;
    m_positionals.push_back({std::move(name), std::move(help), false,
                             [&out, min, max, what](std::string_view v) { return parse_integer(what, v, min, max, out); }});
    return *this;
  }

  /// An optional positional string (in declaration order); an empty value is an error.
  args& positional(std::string name, std::string& out, std::string help, bool required = false) {
    std::string what = name;
    m_positionals.push_back({std::move(name), std::move(help), required, [&out, what](std::string_view v) -> std::string {
                               if (v.empty()) {
                                 return what + ": the value is empty";
                               }
                               out = std::string(v);
                               return {};
                             }});
    return *this;
  }

  /// Every argument after the positionals, verbatim (options included).
  args& rest(std::string name, std::vector<std::string>& out, std::string help, bool required = false) {
    m_rest = &out;
    m_rest_name = std::move(name);
    m_rest_help = std::move(help);
    m_rest_required = required;
    return *this;
  }

  /// Parses argv. Returns nullopt to go on, else the exit status for main: 0 after
  /// printing usage to stdout for --help, 2 after printing the error to stderr.
  [[nodiscard]] std::optional<int> parse(int argc, char** argv) {
    std::size_t next_positional = 0;
    bool options_done = false;
    for (int i = 1; i < argc; ++i) {
      std::string_view a = argv[i];
      bool in_rest = m_rest != nullptr && next_positional == m_positionals.size() && !m_rest->empty();
      if (in_rest) {
        m_rest->emplace_back(a);
        continue;
      }
      if (!options_done && a == "--") {
        options_done = true;
        continue;
      }
      if (!options_done && (a == "--help" || a == "-h")) {
        print_usage(stdout);
        return 0;
      }
      // "-5" where a positional is expected goes to the positional, which names the range.
      bool negative_number = a.size() > 1 && a[0] == '-' && a[1] >= '0' && a[1] <= '9';
      bool positional_next = next_positional < m_positionals.size() || m_rest != nullptr;
      if (!options_done && a.size() > 1 && a[0] == '-' && !(negative_number && positional_next)) {
        std::size_t eq = a.find('=');
        std::string_view name = a.substr(0, eq);
        const option_spec* o = find(name);
        if (o == nullptr) {
          return fail("unknown option '" + std::string(a) + "'");
        }
        std::string_view value;
        if (o->metavar.empty()) {
          if (eq != std::string_view::npos) {
            return fail(std::string(name) + " takes no value");
          }
        } else if (eq != std::string_view::npos) {
          value = a.substr(eq + 1);
        } else if (i + 1 < argc) {
          value = argv[++i];
        } else {
          return fail(std::string(name) + " needs a value (" + o->metavar + ")");
        }
        if (std::string err = o->set(value); !err.empty()) {
          return fail(err);
        }
        continue;
      }
      if (next_positional < m_positionals.size()) {
        if (std::string err = m_positionals[next_positional++].set(a); !err.empty()) {
          return fail(err);
        }
        continue;
      }
      if (m_rest != nullptr) {
        m_rest->emplace_back(a);
        options_done = true;
        continue;
      }
      return fail("unexpected argument '" + std::string(a) + "'");
    }
    for (std::size_t p = next_positional; p < m_positionals.size(); ++p) {
      if (m_positionals[p].required) {
        return fail("missing " + m_positionals[p].name);
      }
    }
    if (m_rest != nullptr && m_rest_required && m_rest->empty()) {
      return fail("missing " + m_rest_name);
    }
    return std::nullopt;
  }

  /// The usage text (what --help prints).
  void print_usage(std::FILE* to) const {
    std::fprintf(to, "%s: %s\nusage: %s", m_program.c_str(), m_summary.c_str(), m_program.c_str());
    for (const auto& o : m_options) {
      std::fprintf(to, " [%s%s%s]", o.name.c_str(), o.metavar.empty() ? "" : " ", o.metavar.c_str());
    }
    for (const auto& p : m_positionals) {
      std::fprintf(to, p.required ? " %s" : " [%s]", p.name.c_str());
    }
    if (m_rest != nullptr) {
      std::fprintf(to, m_rest_required ? " %s..." : " [%s...]", m_rest_name.c_str());
    }
    std::fprintf(to, "\n");
    for (const auto& o : m_options) {
      std::string left = o.name + (o.metavar.empty() ? "" : " " + o.metavar);
      std::fprintf(to, "  %-20s %s\n", left.c_str(), o.help.c_str());
    }
    for (const auto& p : m_positionals) {
      std::fprintf(to, "  %-20s %s\n", p.name.c_str(), p.help.c_str());
    }
    if (m_rest != nullptr) {
      std::fprintf(to, "  %-20s %s\n", (m_rest_name + "...").c_str(), m_rest_help.c_str());
    }
    std::fprintf(to, "  %-20s %s\n", "-h, --help", "print this help and exit");
  }

  /// Reports a semantic error found after parse() the same way (exit status 2).
  [[nodiscard]] int fail(const std::string& message) const {
    std::fprintf(stderr, "%s: %s\n(try '%s --help')\n", m_program.c_str(), message.c_str(), m_program.c_str());
    return 2;
  }

 private:
  using setter = std::function<std::string(std::string_view)>;  // returns an error or ""
  struct option_spec {
    std::string name;
    std::string metavar;  // empty for a flag
    std::string help;
    setter set;
  };
  struct positional_spec {
    std::string name;
    std::string help;
    bool required;
    setter set;
  };

  const option_spec* find(std::string_view name) const {
    for (const auto& o : m_options) {
      if (o.name == name) {
        return &o;
      }
    }
    return nullptr;
  }

  // The whole of `v` must be a decimal integer (an optional '-' for signed types) in
  // [min, max]; returns the error message, or "" after storing it.
  template <std::integral T>
  static std::string parse_integer(const std::string& what, std::string_view v, T min, T max, T& out) {
    auto range = [&] {
      return what + ": expected an integer in " + std::to_string(min) + ".." + std::to_string(max) + ", got '" +
             std::string(v) + "'";
    };
    long long wide = 0;  // parsed wider than T so that 99999 for a uint16_t is "out of range", not junk
    unsigned long long uwide = 0;
    const char* first = v.data();
    const char* last = v.data() + v.size();
    bool ok;
    bool negative = !v.empty() && v.front() == '-';
    if (negative) {
      auto [p, ec] = std::from_chars(first, last, wide);
      ok = ec == std::errc() && p == last;
      if (ok && (!std::is_signed_v<T> || wide < static_cast<long long>(min))) {
        return range();
      }
    } else {
      auto [p, ec] = std::from_chars(first, last, uwide);
      if (ec == std::errc::result_out_of_range) {
        return range();
      }
      ok = !v.empty() && ec == std::errc() && p == last;
      if (ok && uwide > static_cast<unsigned long long>(max)) {
        return range();
      }
    }
    if (!ok) {
      return range();
    }
    T value = negative ? static_cast<T>(wide) : static_cast<T>(uwide);
    if (value < min || value > max) {
      return range();
    }
    out = value;
    return {};
  }

  std::string m_program;
  std::string m_summary;
  std::vector<option_spec> m_options;
  std::vector<positional_spec> m_positionals;
  std::vector<std::string>* m_rest = nullptr;
  std::string m_rest_name;
  std::string m_rest_help;
  bool m_rest_required = false;
};

/// The runtime configuration for `--workers N` (0: the runtime's default).
inline corio::runtime_config with_workers(unsigned workers, corio::runtime_config config = {}) {
  if (workers != 0) {
    config.workers = workers;
  }
  return config;
}

}  // namespace example
