// SPDX-License-Identifier: Apache-2.0
// Layouts for the fuzz targets: FuzzLayout builds a KvLayout (or the error
// a factory gives) from fuzz bytes, through every preset, KvLayout::Create
// and CreateStrided with a fuzzed tensor table; CheckLayout checks the
// contract every layout a factory returns must meet.

#ifndef FLOWKV_TESTS_FUZZ_FUZZ_LAYOUT_H_
#define FLOWKV_TESTS_FUZZ_FUZZ_LAYOUT_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "flowkv/kv_layout.h"
#include "tests/fuzz/fuzz_input.h"

namespace flowkv::fuzz {

// A geometry field: mostly small (the interesting layouts), sometimes 0 or
// anything up to 2^32 - 1 (the limits and the overflow checks).
inline uint32_t GeometryField(FuzzInput& in, uint32_t small_max) {
  const uint8_t how = in.U8();
  if (how < 0xF0) return 1 + how % small_max;
  if (how < 0xF8) return 0;
  return in.U32();
}

// `small` bounds every field to small values (for targets that enumerate
// elements).
inline KvGeometry FuzzGeometry(FuzzInput& in, bool small) {
  KvGeometry g;
  if (small) {
    g.num_layers = static_cast<uint32_t>(in.Range(1, 4));
    g.num_blocks = static_cast<uint32_t>(in.Range(1, 12));
    g.block_tokens = static_cast<uint32_t>(in.Range(1, 6));
    g.num_parts = static_cast<uint32_t>(in.Range(1, 2));
    g.kv_heads = g.num_parts == 1 && in.Bool()
                     ? 1
                     : static_cast<uint32_t>(in.Range(1, 4));
    g.head_dim = static_cast<uint32_t>(in.Range(1, 4));
    g.dtype_bytes = static_cast<uint32_t>(in.Range(1, 2));
    return g;
  }
  g.num_layers = GeometryField(in, 8);
  g.num_blocks = GeometryField(in, 16);
  g.block_tokens = GeometryField(in, 8);
  g.kv_heads = GeometryField(in, 8);
  g.head_dim = GeometryField(in, 8);
  g.dtype_bytes = GeometryField(in, 4);
  const uint8_t parts = in.U8();
  g.num_parts = parts < 0xF0 ? 1 + parts % 2 : parts % 4;
  return g;
}

// A stride: a multiple of a natural unit plus a little, or anything.
inline uint64_t FuzzStride(FuzzInput& in, uint64_t unit) {
  const uint8_t how = in.U8();
  if (how < 0xE0) return unit * (how % 8) + in.Range(0, 3);
  return in.U64();
}

inline KvStridedSpec FuzzStridedSpec(FuzzInput& in, const KvGeometry& g) {
  KvStridedSpec spec{.geometry = g, .tensors = {}};
  // The table size follows the geometry unless the input says otherwise.
  uint64_t count = uint64_t{g.num_layers} * g.num_parts;
  if (in.U8() >= 0xF0 || count > 64) count = in.Range(0, 64);
  const uint64_t head = uint64_t{g.head_dim} * g.dtype_bytes;
  const uint64_t tile = head * g.kv_heads * g.block_tokens;
  for (uint64_t i = 0; i < count; ++i) {
    KvTensor t;
    t.region = static_cast<uint32_t>(in.Range(0, 3));
    t.offset = in.U8() < 0xF0 ? tile * in.Range(0, 2 * count) + in.Range(0, 7)
                              : in.U64();
    t.block_stride = FuzzStride(in, tile * count);
    t.token_stride = FuzzStride(in, head * g.kv_heads);
    t.head_stride = FuzzStride(in, head);
    spec.tensors.push_back(t);
  }
  return spec;
}

// One of the factories for geometry `g`, chosen and fed by the input.
inline absl::StatusOr<KvLayout> FuzzLayoutOf(FuzzInput& in,
                                             const KvGeometry& g) {
  const uint8_t factory = in.U8() % 10;
  const auto order = static_cast<BlockOrder>(in.U8() % 3);
  switch (factory) {
    case 0: {
      KvLayoutSpec spec{.geometry = g,
                        .pool_order = static_cast<PoolOrder>(in.U8() % 3),
                        .block_order = order,
                        .region_split = static_cast<RegionSplit>(in.U8() % 3)};
      return KvLayout::Create(spec);
    }
    case 1:
      return KvLayout::FlowKvBlockMajor(g, order);
    case 2:
      return KvLayout::VllmFlashAttn(g, order);
    case 3:
      return KvLayout::VllmFlashInfer(g, order);
    case 4:
      return KvLayout::VllmCrossLayer(g, order);
    case 5:
      return KvLayout::Vllm(g, static_cast<VllmKvLayout>(in.U8() % 7),
                            static_cast<RegionSplit>(in.U8() % 3));
    case 6:
      return KvLayout::SglangMha(g);
    case 7:
      return KvLayout::Mla(g);
    case 8:
      return KvLayout::TrtllmBlockPool(g);
    default:
      return KvLayout::CreateStrided(FuzzStridedSpec(in, g));
  }
}

inline absl::StatusOr<KvLayout> FuzzLayout(FuzzInput& in, bool small) {
  const KvGeometry g = FuzzGeometry(in, small);
  return FuzzLayoutOf(in, g);
}

// Element counts up to this are checked one by one (and for overlap).
inline constexpr uint64_t kMaxEnumeratedElements = 1 << 13;

// Every element's head vector lies inside its region and, when the layout
// is small enough to enumerate, no two overlap; the sizes agree with each
// other. Larger layouts are checked at the corners and middle of every
// index range.
inline void CheckLayout(const KvLayout& layout) {
  const KvGeometry& g = layout.geometry();
  FUZZ_CHECK(g.num_layers > 0 && g.num_blocks > 0 && g.block_tokens > 0 &&
             g.kv_heads > 0 && g.head_dim > 0 && g.dtype_bytes > 0);
  FUZZ_CHECK(g.num_parts == 1 || g.num_parts == 2);
  FUZZ_CHECK(layout.tensors().size() == uint64_t{g.num_layers} * g.num_parts);
  FUZZ_CHECK(layout.num_regions() >= 1);
  const uint64_t head = layout.head_bytes();
  FUZZ_CHECK(head == uint64_t{g.head_dim} * g.dtype_bytes);
  uint64_t total = 0;
  uint64_t largest = 0;
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    FUZZ_CHECK(layout.region_bytes(r) >= head);
    total += layout.region_bytes(r);
    largest = std::max(largest, layout.region_bytes(r));
  }
  FUZZ_CHECK(total == layout.total_bytes());
  FUZZ_CHECK(largest == layout.region_bytes());
  for (const KvTensor& t : layout.tensors()) {
    FUZZ_CHECK(t.region < layout.num_regions());
  }

  const uint64_t elements = uint64_t{g.num_layers} * g.num_parts *
                            g.num_blocks * g.block_tokens * g.kv_heads;
  const bool all = elements <= kMaxEnumeratedElements;
  auto indices = [all](uint32_t n) {
    std::vector<uint32_t> out;
    if (all) {
      for (uint32_t i = 0; i < n; ++i) out.push_back(i);
    } else {
      out = {0, n / 2, n - 1};
      out.erase(std::unique(out.begin(), out.end()), out.end());
    }
    return out;
  };
  std::vector<ByteAddress> seen;
  for (uint32_t l : indices(g.num_layers)) {
    for (uint32_t p = 0; p < g.num_parts; ++p) {
      const auto part = static_cast<KvPart>(p);
      for (uint32_t b : indices(g.num_blocks)) {
        const ByteAddress tile = layout.TileAddress(l, part, b);
        FUZZ_CHECK(tile == layout.ElementAddress(l, part, b, 0, 0));
        for (uint32_t t : indices(g.block_tokens)) {
          for (uint32_t h : indices(g.kv_heads)) {
            const ByteAddress a = layout.ElementAddress(l, part, b, t, h);
            FUZZ_CHECK(a.region < layout.num_regions());
            const uint64_t size = layout.region_bytes(a.region);
            FUZZ_CHECK(a.offset <= size && size - a.offset >= head,
                       layout.ToString());
            if (all) seen.push_back(a);
          }
        }
      }
    }
  }
  std::sort(
      seen.begin(), seen.end(), [](const ByteAddress& a, const ByteAddress& b) {
        return a.region != b.region ? a.region < b.region : a.offset < b.offset;
      });
  for (size_t i = 1; i < seen.size(); ++i) {
    FUZZ_CHECK(seen[i].region != seen[i - 1].region ||
                   seen[i].offset >= seen[i - 1].offset + head,
               "two elements overlap: " + layout.ToString());
  }
}

}  // namespace flowkv::fuzz

#endif  // FLOWKV_TESTS_FUZZ_FUZZ_LAYOUT_H_
