// The keyed hash of pickle str/bytes keys (detail/pickle_hash.hpp): SipHash-1-3 through
// OpenSSL's EVP_MAC under one per-process key. Each thread hashes with a context of its
// own (a copy of the process's, made on its first hash); a thread that has none (its
// copy failed, or its thread-locals are being destroyed) uses the process's context under
// a lock. Every thread therefore hashes a key alike — a dict built on one worker is
// searched on another — and when this OpenSSL has no SipHash at all, every thread falls
// back to the same seeded std::hash (consistent, but not collision-proof).
#include <corio/ipc/detail/pickle_hash.hpp>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>

namespace corio::ipc::pickle::detail {

namespace {

/// The process's SipHash key: 16 random bytes, made on first use.
const std::array<unsigned char, 16>& siphash_key() noexcept {
  static const std::array<unsigned char, 16> key = [] {
    std::array<unsigned char, 16> k{};
    std::uint64_t a = hash_seed();
    std::uint64_t b = 0;
    if (::getrandom(&b, sizeof b, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof b)) {
      b = mix(a ^ 0x9e3779b97f4a7c15ULL);
    }
    std::memcpy(k.data(), &a, sizeof a);
    std::memcpy(k.data() + sizeof a, &b, sizeof b);
    return k;
  }();
  return key;
}

/// The 64-bit SipHash-1-3 of `s` with `ctx`. The key is passed on every init: OpenSSL
/// before 3.0.3 did not reset the state on an init without one.
bool siphash(EVP_MAC_CTX* ctx, std::string_view s, std::uint64_t& out) noexcept {
  const auto& key = siphash_key();
  unsigned char digest[8];
  std::size_t length = 0;
  if (EVP_MAC_init(ctx, key.data(), key.size(), nullptr) != 1 ||
      EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(s.data()), s.size()) != 1 ||
      EVP_MAC_final(ctx, digest, &length, sizeof digest) != 1 || length != sizeof digest) {
    return false;
  }
  std::memcpy(&out, digest, sizeof out);
  return true;
}

/// The process's context (null when this OpenSSL has no SipHash) and its lock. Never
/// destroyed: threads may hash while the program exits.
struct process_hasher {
  std::mutex mutex;
  EVP_MAC_CTX* ctx = nullptr;
};

process_hasher& process() noexcept {
  static process_hasher* p = [] {
    auto* made = new process_hasher();
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
    if (mac == nullptr) {
      return made;
    }
    made->ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);  // the context holds its own reference
    unsigned int size = 8;
    unsigned int c_rounds = 1;
    unsigned int d_rounds = 3;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_SIZE, &size),
                           OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_C_ROUNDS, &c_rounds),
                           OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_D_ROUNDS, &d_rounds), OSSL_PARAM_construct_end()};
    const auto& key = siphash_key();
    if (made->ctx != nullptr && EVP_MAC_init(made->ctx, key.data(), key.size(), params) != 1) {
      EVP_MAC_CTX_free(made->ctx);
      made->ctx = nullptr;
    }
    return made;
  }();
  return *p;
}

/// A thread's own copy of the process's context: a plain pointer (readable at any point
/// of the thread's exit) and an owner that frees it when the thread ends.
thread_local EVP_MAC_CTX* tl_ctx = nullptr;
thread_local bool tl_ended = false;
struct thread_ctx_owner {
  ~thread_ctx_owner() {
    EVP_MAC_CTX_free(tl_ctx);
    tl_ctx = nullptr;
    tl_ended = true;
  }
};
thread_local thread_ctx_owner tl_owner;

EVP_MAC_CTX* thread_ctx(process_hasher& p) noexcept {
  if (tl_ctx == nullptr && !tl_ended) {
    (void)&tl_owner;  // registers its destructor
    std::lock_guard lock(p.mutex);
    tl_ctx = EVP_MAC_CTX_dup(p.ctx);  // null when out of memory: the shared one serves
  }
  return tl_ctx;
}

[[noreturn]] void siphash_failed() noexcept {
  // A keyed context that cannot hash: continuing with another hash would make the same
  // key hash differently in different calls (dict lookups would silently miss).
  std::fputs("corio: pickle key hash: OpenSSL's SipHash failed\n", stderr);
  std::abort();
}

}  // namespace

std::size_t hash_bytes(std::string_view s, std::uint64_t tag) noexcept {
  process_hasher& p = process();
  std::uint64_t h = 0;
  if (p.ctx == nullptr) {
    h = std::hash<std::string_view>{}(s) ^ hash_seed();  // no SipHash here: see the top
  } else if (EVP_MAC_CTX* mine = thread_ctx(p)) {
    if (!siphash(mine, s, h)) {
      siphash_failed();
    }
  } else {
    std::lock_guard lock(p.mutex);
    if (!siphash(p.ctx, s, h)) {
      siphash_failed();
    }
  }
  return static_cast<std::size_t>(mix(h ^ tag));
}

}  // namespace corio::ipc::pickle::detail
