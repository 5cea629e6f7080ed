// SPDX-License-Identifier: Apache-2.0
// The engine's copy into mapped peer memory (lib/engine/mapped_copy.h):
// every byte of [dst, dst + n) and none outside it, for sizes around the
// streaming threshold and every alignment of source and destination; and
// Writes and Reads of such sizes and offsets between two engines (over
// shared memory these windows take the mapped copy).

#include "lib/engine/mapped_copy.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/transfer_engine.h"
#include "tests/support/engine_pair.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

using internal::CopyToMapped;
using internal::kStreamingCopyMin;

TEST_CASE("CopyToMapped copies exactly n bytes to dst at any alignment",
          "[transfer_engine]") {
  const size_t sizes[] = {0,
                          1,
                          63,
                          4096,
                          kStreamingCopyMin - 1,
                          kStreamingCopyMin,
                          kStreamingCopyMin + 1,
                          kStreamingCopyMin + 127,
                          (size_t{1} << 20) + 77};
  const size_t max = (size_t{1} << 20) + 256;
  std::vector<uint8_t> src(max);
  testing::FillRandom(src.data(), src.size(), 7);
  std::vector<uint8_t> dst(max + 128);
  for (size_t n : sizes) {
    for (size_t src_align : {0, 1, 13, 32}) {
      for (size_t dst_align : {0, 3, 16, 31, 64}) {
        std::memset(dst.data(), 0xEE, dst.size());
        CopyToMapped(reinterpret_cast<char*>(dst.data() + dst_align),
                     reinterpret_cast<const char*>(src.data() + src_align), n);
        INFO("n " << n << " src_align " << src_align << " dst_align "
                  << dst_align);
        REQUIRE(std::memcmp(dst.data() + dst_align, src.data() + src_align,
                            n) == 0);
        const auto untouched = [](uint8_t b) { return b == 0xEE; };
        REQUIRE(std::all_of(dst.begin(), dst.begin() + dst_align, untouched));
        REQUIRE(std::all_of(dst.begin() + dst_align + n, dst.end(), untouched));
      }
    }
  }
}

TEST_CASE("Writes and Reads at unaligned offsets and odd lengths arrive whole",
          "[transfer_engine]") {
  constexpr uint64_t kBytes = uint64_t{12} << 20;
  testing::PoolPair pair;
  testing::MakePoolPair(kBytes, &pair);
  auto* src = static_cast<uint8_t*>(pair.src.data);
  auto* dst = static_cast<uint8_t*>(pair.dst.data);
  testing::FillRandom(src, kBytes, 3);
  // Lengths below and above the streaming threshold and past a 4 MiB
  // window, at odd offsets on both sides.
  const std::vector<TransferOp> ops = {
      {pair.src.id, 1, pair.dst.id, 5, 100},
      {pair.src.id, 1000, pair.dst.id, 4099, kStreamingCopyMin + 3},
      {pair.src.id, 200001, pair.dst.id, 300007, (uint64_t{5} << 20) + 11},
  };
  REQUIRE(pair.a->Write(pair.a_to_b, ops).Wait().ok());
  for (const TransferOp& op : ops) {
    INFO("op at " << op.src_offset);
    REQUIRE(std::memcmp(dst + op.dst_offset, src + op.src_offset, op.length) ==
            0);
  }
  // Bytes outside the ops stayed zero.
  CHECK(dst[4] == 0);
  CHECK(dst[105] == 0);
  CHECK(dst[4098] == 0);
  CHECK(dst[4099 + kStreamingCopyMin + 3] == 0);
  CHECK(dst[300006] == 0);
  CHECK(dst[300007 + (uint64_t{5} << 20) + 11] == 0);

  // Read back from b into a zeroed part of a's pool.
  const uint64_t back = uint64_t{6} << 20;
  std::memset(src + back, 0, kBytes - back);
  // A Read names the peer's region as the source.
  const TransferOp read = {pair.dst.id, 300007, pair.src.id, back + 9,
                           (uint64_t{5} << 20) + 11};
  REQUIRE(pair.a->Read(pair.a_to_b, {&read, 1}).Wait().ok());
  CHECK(std::memcmp(src + back + 9, dst + 300007, read.length) == 0);
  CHECK(src[back + 8] == 0);
  CHECK(src[back + 9 + read.length] == 0);
}

}  // namespace
}  // namespace flowkv
