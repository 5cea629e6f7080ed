// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the transfer tests, their peer process and the transfer
// benchmarks (no test framework here: transfer_peer includes it too).
#ifndef FLOWKV_TESTS_SUPPORT_TRANSFER_TEST_UTIL_H_
#define FLOWKV_TESTS_SUPPORT_TRANSFER_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "absl/time/time.h"

namespace flowkv::testing {

// The peer failure timeout of the process tests' engines and of
// transfer_peer; every time bound of those tests derives from it.
inline constexpr absl::Duration kPeerFailureTimeout = absl::Seconds(3);

// Whether UCX_TLS selects a shared-memory transport.
inline bool SharedMemoryMode() {
  const char* tls = std::getenv("UCX_TLS");
  if (tls == nullptr) return false;
  const std::string t = tls;
  return t.find("posix") != std::string::npos ||
         t.find("sm") != std::string::npos;
}

// FNV-1a of `n` bytes: a cheap fingerprint of a pool's contents.
inline uint64_t Fnv1a(const uint8_t* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= data[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

// Fills `n` bytes with a seeded pseudo-random sequence.
inline void FillRandom(uint8_t* data, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(data + i, &v, 8);
  }
  for (; i < n; ++i) data[i] = static_cast<uint8_t>(rng());
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_TRANSFER_TEST_UTIL_H_
