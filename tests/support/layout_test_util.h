// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the layout tests: every preset layout for a geometry,
// random strided layouts, random block lists and a host pool filled with
// random bytes.
#ifndef FLOWKV_TESTS_SUPPORT_LAYOUT_TEST_UTIL_H_
#define FLOWKV_TESTS_SUPPORT_LAYOUT_TEST_UTIL_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <numeric>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/types/span.h"
#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"

namespace flowkv::testing {

inline KvLayout MakeLayout(const KvGeometry& geometry, PoolOrder pool_order,
                           BlockOrder block_order, RegionSplit split) {
  absl::StatusOr<KvLayout> layout =
      KvLayout::Create({.geometry = geometry,
                        .pool_order = pool_order,
                        .block_order = block_order,
                        .region_split = split});
  INFO(layout.status().ToString());
  REQUIRE(layout.ok());
  return *layout;
}

inline KvLayout Must(absl::StatusOr<KvLayout> layout) {
  INFO(layout.status().ToString());
  REQUIRE(layout.ok());
  return *std::move(layout);
}

// Every preset (and KvLayoutSpec order) that accepts `geometry`, each byte
// layout once (presets that place bytes alike, such as FlowKvBlockMajor and
// VllmCrossLayer in NHD, appear under the first name).
inline std::vector<KvLayout> AllLayouts(const KvGeometry& g) {
  std::vector<absl::StatusOr<KvLayout>> all;
  for (BlockOrder order : {BlockOrder::kNHD, BlockOrder::kHND}) {
    all.push_back(KvLayout::FlowKvBlockMajor(g, order));
    all.push_back(KvLayout::Create({.geometry = g,
                                    .pool_order = PoolOrder::kLayerMajor,
                                    .block_order = order}));
    all.push_back(
        KvLayout::Create({.geometry = g,
                          .pool_order = PoolOrder::kLayerMajor,
                          .block_order = order,
                          .region_split = RegionSplit::kOnePerLayer}));
    all.push_back(KvLayout::VllmFlashAttn(g, order));
    all.push_back(KvLayout::VllmFlashInfer(g, order));
    all.push_back(KvLayout::VllmCrossLayer(g, order));
  }
  for (uint8_t v = 0; v <= static_cast<uint8_t>(VllmKvLayout::kBHLNC); ++v) {
    for (RegionSplit split :
         {RegionSplit::kOnePerPool, RegionSplit::kOnePerLayer}) {
      all.push_back(KvLayout::Vllm(g, static_cast<VllmKvLayout>(v), split));
    }
  }
  all.push_back(KvLayout::SglangMha(g));
  all.push_back(KvLayout::Mla(g));
  all.push_back(KvLayout::TrtllmBlockPool(g));
  std::vector<KvLayout> layouts;
  for (absl::StatusOr<KvLayout>& layout : all) {
    if (!layout.ok()) continue;  // A preset that does not take `g`.
    if (std::find(layouts.begin(), layouts.end(), *layout) == layouts.end()) {
      layouts.push_back(*std::move(layout));
    }
  }
  return layouts;
}

// A random valid strided layout of `g`: the five dimensions (layer, block,
// part, head, token) in random order with random padding after each, some
// of layer and part indexing regions instead of bytes, a random start
// offset; sometimes layers in a shuffled order (no affine rule), sometimes
// every tensor in its own region with its own order (per-tensor strides).
inline KvLayout RandomStridedLayout(const KvGeometry& g, std::mt19937_64& rng) {
  enum { kL, kB, kP, kH, kT };
  const std::array<uint64_t, 5> extent = {
      g.num_layers, g.num_blocks, g.num_parts, g.kv_heads, g.block_tokens};
  const uint64_t head_bytes = uint64_t{g.head_dim} * g.dtype_bytes;
  auto pad = [&] {
    switch (rng() % 4) {
      case 0:
        return uint64_t{rng() % 7};
      case 1:
        return head_bytes * (rng() % 3);
      default:
        return uint64_t{0};
    }
  };
  // Strides of `dims` (innermost last), dense plus padding.
  auto strides = [&](const std::vector<int>& dims) {
    std::array<uint64_t, 5> s = {0, 0, 0, 0, 0};
    uint64_t cur = head_bytes + pad();
    for (auto it = dims.rbegin(); it != dims.rend(); ++it) {
      s[*it] = cur;
      cur = cur * extent[*it] + pad();
    }
    return s;
  };
  std::vector<int> layer_slot(g.num_layers);
  std::iota(layer_slot.begin(), layer_slot.end(), 0);
  if (rng() % 4 == 0) std::shuffle(layer_slot.begin(), layer_slot.end(), rng);
  KvStridedSpec spec{.geometry = g, .tensors = {}};
  if (rng() % 6 == 0) {  // One region per tensor, each its own order.
    for (uint32_t i = 0; i < g.num_layers * g.num_parts; ++i) {
      std::vector<int> dims = {kB, kH, kT};
      std::shuffle(dims.begin(), dims.end(), rng);
      const std::array<uint64_t, 5> s = strides(dims);
      spec.tensors.push_back({.region = i,
                              .offset = rng() % 64,
                              .block_stride = s[kB],
                              .token_stride = s[kT],
                              .head_stride = s[kH]});
    }
    return Must(KvLayout::CreateStrided(spec));
  }
  std::vector<int> dims = {kL, kB, kP, kH, kT};
  std::shuffle(dims.begin(), dims.end(), rng);
  std::vector<int> region_dims;
  for (int d : {kL, kP}) {
    if (rng() % 3 == 0) {
      region_dims.push_back(d);
      dims.erase(std::find(dims.begin(), dims.end(), d));
    }
  }
  std::shuffle(region_dims.begin(), region_dims.end(), rng);
  const std::array<uint64_t, 5> s = strides(dims);
  const uint64_t base = rng() % 64;
  for (uint32_t l = 0; l < g.num_layers; ++l) {
    for (uint32_t p = 0; p < g.num_parts; ++p) {
      const std::array<uint64_t, 5> index = {uint64_t(layer_slot[l]), 0, p, 0,
                                             0};
      uint64_t region = 0;
      for (int d : region_dims) region = region * extent[d] + index[d];
      spec.tensors.push_back(
          {.region = static_cast<uint32_t>(region),
           .offset = base + index[kL] * s[kL] + index[kP] * s[kP],
           .block_stride = s[kB],
           .token_stride = s[kT],
           .head_stride = s[kH]});
    }
  }
  return Must(KvLayout::CreateStrided(spec));
}

// `count` distinct random blocks of [0, num_blocks), in random order, with
// some consecutive ids so the list has runs of several blocks.
template <typename Rng>
BlockList RandomBlocks(uint32_t num_blocks, uint32_t count, Rng& rng) {
  std::vector<BlockId> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  ids.resize(count);
  // Sort a random prefix so it forms runs.
  std::sort(ids.begin(), ids.begin() + count / 2);
  return BlockList::FromIds(ids);
}

// A pool in host memory: one byte vector per region, each region_bytes(r)
// long, filled with random bytes or a sentinel.
struct HostPool {
  template <typename Rng>
  HostPool(const KvLayout& layout, Rng& rng) : layout(layout) {
    for (uint32_t r = 0; r < layout.num_regions(); ++r) {
      regions.emplace_back(layout.region_bytes(r));
      for (std::byte& b : regions.back()) b = static_cast<std::byte>(rng());
    }
  }
  HostPool(const KvLayout& layout, std::byte sentinel) : layout(layout) {
    for (uint32_t r = 0; r < layout.num_regions(); ++r) {
      regions.emplace_back(layout.region_bytes(r), sentinel);
    }
  }
  std::vector<const void*> ConstBases() const {
    std::vector<const void*> bases;
    for (const auto& region : regions) bases.push_back(region.data());
    return bases;
  }
  std::vector<void*> Bases() {
    std::vector<void*> bases;
    for (auto& region : regions) bases.push_back(region.data());
    return bases;
  }
  std::vector<absl::Span<const uint8_t>> ConstSpans() const {
    std::vector<absl::Span<const uint8_t>> spans;
    for (const auto& r : regions) {
      spans.emplace_back(reinterpret_cast<const uint8_t*>(r.data()), r.size());
    }
    return spans;
  }
  std::vector<absl::Span<uint8_t>> Spans() {
    std::vector<absl::Span<uint8_t>> spans;
    for (auto& r : regions) {
      spans.emplace_back(reinterpret_cast<uint8_t*>(r.data()), r.size());
    }
    return spans;
  }
  const std::byte* At(const ByteAddress& a) const {
    return regions[a.region].data() + a.offset;
  }
  std::byte* At(const ByteAddress& a) {
    return regions[a.region].data() + a.offset;
  }

  KvLayout layout;
  std::vector<std::vector<std::byte>> regions;
};

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_LAYOUT_TEST_UTIL_H_
