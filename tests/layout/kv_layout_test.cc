// SPDX-License-Identifier: Apache-2.0
// Tests of KvLayout: every preset against the tensor shape its header
// comment documents (written out here independently), the original orders,
// slice and block-list ranges on every preset and random strided layouts,
// and validation (each error names its field).
#include "flowkv/kv_layout.h"

#include <functional>
#include <random>
#include <set>
#include <string>

#include <catch2/catch.hpp>

#include "tests/support/layout_test_util.h"

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
    REQUIRE(layout->num_regions() ==
            (spec.region_split == RegionSplit::kOnePerLayer ? 3u : 1u));
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
                      layout->region_bytes(a.region));
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

// Found by tests/fuzz/kv_layout_create_fuzz (regression input
// tests/fuzz/regressions/kv_layout_create_fuzz/): billions of layers passed
// the byte-size check and the factory then built a table of billions of
// tensors (out of memory). Every factory bounds the table as Parse does.
TEST_CASE("Every factory bounds num_layers * num_parts", "[kv_layout]") {
  KvGeometry g = kSmall;
  g.num_layers = KvLayout::kMaxSerializedTensors / 2;
  absl::StatusOr<KvLayout> deepest = KvLayout::FlowKvBlockMajor(g);
  REQUIRE(deepest.ok());
  CHECK(KvLayout::Parse(deepest->Serialize()).ok());
  for (uint32_t layers :
       {KvLayout::kMaxSerializedTensors / 2 + 1, 0xa7ffffffu, UINT32_MAX}) {
    g.num_layers = layers;
    for (absl::StatusOr<KvLayout> layout :
         {KvLayout::Create({.geometry = g}), KvLayout::FlowKvBlockMajor(g),
          KvLayout::VllmFlashAttn(g), KvLayout::SglangMha(g),
          KvLayout::Vllm(g, VllmKvLayout::kLBNHC),
          KvLayout::CreateStrided({.geometry = g, .tensors = {}})}) {
      REQUIRE(layout.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(layout.status().message()),
                 Catch::Contains("num_layers") && Catch::Contains("tensors"));
    }
  }
  KvGeometry latent = kSmall;
  latent.num_parts = 1;
  latent.kv_heads = 1;
  latent.num_layers = KvLayout::kMaxSerializedTensors;
  CHECK(KvLayout::Mla(latent).ok());
  latent.num_layers += 1;
  CHECK(KvLayout::Mla(latent).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Presets: each against the shape in its header comment, written out as a
// row-major index over that shape.

// A shape dimension: its extent and the index it takes for an element.
struct ShapeDim {
  uint64_t extent;
  uint64_t index;
};

// Row-major element index over `dims` (outermost first).
uint64_t RowMajor(std::initializer_list<ShapeDim> dims) {
  uint64_t index = 0;
  for (const ShapeDim& d : dims) index = index * d.extent + d.index;
  return index;
}

struct Element {
  uint64_t l, p, b, t, h;
};

struct PresetCase {
  const char* what;
  absl::StatusOr<KvLayout> layout;
  uint32_t regions;
  std::optional<BlockOrder> tile_order;
  // The region and head-vector index of an element, from the shape.
  std::function<std::pair<uint32_t, uint64_t>(const Element&)> where;
};

TEST_CASE("Every preset places each element where its shape says",
          "[kv_layout]") {
  const KvGeometry g = {.num_layers = 3,
                        .num_blocks = 5,
                        .block_tokens = 4,
                        .kv_heads = 2,
                        .head_dim = 3,
                        .dtype_bytes = 2};
  KvGeometry latent = g;
  latent.num_parts = 1;
  latent.kv_heads = 1;
  const uint64_t L = 3, N = 5, T = 4, H = 2, P = 2;
  using E = const Element&;
  std::vector<PresetCase> cases;
  for (BlockOrder order : {BlockOrder::kNHD, BlockOrder::kHND}) {
    const bool hnd = order == BlockOrder::kHND;
    // [N, L, P, T, H, D] / [N, L, P, H, T, D]
    cases.push_back(
        {"FlowKvBlockMajor", KvLayout::FlowKvBlockMajor(g, order), 1, order,
         [=](E e) {
           return std::pair<uint32_t, uint64_t>(
               0,
               hnd ? RowMajor(
                         {{N, e.b}, {L, e.l}, {P, e.p}, {H, e.h}, {T, e.t}})
                   : RowMajor(
                         {{N, e.b}, {L, e.l}, {P, e.p}, {T, e.t}, {H, e.h}}));
         }});
    // Per layer [2, N, T, H, D] / [2, N, H, T, D]
    cases.push_back(
        {"VllmFlashAttn", KvLayout::VllmFlashAttn(g, order), 3, order,
         [=](E e) {
           return std::pair<uint32_t, uint64_t>(
               e.l, hnd ? RowMajor({{P, e.p}, {N, e.b}, {H, e.h}, {T, e.t}})
                        : RowMajor({{P, e.p}, {N, e.b}, {T, e.t}, {H, e.h}}));
         }});
    // Per layer [N, 2, T, H, D] / [N, 2, H, T, D]
    cases.push_back(
        {"VllmFlashInfer", KvLayout::VllmFlashInfer(g, order), 3, order,
         [=](E e) {
           return std::pair<uint32_t, uint64_t>(
               e.l, hnd ? RowMajor({{N, e.b}, {P, e.p}, {H, e.h}, {T, e.t}})
                        : RowMajor({{N, e.b}, {P, e.p}, {T, e.t}, {H, e.h}}));
         }});
    // [N, L, 2, T, H, D] / [N, H, L, 2, T, D]
    cases.push_back(
        {"VllmCrossLayer", KvLayout::VllmCrossLayer(g, order), 1,
         hnd ? std::nullopt : std::optional(BlockOrder::kNHD), [=](E e) {
           return std::pair<uint32_t, uint64_t>(
               0,
               hnd ? RowMajor(
                         {{N, e.b}, {H, e.h}, {L, e.l}, {P, e.p}, {T, e.t}})
                   : RowMajor(
                         {{N, e.b}, {L, e.l}, {P, e.p}, {T, e.t}, {H, e.h}}));
         }});
  }
  // vLLM standardized: [L, N, T, H, P*D] and the other five orders.
  const std::pair<VllmKvLayout, std::function<uint64_t(E)>> vllm[] = {
      {VllmKvLayout::kLBNHC,
       [=](E e) {
         return RowMajor({{L, e.l}, {N, e.b}, {T, e.t}, {H, e.h}, {P, e.p}});
       }},
      {VllmKvLayout::kLBHNC,
       [=](E e) {
         return RowMajor({{L, e.l}, {N, e.b}, {H, e.h}, {T, e.t}, {P, e.p}});
       }},
      {VllmKvLayout::kLHBNC,
       [=](E e) {
         return RowMajor({{L, e.l}, {H, e.h}, {N, e.b}, {T, e.t}, {P, e.p}});
       }},
      {VllmKvLayout::kBLNHC,
       [=](E e) {
         return RowMajor({{N, e.b}, {L, e.l}, {T, e.t}, {H, e.h}, {P, e.p}});
       }},
      {VllmKvLayout::kBLHNC,
       [=](E e) {
         return RowMajor({{N, e.b}, {L, e.l}, {H, e.h}, {T, e.t}, {P, e.p}});
       }},
      {VllmKvLayout::kBHLNC,
       [=](E e) {
         return RowMajor({{N, e.b}, {H, e.h}, {L, e.l}, {T, e.t}, {P, e.p}});
       }},
  };
  for (const auto& [variant, index] : vllm) {
    cases.push_back(
        {"Vllm", KvLayout::Vllm(g, variant), 1, std::nullopt,
         [index](E e) { return std::pair<uint32_t, uint64_t>(0, index(e)); }});
    if (variant <= VllmKvLayout::kLHBNC) {  // Layer outermost.
      cases.push_back({"Vllm per layer",
                       KvLayout::Vllm(g, variant, RegionSplit::kOnePerLayer), 3,
                       std::nullopt, [=](E e) {
                         return std::pair<uint32_t, uint64_t>(
                             e.l, index(e) - e.l * N * T * H * P);
                       }});
    }
  }
  // SGLang: K buffers of layers 0..L-1, then V buffers; [N*T, H, D] each.
  cases.push_back(
      {"SglangMha", KvLayout::SglangMha(g), 6, BlockOrder::kNHD, [=](E e) {
         return std::pair<uint32_t, uint64_t>(
             e.p * L + e.l, RowMajor({{N * T, e.b * T + e.t}, {H, e.h}}));
       }});
  // TRT-LLM: [N, L, 2, H, T, D].
  cases.push_back(
      {"TrtllmBlockPool", KvLayout::TrtllmBlockPool(g), 1, BlockOrder::kHND,
       [=](E e) {
         return std::pair<uint32_t, uint64_t>(
             0, RowMajor({{N, e.b}, {L, e.l}, {P, e.p}, {H, e.h}, {T, e.t}}));
       }});
  // MLA: per layer [N, T, D].
  cases.push_back({"Mla", KvLayout::Mla(latent), 3, BlockOrder::kNHD, [=](E e) {
                     return std::pair<uint32_t, uint64_t>(
                         e.l, RowMajor({{N, e.b}, {T, e.t}}));
                   }});

  for (PresetCase& c : cases) {
    INFO(c.what << ": " << c.layout.status().ToString());
    REQUIRE(c.layout.ok());
    const KvLayout& layout = *c.layout;
    INFO(layout.ToString());
    const KvGeometry& lg = layout.geometry();
    CHECK(layout.num_regions() == c.regions);
    CHECK(layout.tile_order() == c.tile_order);
    uint64_t elements = 0;
    for (uint32_t l = 0; l < lg.num_layers; ++l)
      for (uint32_t p = 0; p < lg.num_parts; ++p)
        for (uint32_t b = 0; b < lg.num_blocks; ++b)
          for (uint32_t t = 0; t < lg.block_tokens; ++t)
            for (uint32_t h = 0; h < lg.kv_heads; ++h) {
              const auto [region, index] = c.where({l, p, b, t, h});
              const ByteAddress a =
                  layout.ElementAddress(l, static_cast<KvPart>(p), b, t, h);
              REQUIRE(a == ByteAddress{region, index * layout.head_bytes()});
              ++elements;
            }
    // Dense: the regions hold exactly the elements.
    CHECK(layout.total_bytes() == elements * layout.head_bytes());
    CHECK(layout.block_bytes() * lg.num_blocks == layout.total_bytes());
  }
}

TEST_CASE("Slice and block-list ranges cover exactly their elements",
          "[kv_layout]") {
  std::mt19937_64 rng(4);
  std::vector<KvLayout> layouts = testing::AllLayouts(kSmall);
  for (int i = 0; i < 200; ++i) {
    KvGeometry g = kSmall;
    g.num_parts = 1 + rng() % 2;
    layouts.push_back(testing::RandomStridedLayout(g, rng));
  }
  using Byte = std::pair<uint32_t, uint64_t>;
  for (const KvLayout& layout : layouts) {
    INFO(layout.ToString());
    const KvGeometry& g = layout.geometry();
    auto element_bytes = [&](uint32_t l, uint32_t p, uint32_t b, uint32_t t,
                             uint32_t h, std::set<Byte>* out) {
      const ByteAddress a =
          layout.ElementAddress(l, static_cast<KvPart>(p), b, t, h);
      for (uint64_t i = 0; i < layout.head_bytes(); ++i) {
        out->insert({a.region, a.offset + i});
      }
    };
    auto covered = [](const std::vector<ByteRange>& ranges) {
      std::set<Byte> bytes;
      for (const ByteRange& r : ranges) {
        for (uint64_t o = r.offset; o < r.end(); ++o)
          bytes.insert({r.region, o});
      }
      return bytes;
    };
    auto sorted_and_merged = [](const std::vector<ByteRange>& ranges) {
      for (size_t i = 1; i < ranges.size(); ++i) {
        const ByteRange& a = ranges[i - 1];
        const ByteRange& b = ranges[i];
        if (a.region == b.region && a.end() >= b.offset) return false;
        if (a.region > b.region) return false;
      }
      return true;
    };
    const KvSlice slice{.layer = g.num_layers - 1,
                        .part = static_cast<KvPart>(g.num_parts - 1),
                        .block = 3,
                        .token_begin = 1,
                        .token_end = 3,
                        .head_begin = g.kv_heads > 1 ? 1u : 0u,
                        .head_end = g.kv_heads};
    std::vector<ByteRange> ranges;
    REQUIRE(layout.AppendSliceRanges(slice, &ranges).ok());
    CHECK(sorted_and_merged(ranges));
    std::set<Byte> expected;
    for (uint32_t t = 1; t < 3; ++t)
      for (uint32_t h = slice.head_begin; h < slice.head_end; ++h)
        element_bytes(slice.layer, g.num_parts - 1, 3, t, h, &expected);
    CHECK(covered(ranges) == expected);

    // One run: its ranges in address order; every block of the list once.
    const BlockList list({{1, 2}, {4, 1}});
    const absl::StatusOr<std::vector<ByteRange>> blocks =
        layout.BlockListRanges(list);
    REQUIRE(blocks.ok());
    expected.clear();
    for (BlockId b : {1u, 2u, 4u})
      for (uint32_t l = 0; l < g.num_layers; ++l)
        for (uint32_t p = 0; p < g.num_parts; ++p)
          for (uint32_t t = 0; t < g.block_tokens; ++t)
            for (uint32_t h = 0; h < g.kv_heads; ++h)
              element_bytes(l, p, b, t, h, &expected);
    CHECK(covered(*blocks) == expected);
    const absl::StatusOr<std::vector<ByteRange>> one =
        layout.BlockListRanges(BlockList({{1, 2}}));
    CHECK(sorted_and_merged(*one));
  }
}

TEST_CASE("An out-of-range part is rejected, not read past the region",
          "[kv_layout]") {
  // Regression: AppendSliceRanges with KvPart 7 returned a range past the
  // region's end.
  const KvLayout layout = *KvLayout::Create({.geometry = kSmall});
  std::vector<ByteRange> ranges = {{0, 0, 1}};
  KvSlice slice{.token_end = 1, .head_end = 1};
  slice.part = static_cast<KvPart>(7);
  absl::Status st = layout.AppendSliceRanges(slice, &ranges);
  CHECK(st.code() == absl::StatusCode::kOutOfRange);
  CHECK_THAT(std::string(st.message()), Catch::Contains("part 7"));
  CHECK(ranges.size() == 1);
  // A one-part (MLA) layout has no part 1.
  KvGeometry latent = kSmall;
  latent.num_parts = 1;
  latent.kv_heads = 1;
  const KvLayout mla = *KvLayout::Mla(latent);
  slice.part = KvPart::kValue;
  st = mla.AppendSliceRanges(slice, &ranges);
  CHECK(st.code() == absl::StatusCode::kOutOfRange);
  CHECK_THAT(std::string(st.message()), Catch::Contains("num_parts 1"));
  slice.part = KvPart::kLatent;
  CHECK(mla.AppendSliceRanges(slice, &ranges).ok());
}

TEST_CASE("Out-of-range enums are rejected naming the field", "[kv_layout]") {
  // Regression: KvLayout::Create accepted a pool order of 9.
  auto expect = [](const absl::StatusOr<KvLayout>& layout,
                   const std::string& text) {
    INFO(layout.status().ToString());
    CHECK(layout.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(layout.status().message()), Catch::Contains(text));
  };
  KvLayoutSpec spec{.geometry = kSmall};
  spec.pool_order = static_cast<PoolOrder>(9);
  expect(KvLayout::Create(spec), "pool_order 9");
  spec = {.geometry = kSmall};
  spec.block_order = static_cast<BlockOrder>(2);
  expect(KvLayout::Create(spec), "block_order 2");
  spec = {.geometry = kSmall};
  spec.region_split = static_cast<RegionSplit>(5);
  expect(KvLayout::Create(spec), "region_split 5");
  expect(KvLayout::FlowKvBlockMajor(kSmall, static_cast<BlockOrder>(3)),
         "block_order 3");
  expect(KvLayout::Vllm(kSmall, static_cast<VllmKvLayout>(6)), "layout 6");
  expect(
      KvLayout::Vllm(kSmall, VllmKvLayout::kLBNHC, static_cast<RegionSplit>(2)),
      "region_split 2");
}

TEST_CASE("Presets reject geometry they cannot store", "[kv_layout]") {
  auto expect = [](const absl::StatusOr<KvLayout>& layout,
                   const std::string& text) {
    INFO(layout.status().ToString());
    CHECK(layout.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(layout.status().message()), Catch::Contains(text));
  };
  KvGeometry latent = kSmall;
  latent.num_parts = 1;
  expect(KvLayout::Mla(kSmall), "num_parts 2");
  expect(KvLayout::Mla(latent), "kv_heads 2");
  expect(KvLayout::SglangMha(latent), "num_parts 1");
  expect(KvLayout::VllmFlashAttn(latent), "num_parts 1");
  expect(KvLayout::VllmFlashInfer(latent), "num_parts 1");
  KvGeometry three = kSmall;
  three.num_parts = 3;
  expect(KvLayout::FlowKvBlockMajor(three), "num_parts 3");
  expect(
      KvLayout::Vllm(kSmall, VllmKvLayout::kBLNHC, RegionSplit::kOnePerLayer),
      "blocks outermost");
}

TEST_CASE("CreateStrided names aliasing, overlapping and overflowing tensors",
          "[kv_layout]") {
  const KvGeometry g = {.num_layers = 1,
                        .num_blocks = 4,
                        .block_tokens = 2,
                        .kv_heads = 2,
                        .head_dim = 2,
                        .dtype_bytes = 2};  // 4-byte head vectors
  // Dense NHD: head 4, token 8, block 16; K at 0, V at 64.
  const KvTensor k{.region = 0,
                   .offset = 0,
                   .block_stride = 16,
                   .token_stride = 8,
                   .head_stride = 4};
  KvTensor v = k;
  v.offset = 64;
  auto expect = [&](std::vector<KvTensor> tensors, const std::string& text) {
    const absl::StatusOr<KvLayout> layout =
        KvLayout::CreateStrided({.geometry = g, .tensors = tensors});
    INFO(layout.status().ToString());
    CHECK(layout.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(layout.status().message()), Catch::Contains(text));
  };
  REQUIRE(KvLayout::CreateStrided({.geometry = g, .tensors = {k, v}}).ok());
  expect({k}, "tensors has 1 entries, num_layers * num_parts = 2");
  KvTensor bad = v;
  bad.token_stride = 2;  // Below the 4-byte head vector.
  expect({k, bad}, "tensors[1] (layer 0, part 1): token_stride 2");
  bad = v;
  bad.head_stride = 8;  // = token_stride: (t, h+1) is (t+1, h).
  expect({k, bad}, "alias");
  bad = v;
  bad.block_stride = 12;  // Below the 16 bytes a block's tokens span.
  expect({k, bad}, "block_stride 12");
  bad = v;
  bad.offset = 60;  // Overlaps K's last block.
  expect({k, bad},
         "tensors[0] (layer 0, part 0) and tensors[1] (layer 0, "
         "part 1) overlap");
  bad = v;
  bad.offset = 4;  // Interleaved at a head: shares bytes.
  expect({k, bad}, "overlap");
  KvTensor k1 = k;
  bad = v;
  k1.region = bad.region = 1;  // Region 0 unused.
  expect({k1, bad}, "region 0 holds no tensor");
  bad = v;
  bad.region = 2;  // More regions than tensors.
  expect({k, bad}, "tensors[1] (layer 0, part 1): region 2");
  bad = v;
  bad.offset = UINT64_MAX - 8;
  expect({k, bad}, "extent overflows 64 bits");
  bad = v;
  bad.token_stride = 9;  // Different strides, extents overlapping.
  bad.block_stride = 32;
  bad.offset = 32;
  expect({k, bad}, "interleave");
  // Interleaving with the same strides is fine when no byte is shared:
  // K and V of a block adjacent (vLLM FlashInfer).
  KvTensor k2 = k, v2 = k;
  k2.block_stride = v2.block_stride = 32;
  v2.offset = 16;
  CHECK(KvLayout::CreateStrided({.geometry = g, .tensors = {k2, v2}}).ok());
}
}  // namespace
}  // namespace flowkv
