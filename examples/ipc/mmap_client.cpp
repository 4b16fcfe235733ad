// mmap_client: the tutorial's memory-mapped image, client side (started by mmap_server,
// or by hand). It maps the server's file read-only and, for every line "frame N CHECKSUM"
// on its stdin, reads the image straight from the mapping (no copy through the pipe),
// checks it against the checksum and answers "frame N ok" (or "frame N bad") on stdout.
// At end-of-file it writes the last frame as a PPM image if asked, and exits. The
// tutorial's cv2.imshow becomes that PPM (any image viewer opens it).
// A plain program without a runtime: it only blocks in its own reads, as the tutorial's
// client does.
//
//   mmap_client FILE [SAVE.ppm]
#include "../common/args.hpp"

#include <corio/ipc/memory_map.hpp>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "mmap_image.hpp"

namespace {

/// Writes the BGR image as a binary PPM (RGB).
bool save_ppm(const std::string& path, std::span<const std::byte> bgr) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    return false;
  }
  std::fprintf(f, "P6\n%d %d\n255\n", mmap_image::width, mmap_image::height);
  for (std::size_t i = 0; i + 2 < bgr.size(); i += 3) {
    const unsigned char rgb[3] = {static_cast<unsigned char>(bgr[i + 2]), static_cast<unsigned char>(bgr[i + 1]),
                                  static_cast<unsigned char>(bgr[i])};
    std::fwrite(rgb, 1, 3, f);
  }
  return std::fclose(f) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string file, save;
  example::args args("mmap_client", "reads the image mmap_server shares through a memory-mapped file");
  args.positional("FILE", file, "the file mmap_server maps", true);
  args.positional("SAVE.ppm", save, "write the last frame seen there, as a PPM image");
  if (auto rc = args.parse(argc, argv)) {
    return *rc;
  }
  auto map = corio::ipc::memory_map::map_file(file, corio::ipc::map_access::read_only);
  if (!map) {
    std::fprintf(stderr, "mmap_client: map %s: %s\n", file.c_str(), map.error().message().c_str());
    return 1;
  }
  if (map->size() != mmap_image::size) {
    std::fprintf(stderr, "mmap_client: %s holds %zu bytes, not one %dx%d image\n", file.c_str(), map->size(),
                 mmap_image::width, mmap_image::height);
    return 1;
  }
  int frame = -1, bad = 0;
  std::uint64_t expected = 0;
  while (std::scanf(" frame %d %" SCNu64, &frame, &expected) == 2) {
    const bool whole = mmap_image::checksum(map->bytes()) == expected;
    bad += whole ? 0 : 1;
    std::printf("frame %d %s\n", frame, whole ? "ok" : "bad");
    std::fflush(stdout);  // the server waits for this line
  }
  if (!save.empty() && frame >= 0 && !save_ppm(save, map->bytes())) {
    std::perror(save.c_str());
    return 1;
  }
  return bad == 0 ? 0 : 1;
}
