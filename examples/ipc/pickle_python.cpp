// pickle_python: corio and Python exchanging pickles, the payload of multiprocessing's
// connections and managers (ipc/pickle.hpp).
//
//   pickle_python [--python PROGRAM]      default: python3
//
// corio pickles a manager-style request (id, method, args, kwds); a Python child unpickles
// it with pickle.loads and answers with three pickles of its own: a '#RETURN' with a
// dict, an '#ERROR' carrying queue.Empty() (what a manager sends when get() finds the
// queue empty), and the function os.system itself, which corio's reader refuses by name
// without importing or running anything. The request travels as hex on Python's command
// line; each answer comes back as one hex line on its stdout.
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/pickle.hpp>
#include <corio/ipc/process/process.hpp>

#include <cstdio>
#include <string>
#include <vector>

namespace pk = corio::ipc::pickle;

namespace {

constexpr const char* python_side = R"(
import os, pickle, queue, sys
request = pickle.loads(bytes.fromhex(sys.argv[1]))
print("python: got", repr(request), file=sys.stderr)
ident, method, args, kwds = request
replies = [
    ("#RETURN", {"method": method, "sum": sum(args), "big": 2**100, "raw": b"\x00\xff", "kwds": kwds}),
    ("#ERROR", queue.Empty()),
    os.system,
]
for reply in replies:
    print(pickle.dumps(reply).hex())
)";

std::string to_hex(const std::vector<std::byte>& b) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::byte x : b) {
    out += digits[static_cast<unsigned>(x) >> 4];
    out += digits[static_cast<unsigned>(x) & 15];
  }
  return out;
}

std::string from_hex(std::string_view hex) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1]));
  }
  return out;
}

corio::task<int> talk(std::string python) {
  pk::value request = pk::value::tuple_of("7f00", "add", pk::value::tuple_of(1, 2, 3),
                                          pk::value::make_dict({{"verbose", true}}));
  auto bytes = pk::dumps(request);
  if (!bytes) {
    std::fprintf(stderr, "dumps: %s\n", bytes.error().message().c_str());
    co_return 1;
  }
  std::printf("corio: sending %s (%zu bytes)\n", request.repr().c_str(), bytes->size());

  corio::ipc::command cmd(python);
  cmd.args({"-c", python_side, to_hex(*bytes)});
  auto out = co_await cmd.output();
  if (!out || !out->status.success()) {
    std::fprintf(stderr, "%s: %s\n", python.c_str(),
                 out ? (out->status.to_string() + "\n" + out->err).c_str() : out.error().message().c_str());
    co_return 1;
  }
  std::printf("%s", out->err.c_str());

  std::vector<std::string> lines;
  for (std::size_t at = 0, nl; (nl = out->out.find('\n', at)) != std::string::npos; at = nl + 1) {
    lines.push_back(out->out.substr(at, nl - at));
  }
  if (lines.size() != 3) {
    std::fprintf(stderr, "expected 3 replies, got %zu\n", lines.size());
    co_return 1;
  }
  pk::reader reader;  // reused across messages, as a connection would
  int failures = 0;

  // 1. ('#RETURN', {...}): typed access to the fields.
  auto ret = reader.load(from_hex(lines[0]));
  if (!ret) {
    std::fprintf(stderr, "reply 1: %s\n", reader.error_message().c_str());
    co_return 1;
  }
  std::printf("corio: reply 1 %s\n", ret->repr().c_str());
  auto fields = ret->as<std::tuple<std::string, pk::value>>();
  const pk::value* sum = fields ? std::get<1>(*fields).get("sum") : nullptr;
  const pk::value* big = fields ? std::get<1>(*fields).get("big") : nullptr;
  if (!fields || std::get<0>(*fields) != "#RETURN" || !sum || sum->as<int>() != 6 || !big ||
      !big->if_big_int() || big->if_big_int()->to_string() != "1267650600228229401496703205376") {
    std::fprintf(stderr, "reply 1 is not the expected ('#RETURN', {... 'sum': 6, 'big': 2**100 ...})\n");
    ++failures;
  }

  // 2. ('#ERROR', queue.Empty()): an exception as data.
  auto err = reader.load(from_hex(lines[1]));
  const pk::object* exc = err && err->at(1) ? err->at(1)->if_object() : nullptr;
  if (exc && (exc->is("_queue", "Empty") || exc->is("queue", "Empty"))) {
    std::printf("corio: reply 2 %s: Python raised queue.Empty\n", err->repr().c_str());
  } else {
    std::fprintf(stderr, "reply 2 is not ('#ERROR', queue.Empty())\n");
    ++failures;
  }

  // 3. os.system: refused by name, nothing imported or called.
  auto bad = reader.load(from_hex(lines[2]));
  if (!bad && bad.error() == pk::errc::forbidden_class) {
    std::printf("corio: reply 3 refused: %s\n", reader.error_message().c_str());
  } else {
    std::fprintf(stderr, "reply 3 (os.system) was not refused\n");
    ++failures;
  }
  co_return failures == 0 ? 0 : 1;
}

int example_main(int argc, char** argv) {
  std::string python = "python3";
  example::args args("pickle_python", "exchange pickles with a Python child: a request, a reply, an exception, and a "
                                      "refused global");
  args.option("--python", python, "PROGRAM", "the Python 3 to run (default: python3)");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  return corio::run(talk(std::move(python)));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("pickle_python", example_main, argc, argv); }
