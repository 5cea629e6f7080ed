// SPDX-License-Identifier: Apache-2.0
// Block conversion on the host: CheckConversion, ConvertBlocks (the CPU
// reference of the CUDA kernels), PackedLayout, PackBlocks, UnpackBlocks
// and the staging checks shared with cuda/ (lib/layout/pack_buffer.h).
#include "flowkv/layout_convert.h"

#include <cstddef>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/layout/pack_buffer.h"

namespace flowkv {
namespace {

absl::Status CheckBases(const char* side, const KvLayout& layout,
                        size_t num_bases, const void* const* bases) {
  if (num_bases != layout.num_regions()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ConvertBlocks: %s_region_bases has %u entries, the %s layout has %u "
        "regions",
        side, num_bases, side, layout.num_regions()));
  }
  for (size_t i = 0; i < num_bases; ++i) {
    if (bases[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ConvertBlocks: %s_region_bases[%u] is null", side, i));
    }
  }
  return absl::OkStatus();
}

// The byte address of `a` in a pool given by its region bases.
template <typename Byte>
Byte* At(absl::Span<Byte* const> bases, const ByteAddress& a) {
  return bases[a.region] + a.offset;
}

}  // namespace

absl::Status CheckConversion(const KvLayout& src_layout,
                             absl::Span<const void* const> src_region_bases,
                             const BlockList& src_blocks,
                             const KvLayout& dst_layout,
                             absl::Span<void* const> dst_region_bases,
                             const BlockList& dst_blocks) {
  const KvGeometry& s = src_layout.geometry();
  const KvGeometry& d = dst_layout.geometry();
  const std::tuple<const char*, uint32_t, uint32_t> fields[] = {
      {"num_layers", s.num_layers, d.num_layers},
      {"num_parts", s.num_parts, d.num_parts},
      {"block_tokens", s.block_tokens, d.block_tokens},
      {"kv_heads", s.kv_heads, d.kv_heads},
      {"head_dim", s.head_dim, d.head_dim},
      {"dtype_bytes", s.dtype_bytes, d.dtype_bytes}};
  for (const auto& [name, src_value, dst_value] : fields) {
    if (src_value != dst_value) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ConvertBlocks: %s differs: source %u, destination %u", name,
          src_value, dst_value));
    }
  }
  if (absl::Status st = CheckBases("src", src_layout, src_region_bases.size(),
                                   src_region_bases.data());
      !st.ok()) {
    return st;
  }
  if (absl::Status st = CheckBases("dst", dst_layout, dst_region_bases.size(),
                                   dst_region_bases.data());
      !st.ok()) {
    return st;
  }
  if (src_blocks.num_blocks() != dst_blocks.num_blocks()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ConvertBlocks: src_blocks holds %u blocks, dst_blocks %u",
        src_blocks.num_blocks(), dst_blocks.num_blocks()));
  }
  if (absl::Status st = src_layout.CheckBlocks(src_blocks); !st.ok()) {
    return absl::OutOfRangeError(
        absl::StrCat("ConvertBlocks: src_blocks: ", st.message()));
  }
  if (absl::Status st = dst_layout.CheckBlocks(dst_blocks); !st.ok()) {
    return absl::OutOfRangeError(
        absl::StrCat("ConvertBlocks: dst_blocks: ", st.message()));
  }
  return absl::OkStatus();
}

absl::Status ConvertBlocks(const KvLayout& src_layout,
                           absl::Span<const void* const> src_region_bases,
                           const BlockList& src_blocks,
                           const KvLayout& dst_layout,
                           absl::Span<void* const> dst_region_bases,
                           const BlockList& dst_blocks) {
  if (absl::Status st =
          CheckConversion(src_layout, src_region_bases, src_blocks, dst_layout,
                          dst_region_bases, dst_blocks);
      !st.ok()) {
    return st;
  }
  std::vector<const std::byte*> src_bases(src_region_bases.size());
  for (size_t i = 0; i < src_bases.size(); ++i) {
    src_bases[i] = static_cast<const std::byte*>(src_region_bases[i]);
  }
  std::vector<std::byte*> dst_bases(dst_region_bases.size());
  for (size_t i = 0; i < dst_bases.size(); ++i) {
    dst_bases[i] = static_cast<std::byte*>(dst_region_bases[i]);
  }
  const absl::Span<const std::byte* const> src(src_bases);
  const absl::Span<std::byte* const> dst(dst_bases);

  const KvGeometry& g = src_layout.geometry();
  const uint64_t head_bytes = src_layout.head_bytes();
  const uint64_t tile_bytes = src_layout.tile_bytes();
  // Tiles stored densely in the same order on both sides are one memcpy.
  const bool same_dense_tiles =
      src_layout.tile_order().has_value() &&
      src_layout.tile_order() == dst_layout.tile_order();
  const std::vector<BlockId> src_ids = src_blocks.ToIds();
  const std::vector<BlockId> dst_ids = dst_blocks.ToIds();
  for (size_t i = 0; i < src_ids.size(); ++i) {
    for (uint32_t layer = 0; layer < g.num_layers; ++layer) {
      for (uint32_t p = 0; p < g.num_parts; ++p) {
        const auto part = static_cast<KvPart>(p);
        const std::byte* from =
            At(src, src_layout.TileAddress(layer, part, src_ids[i]));
        std::byte* to =
            At(dst, dst_layout.TileAddress(layer, part, dst_ids[i]));
        if (same_dense_tiles) {
          std::memcpy(to, from, tile_bytes);
          continue;
        }
        const KvTensor& st = src_layout.tensor(layer, part);
        const KvTensor& dt = dst_layout.tensor(layer, part);
        // A token's heads contiguous on both sides: one memcpy per token.
        const bool rows = g.kv_heads == 1 || (st.head_stride == head_bytes &&
                                              dt.head_stride == head_bytes);
        for (uint32_t token = 0; token < g.block_tokens; ++token) {
          const std::byte* row_from = from + token * st.token_stride;
          std::byte* row_to = to + token * dt.token_stride;
          if (rows) {
            std::memcpy(row_to, row_from, head_bytes * g.kv_heads);
            continue;
          }
          for (uint32_t head = 0; head < g.kv_heads; ++head) {
            std::memcpy(row_to + head * dt.head_stride,
                        row_from + head * st.head_stride, head_bytes);
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<KvLayout> PackedLayout(const KvLayout& layout,
                                      uint32_t num_blocks) {
  if (num_blocks == 0) {
    return absl::InvalidArgumentError("PackedLayout: num_blocks must be > 0");
  }
  KvGeometry geometry = layout.geometry();
  geometry.num_blocks = num_blocks;
  return KvLayout::FlowKvBlockMajor(
      geometry, layout.tile_order().value_or(BlockOrder::kNHD));
}

uint64_t PackedBytes(const KvLayout& layout, const BlockList& blocks) {
  return blocks.num_blocks() * layout.block_bytes();
}

namespace internal {

absl::StatusOr<KvLayout> PackBufferLayoutFor(const char* caller,
                                             const KvLayout& layout,
                                             const BlockList& blocks,
                                             const void* staging,
                                             uint64_t staging_bytes) {
  if (staging == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: staging is null", caller));
  }
  if (blocks.num_blocks() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %u blocks > %u", caller, blocks.num_blocks(),
                        std::numeric_limits<uint32_t>::max()));
  }
  // At most (2^32 - 1) * block_bytes: may still overflow for a list that
  // repeats blocks of a huge pool, which no buffer can hold anyway.
  uint64_t needed = 0;
  if (__builtin_mul_overflow(blocks.num_blocks(), layout.block_bytes(),
                             &needed) ||
      staging_bytes < needed) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: staging_bytes %u < %u bytes needed for %u blocks of %u bytes",
        caller, staging_bytes, needed, blocks.num_blocks(),
        layout.block_bytes()));
  }
  const auto n = static_cast<uint32_t>(blocks.num_blocks());
  return PackedLayout(layout, n == 0 ? 1 : n);
}

BlockList PackBufferBlocks(const BlockList& blocks) {
  BlockList staged;
  staged.Append(0, static_cast<uint32_t>(blocks.num_blocks()));
  return staged;
}

}  // namespace internal

absl::Status PackBlocks(const KvLayout& layout,
                        absl::Span<const void* const> region_bases,
                        const BlockList& blocks, void* staging,
                        uint64_t staging_bytes) {
  absl::StatusOr<KvLayout> staging_layout = internal::PackBufferLayoutFor(
      "PackBlocks", layout, blocks, staging, staging_bytes);
  if (!staging_layout.ok()) return staging_layout.status();
  return ConvertBlocks(layout, region_bases, blocks, *staging_layout,
                       {&staging, 1}, internal::PackBufferBlocks(blocks));
}

absl::Status UnpackBlocks(const void* staging, uint64_t staging_bytes,
                          const KvLayout& layout,
                          absl::Span<void* const> region_bases,
                          const BlockList& blocks) {
  absl::StatusOr<KvLayout> staging_layout = internal::PackBufferLayoutFor(
      "UnpackBlocks", layout, blocks, staging, staging_bytes);
  if (!staging_layout.ok()) return staging_layout.status();
  return ConvertBlocks(*staging_layout, {&staging, 1},
                       internal::PackBufferBlocks(blocks), layout, region_bases,
                       blocks);
}

}  // namespace flowkv
