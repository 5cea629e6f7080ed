// SPDX-License-Identifier: Apache-2.0
// HMAC-SHA256 through libcrypto's EVP_MAC interface (OpenSSL 3.0 or later),
// nonces from RAND_bytes, comparison with CRYPTO_memcmp. Calls libcrypto
// and nothing else.

#include "lib/common/hmac.h"

#include <cstdlib>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

namespace flowkv::internal {

Sha256Digest HmacSha256(std::string_view key,
                        absl::Span<const uint8_t> message) {
  // libcrypto reads a null key as "keep the previous key", which a fresh
  // context does not have: hand it a valid pointer for the empty key too.
  static constexpr unsigned char kNoBytes[1] = {0};
  const auto* key_bytes =
      key.empty() ? kNoBytes
                  : reinterpret_cast<const unsigned char*>(key.data());
  const unsigned char* message_bytes =
      message.empty() ? kNoBytes : message.data();
  Sha256Digest digest;
  size_t digest_bytes = 0;
  if (EVP_Q_mac(/*libctx=*/nullptr, "HMAC", /*propq=*/nullptr, "SHA256",
                /*params=*/nullptr, key_bytes, key.size(), message_bytes,
                message.size(), digest.data(), digest.size(),
                &digest_bytes) == nullptr ||
      digest_bytes != digest.size()) {
    std::abort();
  }
  return digest;
}

Sha256Digest Sha256(absl::Span<const uint8_t> message) {
  static constexpr unsigned char kNoBytes[1] = {0};
  Sha256Digest digest;
  size_t digest_bytes = 0;
  if (EVP_Q_digest(/*libctx=*/nullptr, "SHA256", /*propq=*/nullptr,
                   message.empty() ? kNoBytes : message.data(), message.size(),
                   digest.data(), &digest_bytes) != 1 ||
      digest_bytes != digest.size()) {
    std::abort();
  }
  return digest;
}

Nonce RandomNonce() {
  Nonce nonce;
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
    std::abort();
  }
  return nonce;
}

uint64_t RandomId() {
  for (;;) {
    uint64_t id = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&id), sizeof(id)) != 1) {
      std::abort();
    }
    if (id != 0) return id;
  }
}

bool DigestsEqual(const Sha256Digest& a, const Sha256Digest& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace flowkv::internal
