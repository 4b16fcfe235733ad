// corio::ipc::authenticate_server / authenticate_client: the shared-key handshake of
// Python's multiprocessing.connection (Listener(authkey=...) / Client(authkey=...)).
//
// Concept: both ends prove they know the key without sending it. One end "delivers" a
// challenge: the message b'#CHALLENGE#' + M, where M is random; the other "answers" with
// an HMAC of M keyed with the shared key; the first replies b'#WELCOME#' or b'#FAILURE#'.
// A server (Python's Listener.accept) delivers first and then answers the client's
// challenge; a client (Python's Client) answers first and then delivers. Two generations
// of Python speak it, and corio speaks both, as server and as client:
// - Python <= 3.11: M is 20 random bytes; the answer is the raw 16-byte HMAC-MD5.
// - Python >= 3.12: M is b'{sha256}' + 40 random bytes; the answer is b'{sha256}' + the
//   HMAC-SHA256 of all of M (prefix included, so it cannot be downgraded). A challenge of
//   exactly 20 bytes (from an old peer) is answered with raw HMAC-MD5; an answer of 16 or
//   20 bytes is taken as HMAC-MD5 (from an old peer, which answers a {sha256} challenge
//   with the MD5 of the whole message). Digest names: md5, sha256, sha384, sha3_256,
//   sha3_384.
// Every message of the handshake is an ordinary frame (ipc/connection.hpp) of at most 256
// bytes; a longer one is refused before it is read (errc::message_size). The comparison is
// constant-time (CRYPTO_memcmp); HMAC, digests and random bytes come from OpenSSL's
// libcrypto.
// Outcome: a wrong key, an answer that does not parse or has the wrong length, or a
// challenge that is not one give errc::authentication_failed on this side (after
// #FAILURE# is sent where Python sends it) and Python's AuthenticationError on a Python
// peer. The whole handshake is bounded by auth_options::timeout (errc::timed_out).
// Any failure closes the connection (ipc/connection.hpp: shut down, later calls give
// errc::closed); a server using ipc::listener goes on serving others.
// Thread-safety: the handshake owns the connection while it runs (no other operation on
// it meanwhile). The pure functions in namespace `auth` are thread-safe.
// Cost: two to three frames each way, one HMAC each way (about a microsecond), 40 (or 20)
// random bytes, one timer for the timeout, a few small allocations.
// Cancellation: the token and the inherited one stop the handshake
// (std::errc::operation_canceled); the connection is closed then too.
#pragma once

#include <corio/runtime/require_cxx20.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include <corio/ipc/connection.hpp>
#include <corio/runtime/result.hpp>
#include <corio/runtime/task.hpp>

namespace corio::ipc {

/// The HMAC digests Python's handshake allows.
enum class auth_digest { md5, sha256, sha384, sha3_256, sha3_384 };

/// The key and the rules of the handshake, for either side.
struct auth_options {
  /// The shared key. nullopt: no handshake at all (Python's authkey=None); an empty string
  /// is a key like any other (Python's authkey=b'').
  std::optional<std::string> authkey;
  /// The digest this side's challenge asks for (Python 3.12+ asks for sha256).
  auth_digest digest = auth_digest::sha256;
  /// Send a 20-byte challenge without a {digest} prefix, as Python <= 3.11 does (the peer
  /// then answers with HMAC-MD5). Only for talking to software that needs it.
  bool legacy_challenge = false;
  /// Accept (and give) HMAC-MD5 answers, as Python does for peers <= 3.11. Without it an
  /// MD5 answer, or a challenge asking for one (legacy or {md5}), is an authentication
  /// failure (so is this side's own MD5 challenge: its answer is refused).
  bool accept_md5 = true;
  /// The whole handshake must end within this time (no_timeout: never).
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);
};

/// Python's Listener.accept side: delivers a challenge, then answers the client's.
/// Nothing happens without an authkey. `conn` must outlive the await.
[[nodiscard]] task<result<void>> authenticate_server(connection& conn, auth_options options,
                                                     std::stop_token token = {});
/// Python's Client side: answers the server's challenge, then delivers one.
[[nodiscard]] task<result<void>> authenticate_client(connection& conn, auth_options options,
                                                     std::stop_token token = {});

/// The pieces of the handshake as pure functions on bytes (tested and fuzzed on their own).
namespace auth {

/// What starts a challenge message (then the challenge's random part).
inline constexpr std::string_view challenge_tag = "#CHALLENGE#";
/// The verdict on a right answer.
inline constexpr std::string_view welcome = "#WELCOME#";
/// The verdict on a wrong answer.
inline constexpr std::string_view failure = "#FAILURE#";
/// The longest handshake message either side reads.
inline constexpr std::size_t max_message = 256;
/// The random part of a challenge: 40 bytes (Python 3.12+), 20 for a legacy one.
inline constexpr std::size_t random_size = 40;
/// The random part of a legacy (Python <= 3.11) challenge.
inline constexpr std::size_t legacy_random_size = 20;

/// "md5", "sha256", ... as in Python's _ALLOWED_DIGESTS.
[[nodiscard]] std::string_view digest_name(auth_digest d) noexcept;
/// The digest of a name, or nullopt for a name Python does not allow.
[[nodiscard]] std::optional<auth_digest> digest_from_name(std::string_view name) noexcept;

/// A message split into its digest and payload (Python's _get_digest_name_and_payload):
/// legacy = true for a 16- or 20-byte message (no prefix: HMAC-MD5), else the {name}
/// prefix names `digest` and `payload` is what follows it.
struct split_message {
  bool legacy = false;                    ///< 16 or 20 bytes without a prefix: HMAC-MD5
  auth_digest digest = auth_digest::md5;  ///< the digest named (md5 when legacy)
  std::span<const std::byte> payload;     ///< what follows the prefix (all of it when legacy)
};
/// errc::authentication_failed for a message that is neither legacy nor prefixed with an
/// allowed {digest}.
[[nodiscard]] result<split_message> split(std::span<const std::byte> message) noexcept;

/// HMAC-`digest` of `message` keyed with `key` (raw digest bytes).
[[nodiscard]] result<std::vector<std::byte>> hmac(auth_digest digest, std::span<const std::byte> key,
                                                  std::span<const std::byte> message);

/// The random part of a challenge: `b'{name}'` and 40 random bytes, or 20 random bytes
/// when `legacy` (what follows the challenge_tag).
[[nodiscard]] result<std::vector<std::byte>> make_challenge(auth_digest digest, bool legacy);

/// The answer to a challenge's random part (Python's _create_response): raw HMAC-MD5
/// for a legacy challenge, else b'{name}' + HMAC-name; an MD5 answer (to a legacy or a
/// {md5} challenge) is refused unless accept_md5.
/// errc::authentication_failed for a challenge shorter than 20 bytes or one that does
/// not split.
[[nodiscard]] result<std::vector<std::byte>> make_response(std::span<const std::byte> key,
                                                           std::span<const std::byte> challenge, bool accept_md5);

/// Checks an answer to our challenge (Python's _verify_challenge), in constant time for
/// answers of the right length. errc::authentication_failed otherwise (also for an MD5
/// answer when !accept_md5).
[[nodiscard]] result<void> verify_response(std::span<const std::byte> key, std::span<const std::byte> challenge,
                                           std::span<const std::byte> response, bool accept_md5);

}  // namespace auth

}  // namespace corio::ipc
