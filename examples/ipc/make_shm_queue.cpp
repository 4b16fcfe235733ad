// make_shm_queue: a helper of the examples' checks (not an example) that makes and feeds a
// shm_queue as another program would, so that check_shm_queue_open.sh can start a
// shm_queue consumer or producer on queues that example did not make:
//
//   make_shm_queue create NAME MAX   creates the queue NAME (capacity 16) for messages of
//                                    at most MAX bytes, and leaves the name in place
//   make_shm_queue send NAME LENGTH  sends one message of LENGTH bytes (each 0x07) into
//                                    the existing queue NAME, without waiting
//   make_shm_queue close NAME        closes the existing queue NAME
//
// It starts no runtime (each call is synchronous). Exit status 0, or 1 with a message.
#include <corio/ipc/shm_queue.hpp>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

int failed(const char* what, const char* name, std::error_code e) {
  std::fprintf(stderr, "make_shm_queue: %s %s: %s\n", what, name, e.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string verb = argc >= 3 ? argv[1] : "";
  const bool with_number = verb == "create" || verb == "send";
  if ((verb != "close" && !with_number) || argc != (with_number ? 4 : 3)) {
    std::fprintf(stderr, "usage: make_shm_queue create NAME MAX | send NAME LENGTH | close NAME\n");
    return 2;
  }
  const char* name = argv[2];
  const std::size_t number = with_number ? std::strtoull(argv[3], nullptr, 10) : 0;
  if (verb == "create") {
    auto q = corio::ipc::shm_queue::create(name, {.capacity = 16, .max_message_size = number});
    return q ? 0 : failed("create", name, q.error());
  }
  auto q = corio::ipc::shm_queue::open(name);
  if (!q) {
    return failed("open", name, q.error());
  }
  if (verb == "close") {
    q->close();
    return 0;
  }
  const std::vector<std::byte> message(number, std::byte{7});
  auto sent = q->try_send(message);
  return sent ? 0 : failed("send to", name, sent.error());
}
