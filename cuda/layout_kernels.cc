#include "flowkv/cuda/layout_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cuda_runtime_api.h>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

#include "absl/strings/str_format.h"
#include "cuda/convert_kernel.h"
#include "cuda/cuda_status.h"
#include "flowkv/layout_convert.h"
#include "lib/layout/staging.h"

namespace flowkv::cuda {
namespace {

static_assert(kMaxRegions == internal::kConvertMaxRegions);

// Stays below gridDim.x's limit of 2^31 - 1 tiles per launch.
constexpr uint64_t kMaxTilesPerLaunch = std::numeric_limits<int32_t>::max();

void FillPool(const KvLayout& layout, absl::Span<const uintptr_t> bases,
              internal::ConvertPool* pool) {
  std::fill(std::begin(pool->bases), std::end(pool->bases), 0);
  std::copy(bases.begin(), bases.end(), pool->bases);
  pool->num_blocks = layout.geometry().num_blocks;
  pool->block_major = layout.pool_order() == PoolOrder::kBlockMajor;
  pool->hnd = layout.block_order() == BlockOrder::kHND;
  pool->per_layer_regions = layout.region_split() == RegionSplit::kOnePerLayer;
}

// The widest access (16, 8, 4, 2 or 1 bytes) that divides head_bytes and
// every region base: every head vector is then aligned to it on both sides.
uint32_t WordBytes(uint64_t head_bytes, absl::Span<const uintptr_t> src,
                   absl::Span<const uintptr_t> dst) {
  uint64_t g = std::gcd(head_bytes, uint64_t{16});
  for (uintptr_t base : src) g = std::gcd(g, uint64_t{base});
  for (uintptr_t base : dst) g = std::gcd(g, uint64_t{base});
  return static_cast<uint32_t>(g);
}

}  // namespace

absl::Status ConvertBlocksAsync(const KvLayout& src_layout,
                                absl::Span<const void* const> src_region_bases,
                                const BlockList& src_blocks,
                                const KvLayout& dst_layout,
                                absl::Span<void* const> dst_region_bases,
                                const BlockList& dst_blocks, Stream stream) {
  if (absl::Status st =
          CheckConversion(src_layout, src_region_bases, src_blocks, dst_layout,
                          dst_region_bases, dst_blocks);
      !st.ok()) {
    return st;
  }
  for (const KvLayout* layout : {&src_layout, &dst_layout}) {
    if (layout->num_regions() > kMaxRegions) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ConvertBlocksAsync: %u regions > %u supported (%s)",
          layout->num_regions(), kMaxRegions, layout->ToString()));
    }
  }
  const KvGeometry& g = src_layout.geometry();
  if (src_layout.tile_bytes() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ConvertBlocksAsync: tile_bytes %u > %u supported",
        src_layout.tile_bytes(), std::numeric_limits<uint32_t>::max()));
  }
  if (src_blocks.empty()) return absl::OkStatus();

  std::vector<uintptr_t> src_bases(src_region_bases.size());
  for (size_t i = 0; i < src_bases.size(); ++i) {
    src_bases[i] = reinterpret_cast<uintptr_t>(src_region_bases[i]);
  }
  std::vector<uintptr_t> dst_bases(dst_region_bases.size());
  for (size_t i = 0; i < dst_bases.size(); ++i) {
    dst_bases[i] = reinterpret_cast<uintptr_t>(dst_region_bases[i]);
  }
  // ~20 KiB: on the heap, not the stack.
  auto args = std::make_unique<internal::ConvertArgs>();
  FillPool(src_layout, src_bases, &args->src);
  FillPool(dst_layout, dst_bases, &args->dst);
  args->num_layers = g.num_layers;
  args->block_tokens = g.block_tokens;
  args->kv_heads = g.kv_heads;
  args->head_bytes = static_cast<uint32_t>(src_layout.head_bytes());
  args->tile_bytes = src_layout.tile_bytes();
  const uint32_t word_bytes =
      WordBytes(src_layout.head_bytes(), src_bases, dst_bases);
  const uint64_t per_launch =
      std::min<uint64_t>(internal::kConvertBlocksPerLaunch,
                         kMaxTilesPerLaunch / (uint64_t{g.num_layers} * 2));
  if (per_launch == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ConvertBlocksAsync: num_layers %u > %u supported",
                        g.num_layers, kMaxTilesPerLaunch / 2));
  }

  const std::vector<BlockId> src_ids = src_blocks.ToIds();
  const std::vector<BlockId> dst_ids = dst_blocks.ToIds();
  for (size_t first = 0; first < src_ids.size(); first += per_launch) {
    const size_t n = std::min<size_t>(per_launch, src_ids.size() - first);
    args->num_positions = static_cast<uint32_t>(n);
    std::copy_n(src_ids.begin() + first, n, args->src_ids);
    std::copy_n(dst_ids.begin() + first, n, args->dst_ids);
    if (absl::Status st = internal::CudaStatus(
            internal::LaunchConvert(*args, word_bytes, stream),
            "ConvertBlocksAsync: kernel launch");
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

absl::Status PackBlocksAsync(const KvLayout& layout,
                             absl::Span<const void* const> region_bases,
                             const BlockList& blocks, void* staging,
                             uint64_t staging_bytes, Stream stream) {
  absl::StatusOr<KvLayout> staging_layout = internal::StagingLayoutFor(
      "PackBlocksAsync", layout, blocks, staging, staging_bytes);
  if (!staging_layout.ok()) return staging_layout.status();
  return ConvertBlocksAsync(layout, region_bases, blocks, *staging_layout,
                            {&staging, 1}, internal::StagingBlocks(blocks),
                            stream);
}

absl::Status UnpackBlocksAsync(const void* staging, uint64_t staging_bytes,
                               const KvLayout& layout,
                               absl::Span<void* const> region_bases,
                               const BlockList& blocks, Stream stream) {
  absl::StatusOr<KvLayout> staging_layout = internal::StagingLayoutFor(
      "UnpackBlocksAsync", layout, blocks, staging, staging_bytes);
  if (!staging_layout.ok()) return staging_layout.status();
  return ConvertBlocksAsync(*staging_layout, {&staging, 1},
                            internal::StagingBlocks(blocks), layout,
                            region_bases, blocks, stream);
}

}  // namespace flowkv::cuda
