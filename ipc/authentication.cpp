// The multiprocessing.connection handshake (ipc/authentication.hpp): the pure pieces on
// top of OpenSSL's HMAC, random bytes and constant-time compare, and the two sides of the
// exchange over an ipc::connection.
#include <corio/ipc/authentication.hpp>

// Defines detail::finish_root, which every task<T> instantiated here needs.
#include <corio/runtime/spawn.hpp>
#include <corio/runtime/timeout.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <initializer_list>

namespace corio::ipc {

namespace auth {

namespace {

constexpr std::size_t md5_size = 16;
// The longest digest name in braces: "{sha3_384}".
constexpr std::size_t max_name = 8;

std::error_code failed() noexcept { return make_error_code(errc::authentication_failed); }

std::span<const std::byte> as_bytes(std::string_view s) noexcept { return std::as_bytes(std::span(s.data(), s.size())); }

const EVP_MD* evp_of(auth_digest d) noexcept {
  switch (d) {
    case auth_digest::md5: return EVP_md5();
    case auth_digest::sha256: return EVP_sha256();
    case auth_digest::sha384: return EVP_sha384();
    case auth_digest::sha3_256: return EVP_sha3_256();
    case auth_digest::sha3_384: return EVP_sha3_384();
  }
  return nullptr;
}

// The parts one after the other, in a vector sized once (g++ 12 at -O3 misreads a
// range insert into a vector that grows as -Wstringop-overflow).
std::vector<std::byte> concat(std::initializer_list<std::span<const std::byte>> parts) {
  std::size_t size = 0;
  for (auto p : parts) {
    size += p.size();
  }
  std::vector<std::byte> out(size);
  std::size_t at = 0;
  for (auto p : parts) {
    if (!p.empty()) {
      std::memcpy(out.data() + at, p.data(), p.size());
      at += p.size();
    }
  }
  return out;
}

// b'{name}', the prefix of a challenge and of a response that names its digest.
std::vector<std::byte> prefixed(auth_digest d) {
  return concat({as_bytes("{"), as_bytes(digest_name(d)), as_bytes("}")});
}

}  // namespace

std::string_view digest_name(auth_digest d) noexcept {
  switch (d) {
    case auth_digest::md5: return "md5";
    case auth_digest::sha256: return "sha256";
    case auth_digest::sha384: return "sha384";
    case auth_digest::sha3_256: return "sha3_256";
    case auth_digest::sha3_384: return "sha3_384";
  }
  return "";
}

std::optional<auth_digest> digest_from_name(std::string_view name) noexcept {
  for (auth_digest d : {auth_digest::md5, auth_digest::sha256, auth_digest::sha384, auth_digest::sha3_256,
                        auth_digest::sha3_384}) {
    if (digest_name(d) == name) {
      return d;
    }
  }
  return std::nullopt;
}

result<split_message> split(std::span<const std::byte> message) noexcept {
  if (message.size() == legacy_random_size || message.size() == md5_size) {
    return split_message{true, auth_digest::md5, message};
  }
  if (message.empty() || message[0] != std::byte{'{'}) {
    return unexpected(failed());
  }
  // The closing brace must come within the longest allowed name.
  std::size_t limit = std::min(message.size(), max_name + 2);
  for (std::size_t i = 1; i < limit; ++i) {
    if (message[i] == std::byte{'}'}) {
      std::string_view name(reinterpret_cast<const char*>(message.data() + 1), i - 1);
      auto d = digest_from_name(name);
      if (!d) {
        return unexpected(failed());
      }
      return split_message{false, *d, message.subspan(i + 1)};
    }
  }
  return unexpected(failed());
}

result<std::vector<std::byte>> hmac(auth_digest digest, std::span<const std::byte> key,
                                    std::span<const std::byte> message) {
  if (key.size() > INT_MAX) {
    return unexpected(std::make_error_code(std::errc::invalid_argument));
  }
  const EVP_MD* md = evp_of(digest);
  std::vector<std::byte> out(EVP_MAX_MD_SIZE);
  unsigned int size = 0;
  // OpenSSL wants a non-null key pointer even for an empty key.
  static const unsigned char no_key = 0;
  const auto* k = key.empty() ? &no_key : reinterpret_cast<const unsigned char*>(key.data());
  if (md == nullptr || HMAC(md, k, static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
                            message.size(), reinterpret_cast<unsigned char*>(out.data()), &size) == nullptr) {
    // The digest is unavailable (e.g. MD5 in a FIPS-only OpenSSL configuration).
    return unexpected(failed());
  }
  out.resize(size);
  return out;
}

result<std::vector<std::byte>> make_challenge(auth_digest digest, bool legacy) {
  std::vector<std::byte> out = legacy ? std::vector<std::byte>{} : prefixed(digest);
  std::size_t random = legacy ? legacy_random_size : random_size;
  std::size_t at = out.size();
  out.resize(at + random);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data() + at), static_cast<int>(random)) != 1) {
    return unexpected(std::make_error_code(std::errc::io_error));
  }
  return out;
}

result<std::vector<std::byte>> make_response(std::span<const std::byte> key, std::span<const std::byte> challenge,
                                             bool accept_md5) {
  if (challenge.size() < legacy_random_size) {
    return unexpected(failed());
  }
  auto parts = split(challenge);
  if (!parts) {
    return unexpected(parts.error());
  }
  // Without accept_md5 no MD5 answer is given: not to a legacy challenge, nor to one
  // that names {md5} (as verify_response takes none).
  if (parts->digest == auth_digest::md5 && !accept_md5) {
    return unexpected(failed());
  }
  if (parts->legacy) {
    return hmac(auth_digest::md5, key, challenge);
  }
  // The MAC covers the whole challenge, prefix included.
  auto mac = hmac(parts->digest, key, challenge);
  if (!mac) {
    return unexpected(mac.error());
  }
  return concat({as_bytes("{"), as_bytes(digest_name(parts->digest)), as_bytes("}"), *mac});
}

result<void> verify_response(std::span<const std::byte> key, std::span<const std::byte> challenge,
                             std::span<const std::byte> response, bool accept_md5) {
  auto parts = split(response);
  if (!parts) {
    return unexpected(parts.error());
  }
  if (parts->digest == auth_digest::md5 && !accept_md5) {
    return unexpected(failed());
  }
  auto expected = hmac(parts->digest, key, challenge);
  if (!expected) {
    return unexpected(expected.error());
  }
  // The lengths are public (they follow from the digest); the contents are compared in
  // constant time.
  if (expected->size() != parts->payload.size() ||
      CRYPTO_memcmp(expected->data(), parts->payload.data(), expected->size()) != 0) {
    return unexpected(failed());
  }
  return {};
}

}  // namespace auth

namespace {

std::span<const std::byte> bytes_of(std::string_view s) noexcept { return std::as_bytes(std::span(s.data(), s.size())); }

bool equals(const std::vector<std::byte>& a, std::string_view b) noexcept {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), b.size()) == 0;
}

std::error_code failed() noexcept { return make_error_code(errc::authentication_failed); }

// Python's deliver_challenge: our challenge, their answer, our verdict.
task<result<void>> deliver(connection& conn, const auth_options& o, std::span<const std::byte> key,
                           std::stop_token token) {
  auto random = auth::make_challenge(o.digest, o.legacy_challenge);
  if (!random) {
    co_return unexpected(random.error());
  }
  const std::vector<std::byte> message = auth::concat({bytes_of(auth::challenge_tag), *random});
  if (auto r = co_await conn.send_bytes(message, token); !r) {
    co_return r;
  }
  std::vector<std::byte> response;
  if (auto r = co_await conn.recv_bytes(response, token); !r) {
    co_return r;
  }
  if (!auth::verify_response(key, *random, response, o.accept_md5)) {
    (void)co_await conn.send_bytes(bytes_of(auth::failure), token);
    co_return unexpected(failed());
  }
  co_return co_await conn.send_bytes(bytes_of(auth::welcome), token);
}

// Python's answer_challenge: their challenge, our answer, their verdict.
task<result<void>> answer(connection& conn, const auth_options& o, std::span<const std::byte> key,
                          std::stop_token token) {
  std::vector<std::byte> message;
  if (auto r = co_await conn.recv_bytes(message, token); !r) {
    co_return r;
  }
  auto tag = bytes_of(auth::challenge_tag);
  if (message.size() < tag.size() || !std::equal(tag.begin(), tag.end(), message.begin())) {
    co_return unexpected(failed());
  }
  auto response = auth::make_response(key, std::span(message).subspan(tag.size()), o.accept_md5);
  if (!response) {
    co_return unexpected(response.error());
  }
  if (auto r = co_await conn.send_bytes(*response, token); !r) {
    co_return r;
  }
  std::vector<std::byte> verdict;
  if (auto r = co_await conn.recv_bytes(verdict, token); !r) {
    co_return r;
  }
  if (!equals(verdict, auth::welcome)) {
    co_return unexpected(failed());
  }
  co_return result<void>{};
}

task<result<void>> exchange(connection& conn, const auth_options& o, bool server, std::stop_token token) {
  auto key = bytes_of(*o.authkey);
  if (server) {
    if (auto r = co_await deliver(conn, o, key, token); !r) {
      co_return r;
    }
    co_return co_await answer(conn, o, key, token);
  }
  if (auto r = co_await answer(conn, o, key, token); !r) {
    co_return r;
  }
  co_return co_await deliver(conn, o, key, token);
}

task<result<void>> handshake(connection& conn, auth_options o, bool server, std::stop_token token) {
  if (!o.authkey) {
    co_return result<void>{};
  }
  // Handshake messages are at most 256 bytes; the handshake's own timeout replaces the
  // idle and stall timeouts meanwhile.
  connection_options saved = conn.options();
  connection_options limited = saved;
  limited.max_message_size = std::min(saved.max_message_size, auth::max_message);
  limited.idle_timeout = no_timeout;
  limited.stall_timeout = no_timeout;
  conn.set_options(limited);
  result<void> r;
  if (detail::is_no_timeout(o.timeout)) {
    r = co_await exchange(conn, o, server, token);
  } else {
    r = co_await corio::timeout(exchange(conn, o, server, token), o.timeout);
  }
  conn.set_options(saved);
  if (!r) {
    conn.close();
  }
  co_return r;
}

}  // namespace

task<result<void>> authenticate_server(connection& conn, auth_options options, std::stop_token token) {
  co_return co_await handshake(conn, std::move(options), true, std::move(token));
}

task<result<void>> authenticate_client(connection& conn, auth_options options, std::stop_token token) {
  co_return co_await handshake(conn, std::move(options), false, std::move(token));
}

}  // namespace corio::ipc
