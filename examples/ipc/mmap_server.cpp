// mmap_server: the tutorial's memory-mapped image, server side. It makes a file of one
// 327 x 154 RGB image (the tutorial's size), maps it read-write with memory_map, starts
// mmap_client (from its own directory, or --client PATH) and, for each frame, draws an
// image straight into the mapping, flushes it to the file (msync, on the blocking pool,
// like the tutorial's mm.flush()) and tells the client "frame N CHECKSUM" on the client's
// stdin. The client maps the same file read-only, checks the image it sees against the
// checksum and answers on its stdout; only then is the next frame drawn, so the client
// never reads a half-drawn image.
// The hand-shake is a pipe (the client's stdin and stdout): a write to a pipe happens
// after the writes to the shared pages before it, and the reader's read after it, so the
// client sees the whole frame. (A process-shared event placed in the mapping could replace
// the pipe; corio has none yet.) No pixels travel through the pipe.
//
//   mmap_server [--frames N] [--file PATH] [--client PATH] [--save PPM]
//     --frames  frames to share (default 3, 1..1000)
//     --file    the mapped file, created or TRUNCATED (its contents are lost); default: a
//               new file of a random name (mkstemp) in $TMPDIR or /tmp, removed at the end
//     --client  the client program (default: mmap_client next to this program)
//     --save    the client writes the last frame it saw there, as a PPM image
#include "../common/args.hpp"
#include "../common/main_guard.hpp"

#include <corio/corio.hpp>
#include <corio/ipc/memory_map.hpp>
#include <corio/ipc/process/process.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mmap_image.hpp"

namespace {

struct options {
  int frames = 3;
  std::string file;
  std::string client;
  std::string save;
};

/// Removes the file it names when it goes, however its scope ends: also when the runtime
/// cannot start (corio::run throws); an empty name removes nothing.
struct file_remover {
  std::string path;
  ~file_remover() {
    if (!path.empty()) {
      ::unlink(path.c_str());
    }
  }
};

/// The directory of this program (for the client next to it).
std::string own_directory() {
  std::vector<char> path(4096);
  const ssize_t n = ::readlink("/proc/self/exe", path.data(), path.size() - 1);
  if (n <= 0) {
    return ".";
  }
  std::string p(path.data(), static_cast<std::size_t>(n));
  return p.substr(0, p.rfind('/'));
}

/// Draws frame `frame`: a colour gradient with a white square that moves along it.
void draw(std::span<std::byte> image, int frame) {
  using namespace mmap_image;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      std::byte* px = &image[(static_cast<std::size_t>(y) * width + static_cast<std::size_t>(x)) * channels];
      const bool in_square = x >= 20 + frame * 30 && x < 60 + frame * 30 && y >= 57 && y < 97;
      px[0] = static_cast<std::byte>(in_square ? 255 : (x * 255) / width);          // blue (BGR, like cv2)
      px[1] = static_cast<std::byte>(in_square ? 255 : (y * 255) / height);         // green
      px[2] = static_cast<std::byte>(in_square ? 255 : ((x + y + frame * 16) & 255));  // red
    }
  }
}

/// Reads one line (without its '\n') from the client's stdout; empty at end-of-file.
corio::task<std::string> read_line(corio::ipc::child_output& out, std::string& pending) {
  for (;;) {
    if (auto nl = pending.find('\n'); nl != std::string::npos) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      co_return line;
    }
    char chunk[256];
    auto n = co_await out.read(std::as_writable_bytes(std::span(chunk)));
    if (!n || *n == 0) {
      co_return std::string{};
    }
    pending.append(chunk, *n);
  }
}

// `fd`: the file, open read-write (serve closes it).
corio::task<int> serve(options opt, int fd) {
  // The tutorial's os.truncate, then mmap.
  if (::ftruncate(fd, static_cast<off_t>(mmap_image::size)) != 0) {
    std::perror(opt.file.c_str());
    ::close(fd);
    co_return 1;
  }
  auto map = corio::ipc::memory_map::map(fd, mmap_image::size, corio::ipc::map_access::read_write);
  ::close(fd);  // the mapping keeps the file
  if (!map) {
    std::fprintf(stderr, "map %s: %s\n", opt.file.c_str(), map.error().message().c_str());
    co_return 1;
  }
  corio::ipc::command cmd(opt.client);
  cmd.arg(opt.file).stdin_mode(corio::ipc::stdio::piped()).stdout_mode(corio::ipc::stdio::piped());
  if (!opt.save.empty()) {
    cmd.arg(opt.save);
  }
  auto client = cmd.spawn();
  if (!client) {
    std::fprintf(stderr, "start %s: %s\n", opt.client.c_str(), client.error().message().c_str());
    co_return 1;
  }
  std::printf("server %d: %s mapped (%dx%dx%d bytes), client %d started\n", ::getpid(), opt.file.c_str(),
              mmap_image::width, mmap_image::height, mmap_image::channels, client->id());
  int confirmed = 0;
  std::string pending;
  for (int frame = 0; frame < opt.frames; ++frame) {
    draw(map->bytes(), frame);
    if (auto flushed = co_await map->flush(); !flushed) {
      std::fprintf(stderr, "flush: %s\n", flushed.error().message().c_str());
      break;
    }
    const std::uint64_t sum = mmap_image::checksum(map->bytes());
    const std::string note = "frame " + std::to_string(frame) + " " + std::to_string(sum) + "\n";
    if (!co_await client->stdin_pipe()->write_all(std::as_bytes(std::span(note.data(), note.size())))) {
      break;
    }
    const std::string answer = co_await read_line(*client->stdout_pipe(), pending);
    std::printf("server: %s\n", answer.empty() ? "(client gone)" : answer.c_str());
    if (answer != "frame " + std::to_string(frame) + " ok") {
      break;
    }
    ++confirmed;
  }
  client->stdin_pipe()->close();  // end-of-file: the client exits
  auto status = co_await client->wait();
  const bool ok = confirmed == opt.frames && status && status->success();
  std::printf("%d of %d frames seen whole by the client; client %s\n", confirmed, opt.frames,
              status && status->success() ? "exited 0" : "failed");
  co_return ok ? 0 : 1;
}

int example_main(int argc, char** argv) {
  options opt;
  example::args args("mmap_server", "shares an image with mmap_client through a memory-mapped file");
  args.option<int>("--frames", opt.frames, 1, 1000, "N", "frames to share, 1..1000 (default 3)");
  args.option("--file", opt.file, "PATH",
              "the mapped file, created or truncated: its contents are lost (default: a new file "
              "of a random name in $TMPDIR or /tmp, removed at the end)");
  args.option("--client", opt.client, "PATH", "the client program (default: mmap_client next to this program)");
  args.option("--save", opt.save, "PPM", "the client writes the last frame it saw there, as a PPM image");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  const bool own_file = opt.file.empty();
  int fd = -1;
  file_remover made;  // the file we made (not a --file), removed at the end
  if (own_file) {
    // A name nobody can guess, made with O_EXCL (mkstemp): a predictable one in a shared
    // directory could be a symlink planted there, and opening it would truncate its target.
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/corio-mmap-XXXXXX";
    fd = ::mkostemp(pattern.data(), O_CLOEXEC);
    if (fd < 0) {
      std::perror(pattern.c_str());
      return 1;
    }
    opt.file = made.path = pattern;  // mmap_client gets this path as its FILE
  } else {
    // The tutorial's os.open(O_CREAT | O_TRUNC | O_RDWR): --file is the caller's choice.
    fd = ::open(opt.file.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
      std::perror(opt.file.c_str());
      return 1;
    }
  }
  if (opt.client.empty()) {
    opt.client = own_directory() + "/mmap_client";
  }
  return corio::run(serve(opt, fd));
}

}  // namespace

int main(int argc, char** argv) { return example::main_guard("mmap_server", example_main, argc, argv); }
