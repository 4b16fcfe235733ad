// corio::ipc::shm_queue: create, open and close a queue in shared memory (a queue is built
// under its object's flock, so that open() can tell a build in progress from a dead
// builder), and what can be read of it without a side's lock (capacity, size, closed).
// The layout is in detail/shm_queue_layout.hpp; sending, receiving, the two sides' protocols and their
// recovery after a death are in shm_queue_steps.cpp and shm_queue_transfer.cpp.
#include <corio/ipc/shm_queue.hpp>

#include <sys/file.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <new>
#include <type_traits>

#include <corio/ipc/detail/posix_name.hpp>
#include <corio/ipc/detail/shm_queue_layout.hpp>
#include <corio/ipc/detail/shm_queue_steps.hpp>
#include <corio/ipc/owned_fd.hpp>

namespace corio::ipc {

namespace {

using namespace detail::shm;

/// A header field that a peer may be writing while we read it, read exactly once (no
/// torn value, and no second load that could differ from what was checked).
template <class T>
T read_once(T& field) noexcept {
  return std::atomic_ref<T>(field).load(std::memory_order_relaxed);
}

/// The layout word of a queue that create() is still building ("Building" in
/// shm_queue.hpp): the queue's word with bit 7 set, which no layout word of any
/// shared_type has (their low byte is the layout version, under 0x80).
constexpr std::uint32_t building_word = detail::queue_layout_word | 0x80u;

}  // namespace

// ---- create / open ----

result<shm_queue> shm_queue::create(std::string_view name, const shm_queue_options& options) {
  if (!detail::valid_posix_ipc_name(name) || options.capacity == 0 || options.capacity > max_capacity ||
      options.max_message_size == 0 || options.max_message_size > max_size) {
    return unexpected(error(std::errc::invalid_argument));
  }
  const std::size_t stride = (slot_header + options.max_message_size + 63) / 64 * 64;
  const std::size_t slots_offset = (sizeof(queue_header) + 63) / 64 * 64;
  if (stride > (SIZE_MAX - slots_offset) / options.capacity) {
    return unexpected(error(std::errc::invalid_argument));
  }
  const std::size_t total = slots_offset + stride * options.capacity;
  // The object's sizing flock stays ours (in `building`) until the queue is published,
  // and its layout word reads building_word from the moment it has any size: an opener
  // that finds that word with the lock free knows that we died ("Building" in the
  // header).
  owned_fd building;
  auto memory = shared_memory::create_building(name, total, options.mode, building_word, building);
  if (!memory) {
    if (memory.error() == std::errc::file_exists && !options.exclusive) {
      return open(name);
    }
    return unexpected(memory.error());
  }
  // Not constructed with placement new: that would set the layout word to 0 for a moment,
  // and an opener reading 0 concludes "not a queue". The new object is zero-filled but for
  // that word, which is every other field's initial value (queue_header is an aggregate
  // whose members all start at 0: an implicit-lifetime type), so the header is taken as
  // it lies, as open() takes it; only the geometry and the locks are written.
  static_assert(std::is_aggregate_v<queue_header>);
  auto* h = std::launder(reinterpret_cast<queue_header*>(memory->bytes().data()));
  h->capacity = static_cast<std::uint32_t>(options.capacity);
  h->max_message = static_cast<std::uint32_t>(options.max_message_size);
  h->slot_stride = static_cast<std::uint32_t>(stride);
  h->total_size = total;
  h->slots_offset = slots_offset;
  auto bytes = memory->bytes();
  if (!process_mutex::construct(bytes, offsetof(queue_header, send_lock)) ||
      !process_mutex::construct(bytes, offsetof(queue_header, receive_lock))) {
    (void)shared_memory::remove(name);
    return unexpected(error(std::errc::invalid_argument));
  }
  detail::shm::test_hook(detail::queue_step::before_create_publish);
  // release: an opener that reads the word (acquire, in adopt) sees the whole header.
  h->magic.store(detail::queue_layout_word, std::memory_order_release);
  // The lock: openers now find the queue (the word's release store first). Dropped, not
  // only closed: a flock belongs to the open file description, which our mapping keeps.
  (void)::flock(building.fd(), LOCK_UN);
  building.close();
  auto q = adopt(std::move(*memory));
  if (!q) {
    (void)shared_memory::remove(name);
  }
  return q;
}

result<shm_queue> shm_queue::open(std::string_view name) {
  if (!detail::valid_posix_ipc_name(name)) {
    return unexpected(error(std::errc::invalid_argument));
  }
  // An empty object, or one whose layout word is still building_word, is "try again"
  // while its creator is at work and owner_dead once it is dead (shared_memory).
  auto memory = shared_memory::open_building(name, building_word);
  if (!memory) {
    return unexpected(memory.error());
  }
  return adopt(std::move(*memory));
}

result<void> shm_queue::remove(std::string_view name) { return shared_memory::remove(name); }

result<shm_queue> shm_queue::adopt(shared_memory memory) {
  auto bytes = memory.bytes();
  if (bytes.size() < sizeof(queue_header)) {
    return unexpected(error(std::errc::wrong_protocol_type));  // too small to be a queue
  }
  auto at = detail::locate<queue_header>(bytes, 0);
  if (!at) {
    return unexpected(error(std::errc::wrong_protocol_type));
  }
  auto* q = std::launder(static_cast<queue_header*>(*at));
  // acquire: pairs with create()'s release store of the word: the header it built is
  // visible. Not this version's word: another version's queue (queue_layout_version), or
  // an object that never held a queue. A zero word is not a queue being built (a
  // builder's word is building_word from the start, open_building answered for it): zeros
  // from shared_memory::create, Python's SharedMemory, or another program.
  if (q->magic.load(std::memory_order_acquire) != detail::queue_layout_word) {
    return unexpected(error(std::errc::wrong_protocol_type));
  }
  // Garbage that happens to carry our layout word, or a peer that rewrote the geometry,
  // must not send us past the mapping. Each field is read once (a peer may change it
  // while we check), and every bound is checked without overflow: each term is bounded
  // before it is added or multiplied, so no sum can wrap around 2^64 and pass (a
  // slots_offset of 2^64 - 64 with a total_size of 64 did, putting slot 0 before the
  // mapping).
  const std::uint64_t size = bytes.size();
  const std::uint64_t capacity = read_once(q->capacity);
  const std::uint64_t max_message = read_once(q->max_message);
  const std::uint64_t stride = read_once(q->slot_stride);
  const std::uint64_t slots_offset = read_once(q->slots_offset);
  const std::uint64_t total = read_once(q->total_size);
  if (capacity == 0 || capacity > max_capacity || max_message == 0 || max_message > max_size ||
      stride < slot_header + max_message ||                     // max_message <= 2^30: no wrap
      slots_offset < sizeof(queue_header) || slots_offset > size ||
      stride * capacity > size - slots_offset ||                // both < 2^32: the product fits
      total != slots_offset + stride * capacity) {              // both terms <= size: no wrap
    return unexpected(error(std::errc::wrong_protocol_type));
  }
  auto send_lock = process_mutex::attach(bytes, offsetof(queue_header, send_lock));
  auto receive_lock = process_mutex::attach(bytes, offsetof(queue_header, receive_lock));
  if (!send_lock || !receive_lock) {
    return unexpected(error(std::errc::wrong_protocol_type));
  }
  // The handle keeps what was checked: the send and receive paths never read the
  // header's geometry again (queue_geometry; "Trust" in shm_queue.hpp).
  const detail::queue_geometry geometry{bytes.data() + slots_offset, static_cast<std::uint32_t>(capacity),
                                        static_cast<std::uint32_t>(max_message),
                                        static_cast<std::uint32_t>(stride)};
  return shm_queue(std::move(memory), q, geometry, *send_lock, *receive_lock);
}

std::size_t shm_queue::capacity() const noexcept { return m_geometry.capacity; }
std::size_t shm_queue::max_message_size() const noexcept { return m_geometry.max_message; }

std::size_t shm_queue::size() const noexcept {
  // The consumed word first: read the other way round, consumers could take messages
  // published after our look at the published word before we looked at theirs, and the
  // difference went below zero (about 2^30 once masked). acquire: pairs with the
  // consumers' release in advance(), which came after their look at the published word
  // saw at least this count, so our look below sees at least as much (no negative
  // difference). Producers may publish more meanwhile: clamped to the capacity (and a
  // peer's garbage stays within it too).
  const std::uint32_t consumed = m_header->consumed.load(std::memory_order_acquire);
  const std::uint32_t published = m_header->published.load(std::memory_order_relaxed);
  const std::uint32_t queued = (count_of(published) - count_of(consumed)) & count_mask;
  return queued < m_geometry.capacity ? queued : m_geometry.capacity;
}

bool shm_queue::is_closed() const noexcept {
  return (m_header->published.load(std::memory_order_relaxed) & closed_bit) != 0;
}

void shm_queue::close() const noexcept {
  detail::futex_wake_op(m_header->published, detail::word_op::bit_or, closed_bit, INT_MAX);
  detail::futex_wake_op(m_header->consumed, detail::word_op::bit_or, closed_bit, INT_MAX);
}
}  // namespace corio::ipc
