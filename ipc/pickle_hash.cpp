// The keyed hash of pickle str/bytes keys (detail/pickle_hash.hpp): SipHash-1-3 through
// OpenSSL's EVP_MAC, one context per thread, keyed once per process.
#include <corio/ipc/detail/pickle_hash.hpp>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <array>
#include <cstring>
#include <functional>

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

/// A thread's keyed SipHash-1-3 context (null if this OpenSSL lacks SIPHASH).
class siphasher {
 public:
  siphasher() noexcept {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
    if (mac == nullptr) {
      return;
    }
    m_ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);  // the context holds its own reference
    unsigned int size = 8;
    unsigned int c_rounds = 1;
    unsigned int d_rounds = 3;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_SIZE, &size),
                           OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_C_ROUNDS, &c_rounds),
                           OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_D_ROUNDS, &d_rounds), OSSL_PARAM_construct_end()};
    const auto& key = siphash_key();
    if (m_ctx != nullptr && EVP_MAC_init(m_ctx, key.data(), key.size(), params) != 1) {
      EVP_MAC_CTX_free(m_ctx);
      m_ctx = nullptr;
    }
  }
  siphasher(const siphasher&) = delete;
  siphasher& operator=(const siphasher&) = delete;
  ~siphasher() { EVP_MAC_CTX_free(m_ctx); }

  /// The 64-bit SipHash of `s`, or false if OpenSSL could not compute it.
  bool hash(std::string_view s, std::uint64_t& out) noexcept {
    if (m_ctx == nullptr) {
      return false;
    }
    unsigned char digest[8];
    std::size_t length = 0;
    // A null key re-initialises the context with the key it already holds.
    if (EVP_MAC_init(m_ctx, nullptr, 0, nullptr) != 1 ||
        EVP_MAC_update(m_ctx, reinterpret_cast<const unsigned char*>(s.data()), s.size()) != 1 ||
        EVP_MAC_final(m_ctx, digest, &length, sizeof digest) != 1 || length != sizeof digest) {
      return false;
    }
    std::memcpy(&out, digest, sizeof out);
    return true;
  }

 private:
  EVP_MAC_CTX* m_ctx = nullptr;
};

}  // namespace

std::size_t hash_bytes(std::string_view s, std::uint64_t tag) noexcept {
  thread_local siphasher hasher;
  std::uint64_t h = 0;
  if (!hasher.hash(s, h)) {
    // No SipHash in this OpenSSL (a restricted provider): seeded but not collision-proof.
    h = std::hash<std::string_view>{}(s) ^ hash_seed();
  }
  return static_cast<std::size_t>(mix(h ^ tag));
}

}  // namespace corio::ipc::pickle::detail
