// SPDX-License-Identifier: Apache-2.0
// Tests of the host block conversion (flowkv/layout_convert.h): every pair
// of preset and random strided layouts against an element-by-element
// reference, round trips, staging, and the argument checks.
#include "flowkv/layout_convert.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"
#include "tests/support/layout_test_util.h"

namespace flowkv {
namespace {

using testing::AllLayouts;
using testing::MakeLayout;
using testing::RandomBlocks;

using Pool = testing::HostPool;

BlockList Runs(std::initializer_list<BlockRun> runs) {
  return BlockList::FromRuns(runs);
}

// Checks that `dst` holds `src`'s blocks where the lists say, element by
// element through KvLayout::ElementAddress, and that every other byte of
// `dst` equals `dst_before`.
void ExpectConverted(const Pool& src, const BlockList& src_blocks,
                     const Pool& dst_before, const Pool& dst,
                     const BlockList& dst_blocks) {
  const KvGeometry& g = src.layout.geometry();
  const uint64_t head_bytes = src.layout.head_bytes();
  Pool expected = dst_before;
  const std::vector<BlockId> src_ids = src_blocks.ToIds();
  const std::vector<BlockId> dst_ids = dst_blocks.ToIds();
  REQUIRE(src_ids.size() == dst_ids.size());
  uint64_t mismatches = 0;
  for (size_t i = 0; i < src_ids.size(); ++i) {
    for (uint32_t layer = 0; layer < g.num_layers; ++layer) {
      for (uint32_t p = 0; p < g.num_parts; ++p) {
        const auto part = static_cast<KvPart>(p);
        for (uint32_t token = 0; token < g.block_tokens; ++token) {
          for (uint32_t head = 0; head < g.kv_heads; ++head) {
            const ByteAddress s =
                src.layout.ElementAddress(layer, part, src_ids[i], token, head);
            const ByteAddress d =
                dst.layout.ElementAddress(layer, part, dst_ids[i], token, head);
            if (std::memcmp(src.At(s), dst.At(d), head_bytes) != 0) {
              ++mismatches;
            }
            std::memcpy(expected.regions[d.region].data() + d.offset, src.At(s),
                        head_bytes);
          }
        }
      }
    }
  }
  CHECK(mismatches == 0);
  // Bytes outside the destination blocks are untouched.
  CHECK(expected.regions == dst.regions);
}

const KvGeometry kSmall = {.num_layers = 3,
                           .num_blocks = 7,
                           .block_tokens = 3,
                           .kv_heads = 2,
                           .head_dim = 5,
                           .dtype_bytes = 2};

TEST_CASE("ConvertBlocks copies every element between all layout pairs",
          "[layout]") {
  std::mt19937 rng(42);
  KvGeometry dst_geometry = kSmall;
  dst_geometry.num_blocks = 9;  // pools may differ in size
  const std::vector<KvLayout> src_layouts = AllLayouts(kSmall);
  const std::vector<KvLayout> dst_layouts = AllLayouts(dst_geometry);
  for (const KvLayout& src_layout : src_layouts) {
    for (const KvLayout& dst_layout : dst_layouts) {
      INFO(src_layout.ToString() << " -> " << dst_layout.ToString());
      for (uint32_t count : {1u, 4u, 7u}) {
        INFO("blocks: " << count);
        const Pool src(src_layout, rng);
        const Pool dst_before(dst_layout, rng);
        Pool dst = dst_before;
        const BlockList src_blocks = RandomBlocks(7, count, rng);
        const BlockList dst_blocks = RandomBlocks(9, count, rng);
        INFO("src " << src_blocks.ToString() << " dst "
                    << dst_blocks.ToString());
        REQUIRE(ConvertBlocks(src_layout, src.ConstBases(), src_blocks,
                              dst_layout, dst.Bases(), dst_blocks)
                    .ok());
        ExpectConverted(src, src_blocks, dst_before, dst, dst_blocks);
      }
    }
  }
}

TEST_CASE("ConvertBlocks round trip restores the blocks", "[layout]") {
  std::mt19937 rng(7);
  const KvGeometry g = {.num_layers = 4,
                        .num_blocks = 16,
                        .block_tokens = 4,
                        .kv_heads = 3,
                        .head_dim = 8,
                        .dtype_bytes = 2};
  const KvLayout vllm = MakeLayout(g, PoolOrder::kLayerMajor, BlockOrder::kNHD,
                                   RegionSplit::kOnePerLayer);
  const KvLayout flowkv_hnd = MakeLayout(
      g, PoolOrder::kBlockMajor, BlockOrder::kHND, RegionSplit::kOnePerPool);
  const Pool original(vllm, rng);
  Pool middle(flowkv_hnd, rng);
  Pool back = original;
  for (std::vector<std::byte>& region : back.regions) {
    std::fill(region.begin(), region.end(), std::byte{0});
  }
  const BlockList blocks = RandomBlocks(16, 16, rng);  // every block
  const BlockList middle_blocks = Runs({{3, 10}, {0, 3}, {13, 3}});
  REQUIRE(ConvertBlocks(vllm, original.ConstBases(), blocks, flowkv_hnd,
                        middle.Bases(), middle_blocks)
              .ok());
  REQUIRE(ConvertBlocks(flowkv_hnd, middle.ConstBases(), middle_blocks, vllm,
                        back.Bases(), blocks)
              .ok());
  CHECK(back.regions == original.regions);
}

TEST_CASE("ConvertBlocks gathers layer-major blocks into one block-major range",
          "[layout]") {
  std::mt19937 rng(3);
  const KvLayout vllm = MakeLayout(kSmall, PoolOrder::kLayerMajor,
                                   BlockOrder::kNHD, RegionSplit::kOnePerPool);
  const KvLayout flowkv =
      MakeLayout(kSmall, PoolOrder::kBlockMajor, BlockOrder::kNHD,
                 RegionSplit::kOnePerPool);
  const Pool src(vllm, rng);
  Pool dst(flowkv, rng);
  const BlockList src_blocks = BlockList::FromIds({5, 1, 2});
  const BlockList dst_blocks = Runs({{2, 3}});
  REQUIRE(ConvertBlocks(vllm, src.ConstBases(), src_blocks, flowkv, dst.Bases(),
                        dst_blocks)
              .ok());
  // Block-major: blocks 2..4 are one range holding, per block, every
  // layer's K tile then V tile, in layer order.
  std::vector<std::byte> expected;
  for (BlockId block : {5u, 1u, 2u}) {
    for (uint32_t layer = 0; layer < kSmall.num_layers; ++layer) {
      for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
        const std::byte* tile = src.At(vllm.TileAddress(layer, part, block));
        expected.insert(expected.end(), tile, tile + vllm.tile_bytes());
      }
    }
  }
  const absl::StatusOr<std::vector<ByteRange>> ranges =
      flowkv.BlockListRanges(dst_blocks);
  REQUIRE(ranges.ok());
  REQUIRE(ranges->size() == 1);
  const ByteRange& r = ranges->front();
  REQUIRE(r.length == expected.size());
  const std::vector<std::byte> got(dst.regions[0].begin() + r.offset,
                                   dst.regions[0].begin() + r.end());
  CHECK(got == expected);
}

TEST_CASE("ConvertBlocks with empty lists writes nothing", "[layout]") {
  std::mt19937 rng(5);
  const KvLayout layout =
      MakeLayout(kSmall, PoolOrder::kBlockMajor, BlockOrder::kNHD,
                 RegionSplit::kOnePerPool);
  const Pool src(layout, rng);
  const Pool before(layout, rng);
  Pool dst = before;
  CHECK(ConvertBlocks(layout, src.ConstBases(), BlockList(), layout,
                      dst.Bases(), BlockList())
            .ok());
  CHECK(dst.regions == before.regions);
}

TEST_CASE("ConvertBlocks rejects a geometry mismatch naming the field",
          "[layout]") {
  std::mt19937 rng(1);
  const KvLayout src_layout =
      MakeLayout(kSmall, PoolOrder::kBlockMajor, BlockOrder::kNHD,
                 RegionSplit::kOnePerPool);
  const Pool src(src_layout, rng);
  struct Case {
    const char* field;
    uint32_t KvGeometry::*member;
  };
  for (const Case& c : {Case{"num_layers", &KvGeometry::num_layers},
                        Case{"num_parts", &KvGeometry::num_parts},
                        Case{"block_tokens", &KvGeometry::block_tokens},
                        Case{"kv_heads", &KvGeometry::kv_heads},
                        Case{"head_dim", &KvGeometry::head_dim},
                        Case{"dtype_bytes", &KvGeometry::dtype_bytes}}) {
    INFO(c.field);
    KvGeometry g = kSmall;
    g.*(c.member) += c.member == &KvGeometry::num_parts ? -1 : 1;
    const KvLayout dst_layout = MakeLayout(
        g, PoolOrder::kBlockMajor, BlockOrder::kNHD, RegionSplit::kOnePerPool);
    const Pool before(dst_layout, rng);
    Pool dst = before;
    const absl::Status st =
        ConvertBlocks(src_layout, src.ConstBases(), Runs({{0, 2}}), dst_layout,
                      dst.Bases(), Runs({{0, 2}}));
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(st.message()), Catch::Contains(c.field));
    CHECK(dst.regions == before.regions);
  }
}

TEST_CASE("ConvertBlocks rejects bad block lists and region bases",
          "[layout]") {
  std::mt19937 rng(2);
  const KvLayout src_layout =
      MakeLayout(kSmall, PoolOrder::kLayerMajor, BlockOrder::kNHD,
                 RegionSplit::kOnePerLayer);
  KvGeometry dst_geometry = kSmall;
  dst_geometry.num_blocks = 4;
  const KvLayout dst_layout =
      MakeLayout(dst_geometry, PoolOrder::kBlockMajor, BlockOrder::kHND,
                 RegionSplit::kOnePerPool);
  const Pool src(src_layout, rng);
  const Pool before(dst_layout, rng);
  Pool dst = before;

  SECTION("a source block outside its pool") {
    const absl::Status st =
        ConvertBlocks(src_layout, src.ConstBases(), Runs({{5, 3}}), dst_layout,
                      dst.Bases(), Runs({{0, 3}}));
    CHECK(st.code() == absl::StatusCode::kOutOfRange);
    CHECK_THAT(std::string(st.message()), Catch::Contains("src_blocks"));
  }
  SECTION("a destination block outside its (smaller) pool") {
    const absl::Status st =
        ConvertBlocks(src_layout, src.ConstBases(), Runs({{0, 3}}), dst_layout,
                      dst.Bases(), Runs({{2, 3}}));
    CHECK(st.code() == absl::StatusCode::kOutOfRange);
    CHECK_THAT(std::string(st.message()), Catch::Contains("dst_blocks"));
  }
  SECTION("lists of different lengths") {
    const absl::Status st =
        ConvertBlocks(src_layout, src.ConstBases(), Runs({{0, 3}}), dst_layout,
                      dst.Bases(), Runs({{0, 2}}));
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  }
  SECTION("one base for a per-layer pool") {
    const std::vector<const void*> one = {src.regions[0].data()};
    const absl::Status st =
        ConvertBlocks(src_layout, one, Runs({{0, 2}}), dst_layout, dst.Bases(),
                      Runs({{0, 2}}));
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(st.message()), Catch::Contains("src_region_bases"));
  }
  SECTION("a null base") {
    std::vector<void*> bases = dst.Bases();
    bases[0] = nullptr;
    const absl::Status st =
        ConvertBlocks(src_layout, src.ConstBases(), Runs({{0, 2}}), dst_layout,
                      bases, Runs({{0, 2}}));
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(st.message()), Catch::Contains("null"));
  }
  CHECK(dst.regions == before.regions);
}

TEST_CASE("ConvertBlocks between random strided layouts, and back",
          "[layout]") {
  std::mt19937_64 rng(20260901);
  for (int iter = 0; iter < 300; ++iter) {
    INFO("iteration " << iter);
    KvGeometry g{.num_layers = 1 + static_cast<uint32_t>(rng() % 3),
                 .num_blocks = 2 + static_cast<uint32_t>(rng() % 5),
                 .block_tokens = 1 + static_cast<uint32_t>(rng() % 4),
                 .kv_heads = 1 + static_cast<uint32_t>(rng() % 3),
                 .head_dim = 1 + static_cast<uint32_t>(rng() % 4),
                 .dtype_bytes = 1 + static_cast<uint32_t>(rng() % 2),
                 .num_parts = 1 + static_cast<uint32_t>(rng() % 2)};
    KvGeometry dg = g;
    dg.num_blocks = 2 + static_cast<uint32_t>(rng() % 5);
    const KvLayout src_layout = testing::RandomStridedLayout(g, rng);
    const std::vector<KvLayout> presets = AllLayouts(dg);
    const KvLayout dst_layout = rng() % 2
                                    ? testing::RandomStridedLayout(dg, rng)
                                    : presets[rng() % presets.size()];
    INFO(src_layout.ToString() << " -> " << dst_layout.ToString());
    const uint32_t count =
        1 +
        static_cast<uint32_t>(rng() % std::min(g.num_blocks, dg.num_blocks));
    const BlockList src_blocks = RandomBlocks(g.num_blocks, count, rng);
    const BlockList dst_blocks = RandomBlocks(dg.num_blocks, count, rng);
    const Pool src(src_layout, rng);
    const Pool dst_before(dst_layout, rng);
    Pool dst = dst_before;
    REQUIRE(ConvertBlocks(src_layout, src.ConstBases(), src_blocks, dst_layout,
                          dst.Bases(), dst_blocks)
                .ok());
    ExpectConverted(src, src_blocks, dst_before, dst, dst_blocks);
    // Back into a copy of the source with those blocks scrambled: byte-exact.
    Pool back(src_layout, rng);
    for (size_t r = 0; r < back.regions.size(); ++r)
      back.regions[r] = src.regions[r];
    for (BlockId b : src_blocks.ToIds()) {
      for (uint32_t l = 0; l < g.num_layers; ++l)
        for (uint32_t p = 0; p < g.num_parts; ++p)
          for (uint32_t t = 0; t < g.block_tokens; ++t)
            for (uint32_t h = 0; h < g.kv_heads; ++h) {
              std::byte* e = back.At(src_layout.ElementAddress(
                  l, static_cast<KvPart>(p), b, t, h));
              std::fill(e, e + src_layout.head_bytes(), std::byte{0xEE});
            }
    }
    REQUIRE(ConvertBlocks(dst_layout, dst.ConstBases(), dst_blocks, src_layout,
                          back.Bases(), src_blocks)
                .ok());
    CHECK(back.regions == src.regions);
  }
}

TEST_CASE("ConvertBlocks between every pair of one-part (MLA) layouts",
          "[layout]") {
  std::mt19937 rng(17);
  const KvGeometry mla = {.num_layers = 3,
                          .num_blocks = 6,
                          .block_tokens = 4,
                          .kv_heads = 1,
                          .head_dim = 9,
                          .dtype_bytes = 2,
                          .num_parts = 1};
  const std::vector<KvLayout> layouts = AllLayouts(mla);
  REQUIRE(layouts.size() >= 6);
  for (const KvLayout& src_layout : layouts) {
    for (const KvLayout& dst_layout : layouts) {
      INFO(src_layout.ToString() << " -> " << dst_layout.ToString());
      const Pool src(src_layout, rng);
      const Pool dst_before(dst_layout, rng);
      Pool dst = dst_before;
      const BlockList src_blocks = RandomBlocks(6, 4, rng);
      const BlockList dst_blocks = RandomBlocks(6, 4, rng);
      REQUIRE(ConvertBlocks(src_layout, src.ConstBases(), src_blocks,
                            dst_layout, dst.Bases(), dst_blocks)
                  .ok());
      ExpectConverted(src, src_blocks, dst_before, dst, dst_blocks);
    }
  }
}

TEST_CASE("PackedLayout is block-major with the pool's block order",
          "[layout]") {
  const KvLayout vllm = MakeLayout(kSmall, PoolOrder::kLayerMajor,
                                   BlockOrder::kHND, RegionSplit::kOnePerLayer);
  const absl::StatusOr<KvLayout> staged = PackedLayout(vllm, 3);
  REQUIRE(staged.ok());
  CHECK(*staged ==
        *KvLayout::FlowKvBlockMajor(staged->geometry(), BlockOrder::kHND));
  CHECK(staged->tile_order() == BlockOrder::kHND);
  CHECK(staged->num_regions() == 1);
  CHECK(staged->geometry().num_blocks == 3);
  CHECK(staged->total_bytes() == 3 * vllm.block_bytes());
  CHECK(PackedBytes(vllm, Runs({{4, 3}})) == 3 * vllm.block_bytes());
  CHECK(PackedLayout(vllm, 0).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("PackBlocks and UnpackBlocks round trip through a staging buffer",
          "[layout]") {
  std::mt19937 rng(11);
  for (const KvLayout& layout : AllLayouts(kSmall)) {
    INFO(layout.ToString());
    const Pool src(layout, rng);
    const BlockList blocks = RandomBlocks(7, 5, rng);
    std::vector<std::byte> staging(PackedBytes(layout, blocks) + 3,
                                   std::byte{0x5a});
    REQUIRE(PackBlocks(layout, src.ConstBases(), blocks, staging.data(),
                       staging.size())
                .ok());
    // Block i of the buffer is position i of the list, element by element.
    const absl::StatusOr<KvLayout> staged = PackedLayout(layout, 5);
    REQUIRE(staged.ok());
    Pool staged_pool(*staged, rng);
    std::copy_n(staging.begin(), staged->total_bytes(),
                staged_pool.regions[0].begin());
    Pool empty_before(*staged, rng);
    ExpectConverted(src, blocks, empty_before, staged_pool, Runs({{0, 5}}));
    // The tail past the packed bytes is untouched.
    CHECK(staging[staged->total_bytes()] == std::byte{0x5a});

    const Pool before(layout, rng);
    Pool dst = before;
    REQUIRE(UnpackBlocks(staging.data(), staging.size(), layout, dst.Bases(),
                         blocks)
                .ok());
    ExpectConverted(src, blocks, before, dst, blocks);
  }
}

TEST_CASE("PackBlocks rejects a short or null staging buffer", "[layout]") {
  std::mt19937 rng(13);
  const KvLayout layout =
      MakeLayout(kSmall, PoolOrder::kLayerMajor, BlockOrder::kNHD,
                 RegionSplit::kOnePerPool);
  Pool pool(layout, rng);
  const BlockList blocks = Runs({{1, 2}});
  std::vector<std::byte> staging(PackedBytes(layout, blocks) - 1);
  absl::Status st = PackBlocks(layout, pool.ConstBases(), blocks,
                               staging.data(), staging.size());
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(st.message()), Catch::Contains("staging_bytes"));
  st = UnpackBlocks(staging.data(), staging.size(), layout, pool.Bases(),
                    blocks);
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  st = PackBlocks(layout, pool.ConstBases(), blocks, nullptr, 1 << 20);
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  st = PackBlocks(layout, pool.ConstBases(), Runs({{6, 2}}), staging.data(),
                  1 << 20);
  CHECK(st.code() == absl::StatusCode::kOutOfRange);
  // An empty list needs no staging bytes.
  CHECK(PackBlocks(layout, pool.ConstBases(), BlockList(), staging.data(), 0)
            .ok());
}

}  // namespace
}  // namespace flowkv
