#include "flowkv/kv_layout.h"

#include <set>

#include <catch2/catch.hpp>

namespace flowkv {
namespace {

constexpr KvGeometry kSmall = {.num_layers = 3,
                               .num_blocks = 5,
                               .block_tokens = 4,
                               .kv_heads = 2,
                               .head_dim = 3,
                               .dtype_bytes = 2};

// The address of one head vector, written out from the tensor shapes in the
// header, independently of the library's code.
ByteAddress BruteForce(const KvLayoutSpec& spec, uint32_t l, uint32_t kv,
                       uint32_t b, uint32_t t, uint32_t h) {
  const KvGeometry& g = spec.geometry;
  const uint64_t inner = spec.block_order == BlockOrder::kNHD
                             ? (uint64_t{t} * g.kv_heads + h)
                             : (uint64_t{h} * g.block_tokens + t);
  const uint64_t per_block = uint64_t{g.block_tokens} * g.kv_heads;
  uint64_t element;  // index of the head vector in its region
  uint32_t region = 0;
  if (spec.pool_order == PoolOrder::kBlockMajor) {
    element = ((uint64_t{b} * g.num_layers + l) * 2 + kv) * per_block + inner;
  } else {
    const uint64_t in_layer =
        (uint64_t{kv} * g.num_blocks + b) * per_block + inner;
    if (spec.region_split == RegionSplit::kOnePerLayer) {
      region = l;
      element = in_layer;
    } else {
      element = uint64_t{l} * 2 * g.num_blocks * per_block + in_layer;
    }
  }
  return {region, element * g.head_dim * g.dtype_bytes};
}

std::vector<KvLayoutSpec> AllSpecs(const KvGeometry& g) {
  std::vector<KvLayoutSpec> specs;
  for (BlockOrder bo : {BlockOrder::kNHD, BlockOrder::kHND}) {
    specs.push_back({g, PoolOrder::kBlockMajor, bo, RegionSplit::kOnePerPool});
    specs.push_back({g, PoolOrder::kLayerMajor, bo, RegionSplit::kOnePerPool});
    specs.push_back({g, PoolOrder::kLayerMajor, bo, RegionSplit::kOnePerLayer});
  }
  return specs;
}

TEST_CASE("Every element's address matches the tensor formula", "[kv_layout]") {
  for (const KvLayoutSpec& spec : AllSpecs(kSmall)) {
    absl::StatusOr<KvLayout> layout = KvLayout::Create(spec);
    REQUIRE(layout.ok());
    INFO(layout->ToString());
    std::set<std::pair<uint32_t, uint64_t>> seen;
    const KvGeometry& g = spec.geometry;
    for (uint32_t l = 0; l < g.num_layers; ++l)
      for (uint32_t kv = 0; kv < 2; ++kv)
        for (uint32_t b = 0; b < g.num_blocks; ++b)
          for (uint32_t t = 0; t < g.block_tokens; ++t)
            for (uint32_t h = 0; h < g.kv_heads; ++h) {
              const ByteAddress a =
                  layout->ElementAddress(l, static_cast<KvPart>(kv), b, t, h);
              REQUIRE(a == BruteForce(spec, l, kv, b, t, h));
              REQUIRE(a.region < layout->num_regions());
              REQUIRE(a.offset + layout->head_bytes() <=
                      layout->region_bytes());
              seen.insert({a.region, a.offset});
            }
    // The elements tile the pool exactly: no two share an address.
    CHECK(seen.size() * layout->head_bytes() == layout->total_bytes());
  }
}

TEST_CASE("Slice ranges cover exactly the slice's elements", "[kv_layout]") {
  for (const KvLayoutSpec& spec : AllSpecs(kSmall)) {
    KvLayout layout = *KvLayout::Create(spec);
    INFO(layout.ToString());
    const KvSlice slice{.layer = 1,
                        .part = KvPart::kValue,
                        .block = 3,
                        .token_begin = 1,
                        .token_end = 3,
                        .head_begin = 1,
                        .head_end = 2};
    std::vector<ByteRange> ranges;
    REQUIRE(layout.AppendSliceRanges(slice, &ranges).ok());
    std::set<std::pair<uint32_t, uint64_t>> covered;
    for (const ByteRange& r : ranges)
      for (uint64_t o = r.offset; o < r.end(); o += layout.head_bytes())
        covered.insert({r.region, o});
    std::set<std::pair<uint32_t, uint64_t>> expected;
    for (uint32_t t = 1; t < 3; ++t) {
      const ByteAddress a = layout.ElementAddress(1, KvPart::kValue, 3, t, 1);
      expected.insert({a.region, a.offset});
    }
    CHECK(covered == expected);
  }
}

TEST_CASE("A full-head slice of an NHD tile is one range", "[kv_layout]") {
  KvLayout layout = *KvLayout::Create({.geometry = kSmall});
  std::vector<ByteRange> ranges;
  REQUIRE(layout
              .AppendSliceRanges({.layer = 0,
                                  .block = 2,
                                  .token_begin = 0,
                                  .token_end = 4,
                                  .head_begin = 0,
                                  .head_end = 2},
                                 &ranges)
              .ok());
  REQUIRE(ranges.size() == 1);
  CHECK(ranges[0].length == layout.tile_bytes());
}

TEST_CASE("Out-of-range slices are rejected and leave the output alone",
          "[kv_layout]") {
  KvLayout layout = *KvLayout::Create({.geometry = kSmall});
  std::vector<ByteRange> ranges = {{0, 0, 1}};
  const KvSlice bad[] = {
      {.layer = 3, .token_end = 1, .head_end = 1},
      {.block = 5, .token_end = 1, .head_end = 1},
      {.token_begin = 2, .token_end = 2, .head_end = 1},
      {.token_end = 5, .head_end = 1},
      {.token_end = 1, .head_end = 3},
  };
  for (const KvSlice& s : bad) {
    absl::Status status = layout.AppendSliceRanges(s, &ranges);
    CHECK(status.code() == absl::StatusCode::kOutOfRange);
    CHECK(ranges.size() == 1);
  }
}

TEST_CASE("BlockListRanges: one range per run block-major, 2L layer-major",
          "[kv_layout]") {
  const BlockList list({{0, 2}, {3, 1}});
  KvLayout block_major = *KvLayout::Create({.geometry = kSmall});
  auto ranges = block_major.BlockListRanges(list);
  REQUIRE(ranges.ok());
  REQUIRE(ranges->size() == 2);
  CHECK((*ranges)[0] == ByteRange{0, 0, 2 * block_major.block_bytes()});
  CHECK((*ranges)[1] ==
        ByteRange{0, 3 * block_major.block_bytes(), block_major.block_bytes()});

  KvLayout layer_major = *KvLayout::Create(
      {.geometry = kSmall, .pool_order = PoolOrder::kLayerMajor});
  ranges = layer_major.BlockListRanges(list);
  REQUIRE(ranges.ok());
  CHECK(ranges->size() == 2 * 2 * kSmall.num_layers);

  // All blocks of the pool in one run: a one-region layer-major pool is
  // then one contiguous range.
  ranges = layer_major.BlockListRanges(BlockList({{0, 5}}));
  REQUIRE(ranges->size() == 1);
  CHECK((*ranges)[0].length == layer_major.total_bytes());

  CHECK(block_major.BlockListRanges(BlockList({{4, 2}})).status().code() ==
        absl::StatusCode::kOutOfRange);
}

TEST_CASE("Create rejects zero, overflowing and inconsistent geometry",
          "[kv_layout]") {
  const char* fields[] = {"num_layers", "num_blocks", "block_tokens",
                          "kv_heads",   "head_dim",   "dtype_bytes"};
  for (int i = 0; i < 6; ++i) {
    KvGeometry g = kSmall;
    uint32_t* values[] = {&g.num_layers, &g.num_blocks, &g.block_tokens,
                          &g.kv_heads,   &g.head_dim,   &g.dtype_bytes};
    *values[i] = 0;
    absl::StatusOr<KvLayout> layout = KvLayout::Create({.geometry = g});
    REQUIRE(layout.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(layout.status().message()),
               Catch::Contains(fields[i]));
  }
  KvGeometry huge = kSmall;
  huge.num_blocks = UINT32_MAX;
  huge.head_dim = UINT32_MAX;
  huge.kv_heads = 1u << 20;
  CHECK(KvLayout::Create({.geometry = huge}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(KvLayout::Create({.geometry = kSmall,
                          .pool_order = PoolOrder::kBlockMajor,
                          .region_split = RegionSplit::kOnePerLayer})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flowkv
