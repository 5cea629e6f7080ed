// SPDX-License-Identifier: Apache-2.0
// HMAC-SHA256 (RFC 2104, FIPS 180-4), fresh random nonces and constant-time
// comparison: the one place flowkv calls OpenSSL's libcrypto. Callers
// compare MACs with DigestsEqual (or ConstantTimeEquals,
// lib/engine/wireup/wire_format.h), never with memcmp or ==.
//
// Example:
//   const Sha256Digest mac = HmacSha256(cluster_token, AsBytes(blob));
//   if (!DigestsEqual(mac, received)) { ... refuse ... }
//
// Thread safety: thread-safe (a pure function).

#ifndef FLOWKV_LIB_COMMON_HMAC_H_
#define FLOWKV_LIB_COMMON_HMAC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/types/span.h"

namespace flowkv::internal {

inline constexpr size_t kSha256DigestBytes = 32;
using Sha256Digest = std::array<uint8_t, kSha256DigestBytes>;

// HMAC-SHA256 of `message` keyed by `key`. Any key length is valid, the empty
// key included (a key longer than SHA-256's 64-byte block is hashed first, as
// RFC 2104 says). libcrypto fails here only when it cannot allocate its
// context; like a failed operator new, that ends the process (std::abort).
Sha256Digest HmacSha256(std::string_view key,
                        absl::Span<const uint8_t> message);

// SHA-256 of `message` (FIPS 180-4). Aborts like HmacSha256.
Sha256Digest Sha256(absl::Span<const uint8_t> message);

// A handshake nonce: 32 bytes from libcrypto's CSPRNG (RAND_bytes). Aborts
// the process when the generator cannot be seeded, as HmacSha256 does when
// it cannot allocate: a predictable nonce would make handshakes replayable.
inline constexpr size_t kNonceBytes = 32;
using Nonce = std::array<uint8_t, kNonceBytes>;
Nonce RandomNonce();
// 64 bits from the same generator, never 0.
uint64_t RandomId();

// Whether the two digests are equal, in time independent of where they
// differ (CRYPTO_memcmp).
bool DigestsEqual(const Sha256Digest& a, const Sha256Digest& b);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_COMMON_HMAC_H_
