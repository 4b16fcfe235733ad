// Tests for ipc/byte_stream.hpp, ipc/buffered_reader.hpp and ipc/buffered_writer.hpp:
// lines and delimiters split across reads, the line-length limit, cancellation that
// loses nothing, coalesced writes, and the same layer over sockets, pipes, child stdio
// and a stream type of the user's.
#include <catch2/catch.hpp>

#include <corio/corio.hpp>
#include <corio/ipc/ipc.hpp>

#include "helpers.hpp"

#include <corio/ipc/buffered_reader.hpp>
#include <corio/ipc/buffered_writer.hpp>
#include <corio/ipc/byte_stream.hpp>
#include <corio/ipc/process/process.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using corio::task;
using corio::ipc::buffered_reader;
using corio::ipc::buffered_writer;
using corio_test::bytes;

namespace {

/// Writes `text` to `w` in pieces of `piece` bytes, yielding between them so that the
/// reader sees many short reads.
template <class Writer>
task<bool> write_in_pieces(Writer& w, std::string text, std::size_t piece) {
  for (std::size_t at = 0; at < text.size(); at += piece) {
    auto r = co_await corio::ipc::write_all(w, bytes(std::string_view(text).substr(at, piece)));
    if (!r) {
      co_return false;
    }
    co_await corio::yield_now();
  }
  co_return true;
}

/// A stream type of the user's: records every write_some, accepts at most `limit` bytes
/// per call, and serves reads from a fixed string `chunk` bytes at a time.
struct recording_stream {
  explicit recording_stream(std::string in = {}, std::size_t read_chunk = 3, std::size_t write_limit = 1 << 20)
      : input(std::move(in)), chunk(read_chunk), limit(write_limit) {}

  std::string input;
  std::size_t chunk;
  std::size_t limit;
  std::string written;
  int writes = 0;
  int reads = 0;

  task<corio::result<std::size_t>> read_some(std::span<std::byte> buf, std::stop_token = {}) {
    ++reads;
    std::size_t n = std::min({buf.size(), chunk, input.size()});
    std::memcpy(buf.data(), input.data(), n);
    input.erase(0, n);
    co_return n;
  }
  task<corio::result<std::size_t>> write_some(std::span<const std::byte> buf, std::stop_token = {}) {
    ++writes;
    std::size_t n = std::min(buf.size(), limit);
    written.append(reinterpret_cast<const char*>(buf.data()), n);
    co_return n;
  }
};

static_assert(corio::ipc::readable_stream<corio::ipc::tcp_stream>);
static_assert(corio::ipc::writable_stream<corio::ipc::tcp_stream>);
static_assert(corio::ipc::readable_stream<corio::ipc::pipe_reader>);
static_assert(corio::ipc::writable_stream<corio::ipc::pipe_writer>);
static_assert(corio::ipc::readable_stream<corio::ipc::child_output>);
static_assert(corio::ipc::writable_stream<corio::ipc::child_stdin>);
static_assert(!corio::ipc::writable_stream<corio::ipc::pipe_reader>);
static_assert(corio::ipc::readable_stream<recording_stream>);

}  // namespace

TEST_CASE("buffered_reader: lines split across many short reads come back whole, \\r\\n stripped, then closed",
          "[ipc][buffered]") {
  corio::runtime rt(corio_test::workers(2));
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  auto body = [&]() -> task<std::vector<std::string>> {
    auto w = corio::spawn([](corio::ipc::pipe_writer w) -> task<bool> {
      bool ok = co_await write_in_pieces(w, "first\nsecond\r\n\nlast without newline", 2);
      co_return ok;  // w closes here: the reader sees end of file
    }(std::move(p->writer)));
    buffered_reader reader(p->reader, {.capacity = 4});  // smaller than a line: it must grow
    std::vector<std::string> lines;
    for (;;) {
      auto line = co_await reader.read_line();
      if (!line) {
        lines.push_back(line.error() == corio::errc::closed ? "<closed>" : line.error().message());
        break;
      }
      lines.push_back(*line);
    }
    lines.push_back(co_await w ? "<writer ok>" : "<writer failed>");
    co_return lines;
  };
  CHECK(rt.block_on(body()) ==
        std::vector<std::string>{"first", "second", "", "last without newline", "<closed>", "<writer ok>"});
}

TEST_CASE("buffered_reader: read_until finds a multi-byte delimiter that straddles two reads", "[ipc][buffered]") {
  recording_stream s("HEAD\r\n\r\nbody...\r\n\r\nrest", 5);
  corio::runtime rt(corio_test::workers(1));
  auto body = [&]() -> task<std::vector<std::string>> {
    buffered_reader reader(s, {.capacity = 8});
    std::vector<std::string> parts;
    for (int i = 0; i < 4; ++i) {
      std::string out;
      auto n = co_await reader.read_until(out, "\r\n\r\n");
      if (!n) {
        parts.push_back("error");
        break;
      }
      parts.push_back(out + "|" + std::to_string(*n));
    }
    co_return parts;
  };
  CHECK(rt.block_on(body()) == std::vector<std::string>{"HEAD\r\n\r\n|8", "body...\r\n\r\n|11", "rest|4", "|0"});
}

TEST_CASE("buffered_reader: a line longer than max_line is too_long, with memory bounded by max_line",
          "[ipc][buffered][fault]") {
  corio::runtime rt(corio_test::workers(2));
  auto pair = corio::ipc::socketpair();
  REQUIRE(pair);
  auto body = [&]() -> task<bool> {
    // 1 MiB without a newline: the reader must stop at max_line, not buffer it all.
    auto w = corio::spawn([](const corio::ipc::unix_stream& s) -> task<void> {
      std::string flood(1 << 20, 'x');
      (void)co_await s.write_all(bytes(flood));
    }(pair->first));
    buffered_reader reader(pair->second, {.capacity = 512, .max_line = 4096});
    auto line = co_await reader.read_line();
    bool ok = !line && line.error() == corio::ipc::buffered_errc::too_long &&
              line.error() == std::errc::message_size && reader.buffered().size() == 4096 &&
              reader.buffer_size() <= 4096 && !line.error().message().empty();
    // Still too long on a retry, without reading further.
    std::string out;
    auto again = co_await reader.read_until(out, '\n');
    ok = ok && !again && again.error() == corio::ipc::buffered_errc::too_long && out.empty();
    (void)pair->second.shutdown(SHUT_RDWR);  // release the writer
    co_await w;
    co_return ok;
  };
  CHECK(rt.block_on(body()));
}

TEST_CASE("buffered_reader: a line of exactly max_line bytes (newline included) is accepted", "[ipc][buffered]") {
  // Built by appending: g++ 12 at -O2 warns falsely (-Warray-bounds) on the same string
  // written as a chain of operator+ on temporaries.
  std::string input(9, 'a');
  input.append("\n").append(10, 'b').append("\n");
  recording_stream s(input, 4);
  corio::runtime rt(corio_test::workers(1));
  auto body = [&]() -> task<std::vector<std::string>> {
    buffered_reader reader(s, {.capacity = 2, .max_line = 10});
    std::vector<std::string> got;
    auto a = co_await reader.read_line();
    got.push_back(a ? *a : a.error().message());
    auto b = co_await reader.read_line();
    got.push_back(b ? *b : (b.error() == corio::ipc::buffered_errc::too_long ? "too long" : "other"));
    co_return got;
  };
  CHECK(rt.block_on(body()) == std::vector<std::string>{std::string(9, 'a'), "too long"});
}

namespace {
using pipe_buffered = buffered_reader<corio::ipc::pipe_reader>;

/// Spawns `search(reader, token)`, writes `sent` into the pipe, waits until the reader has
/// taken all of it (the search waits for more), then cancels the search and yields what
/// it returned.
template <class Search>
task<std::string> cancel_once_buffered(pipe_buffered& reader, corio::ipc::pipe_writer& w, std::string_view sent,
                                       Search search) {
  std::stop_source stop;
  auto first = corio::spawn(search(reader, stop.get_token()));
  (void)co_await w.write_all(bytes(sent));
  while (reader.buffered().size() < sent.size()) {
    co_await corio::yield_now();
  }
  stop.request_stop();
  co_return co_await first;
}
}  // namespace

TEST_CASE("buffered_reader: a cancelled read_line loses none of the bytes it had read", "[ipc][buffered][cancel]") {
  corio::runtime rt(corio_test::workers(1));  // one worker: the tasks share the reader safely
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  auto body = [&]() -> task<std::string> {
    buffered_reader reader(p->reader);
    auto search = [](pipe_buffered& r, std::stop_token t) -> task<std::string> {
      auto line = co_await r.read_line(t);
      co_return line ? "line " + *line : line.error() == std::errc::operation_canceled ? "cancelled" : "other";
    };
    std::string outcome = co_await cancel_once_buffered(reader, p->writer, "hel", search);
    (void)co_await p->writer.write_all(bytes("lo\n"));
    auto line = co_await reader.read_line();
    co_return outcome + ", then " + (line ? *line : line.error().message());
  };
  CHECK(rt.block_on(body()) == "cancelled, then hello");
}

TEST_CASE("buffered_reader: after a cancelled read_until, a search for another delimiter still sees every byte",
          "[ipc][buffered][cancel]") {
  // The cancelled search had noted how far it found no "\r\n\r\n"; the next search, for
  // "\n", used to start there and skip the "\n" before it, merging two lines.
  corio::runtime rt(corio_test::workers(1));  // one worker: the tasks share the reader safely
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  auto body = [&]() -> task<std::string> {
    buffered_reader reader(p->reader);
    auto search = [](pipe_buffered& r, std::stop_token t) -> task<std::string> {
      std::string out;
      auto n = co_await r.read_until(out, "\r\n\r\n", t);
      co_return n ? "found " + out : n.error() == std::errc::operation_canceled ? "cancelled" : "other";
    };
    std::string outcome = co_await cancel_once_buffered(reader, p->writer, "ab\ncdefgh", search);
    (void)co_await p->writer.write_all(bytes("ij\n"));
    p->writer.close();  // no wait for more: the second line is there or the stream ends
    auto line = co_await reader.read_line();
    auto next = co_await reader.read_line();
    co_return outcome + ", then " + (line ? *line : line.error().message()) + ", " +
              (next ? *next : next.error().message());
  };
  CHECK(rt.block_on(body()) == "cancelled, then ab, cdefghij");
}

TEST_CASE("buffered_reader: read_exact and read_some after a line take the buffered bytes first", "[ipc][buffered]") {
  corio::runtime rt(corio_test::workers(2));
  auto pair = corio::ipc::socketpair();
  REQUIRE(pair);
  auto body = [&]() -> task<bool> {
    std::string big(100000, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) {
      big[i] = static_cast<char>('a' + i % 26);
    }
    std::string message = "SIZE 100000\n" + big + "0123456789";
    auto w = corio::spawn([](const corio::ipc::unix_stream& s, std::string m) -> task<bool> {
      bool ok = static_cast<bool>(co_await s.write_all(bytes(m)));
      (void)s.shutdown(SHUT_WR);
      co_return ok;
    }(pair->first, message));
    buffered_reader reader(pair->second, {.capacity = 1024});
    auto header = co_await reader.read_line();
    std::string payload(100000, '\0');  // larger than the buffer: read partly directly
    auto got = co_await reader.read_exact(corio_test::wbytes(payload));
    std::string small(4, '\0');  // smaller than the buffer: read ahead, then copied
    auto got_small = co_await reader.read_exact(corio_test::wbytes(small));
    std::string rest(100, '\0');
    auto n = co_await reader.read_some(corio_test::wbytes(rest));
    std::string past(10, '\0');
    auto closed = co_await reader.read_exact(corio_test::wbytes(past));
    co_return header && *header == "SIZE 100000" && got && payload == big && got_small && small == "0123" && n &&
        rest.substr(0, *n) == "456789" && !closed && closed.error() == corio::errc::closed && co_await w;
  };
  CHECK(rt.block_on(body()));
}

TEST_CASE("buffered_writer: small writes reach the stream as a few large ones, in order", "[ipc][buffered]") {
  recording_stream s("", 3, 1000);  // short writes too: flush must loop
  corio::runtime rt(corio_test::workers(1));
  std::string expected;
  auto body = [&]() -> task<bool> {
    buffered_writer writer(s, 4096);
    for (int i = 0; i < 1000; ++i) {
      std::string piece = "line " + std::to_string(i) + "\n";
      expected += piece;
      if (!co_await writer.write(piece)) {
        co_return false;
      }
    }
    bool pending_before = writer.pending() > 0;
    co_return pending_before && co_await writer.flush() && writer.pending() == 0;
  };
  CHECK(rt.block_on(body()));
  CHECK(s.written == expected);
  // 8,890 bytes through a 4 KiB buffer in three flushes of at most 1,000 bytes per
  // write_some: at most 9 + 3 calls, not one per line.
  CHECK(s.writes <= 12);
}

TEST_CASE("buffered_writer: a write larger than the buffer goes straight to the stream after what is pending",
          "[ipc][buffered]") {
  recording_stream s;
  corio::runtime rt(corio_test::workers(1));
  auto body = [&]() -> task<bool> {
    buffered_writer writer(s, 16);
    bool ok = co_await writer.write("abc") && s.writes == 0;
    ok = ok && co_await writer.write(std::string(100, 'z')) && s.writes == 2 && writer.pending() == 0;
    co_return ok;
  };
  CHECK(rt.block_on(body()));
  CHECK(s.written == "abc" + std::string(100, 'z'));
}

TEST_CASE("buffered_writer: a flush cut short by a timeout keeps the unsent bytes, and the next flush sends them once",
          "[ipc][buffered][cancel]") {
  corio::runtime rt(corio_test::workers(2));
  auto p = corio::ipc::pipe();
  REQUIRE(p);
  auto body = [&]() -> task<bool> {
    std::string data(300000, '\0');  // more than the 64 KiB pipe holds
    for (std::size_t i = 0; i < data.size(); ++i) {
      data[i] = static_cast<char>(i % 251);
    }
    buffered_writer writer(p->writer, 1 << 20);
    writer.append(data);
    auto first = co_await corio::timeout(writer.flush(), 50ms);
    std::size_t left = writer.pending();
    bool stalled = !first && first.error() == std::errc::timed_out && left > 0 && left < data.size();
    auto reader = corio::spawn([](corio::ipc::pipe_reader& r, std::size_t n) -> task<std::string> {
      std::string got(n, '\0');
      auto ok = co_await corio::ipc::read_exact(r, corio_test::wbytes(got));
      co_return ok ? got : std::string();
    }(p->reader, data.size()));
    auto second = co_await writer.flush();
    co_return stalled && second && writer.pending() == 0 && co_await reader == data;
  };
  CHECK(rt.block_on(body()));
}

TEST_CASE("byte streams: lines through a child's stdin and stdout with the same reader and writer", "[ipc][buffered]") {
  corio::runtime rt(corio_test::workers(2));
  auto body = [&]() -> task<std::vector<std::string>> {
    auto c = corio::ipc::command("cat")
                 .stdin_mode(corio::ipc::stdio::piped())
                 .stdout_mode(corio::ipc::stdio::piped())
                 .spawn();
    if (!c) {
      co_return std::vector<std::string>{"spawn failed"};
    }
    buffered_writer writer(*c->stdin_pipe());
    buffered_reader reader(*c->stdout_pipe());
    std::vector<std::string> got;
    for (int i = 0; i < 3; ++i) {
      (void)co_await writer.write("echo " + std::to_string(i) + "\n");
      (void)co_await writer.flush();
      auto line = co_await reader.read_line();
      got.push_back(line ? *line : line.error().message());
    }
    c->stdin_pipe()->close();
    auto end = co_await reader.read_line();
    got.push_back(!end && end.error() == corio::errc::closed ? "<closed>" : "<more?>");
    (void)co_await c->wait();
    co_return got;
  };
  CHECK(rt.block_on(body()) == std::vector<std::string>{"echo 0", "echo 1", "echo 2", "<closed>"});
}

TEST_CASE("byte streams: read_exact and write_all work on any stream and report an early end as closed",
          "[ipc][buffered]") {
  corio::runtime rt(corio_test::workers(1));
  recording_stream s("abcdefg", 2, 3);
  auto body = [&]() -> task<bool> {
    std::string four(4, '\0');
    auto a = co_await corio::ipc::read_exact(s, corio_test::wbytes(four));
    std::string five(5, '\0');
    auto b = co_await corio::ipc::read_exact(s, corio_test::wbytes(five));
    auto c = co_await corio::ipc::write_all(s, bytes("0123456789"));
    co_return a && four == "abcd" && !b && b.error() == corio::errc::closed && five.substr(0, 3) == "efg" && c &&
        s.written == "0123456789" && s.writes == 4;
  };
  CHECK(rt.block_on(body()));
}
