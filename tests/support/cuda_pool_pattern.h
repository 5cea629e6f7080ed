// SPDX-License-Identifier: Apache-2.0
// The byte pattern the CUDA pool tests and tests/cuda/cuda_pool_peer.cc write
// into pools and check, and the hash they compare regions by, so that two
// processes agree on expected bytes without sending them.
#ifndef FLOWKV_TESTS_SUPPORT_CUDA_POOL_PATTERN_H_
#define FLOWKV_TESTS_SUPPORT_CUDA_POOL_PATTERN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace flowkv::testing {

// Byte `offset` of region `region` of the pool filled with `seed`.
inline std::byte PatternByte(uint32_t seed, uint32_t region, uint64_t offset) {
  uint64_t x = (uint64_t{seed} << 40) ^ (uint64_t{region} << 32) ^ offset;
  x ^= x >> 17;
  x *= 0xed5ad4bbu;
  x ^= x >> 11;
  return static_cast<std::byte>(x & 0xff);
}

inline std::vector<std::byte> Pattern(uint32_t seed, uint32_t region,
                                      uint64_t bytes) {
  std::vector<std::byte> out(bytes);
  for (uint64_t i = 0; i < bytes; ++i) out[i] = PatternByte(seed, region, i);
  return out;
}

inline uint64_t HashBytes(const std::vector<std::byte>& bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (const std::byte b : bytes) {
    hash ^= static_cast<uint8_t>(b);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_CUDA_POOL_PATTERN_H_
