// SPDX-License-Identifier: Apache-2.0
// The host side of the CUDA layout kernels: ConvertBlocksAsync,
// PackBlocksAsync, UnpackBlocksAsync (validation shared with the CPU
// reference, the tensor tables resolved to device addresses, launch
// splitting). The kernel is cuda/convert_kernel.cu.
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
#include "lib/layout/pack_buffer.h"

namespace flowkv::cuda {
namespace {

static_assert(kMaxTensors == internal::kConvertMaxTensors);

// Stays below gridDim.x's limit of 2^31 - 1 tiles per launch.
constexpr uint64_t kMaxTilesPerLaunch = std::numeric_limits<int32_t>::max();

// Resolves the layout's tensor table against the region bases. Returns the
// gcd of 16 and every base and stride, so that `word` divides them all.
uint64_t FillTensors(const KvLayout& layout, absl::Span<const uintptr_t> bases,
                     internal::ConvertTensor* out, uint64_t word) {
  const KvGeometry& g = layout.geometry();
  for (size_t i = 0; i < layout.tensors().size(); ++i) {
    const KvTensor& t = layout.tensors()[i];
    out[i] = {bases[t.region] + t.offset, t.block_stride, t.token_stride,
              t.head_stride};
    word = std::gcd(word, uint64_t{out[i].base});
    // A stride whose dimension has one index is never used.
    if (g.num_blocks > 1) word = std::gcd(word, t.block_stride);
    if (g.block_tokens > 1) word = std::gcd(word, t.token_stride);
    if (g.kv_heads > 1) word = std::gcd(word, t.head_stride);
  }
  return word;
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
  const KvGeometry& g = src_layout.geometry();
  const uint64_t num_tensors = src_layout.tensors().size();
  if (num_tensors > kMaxTensors) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ConvertBlocksAsync: %u tensors (num_layers * num_parts) > %u "
        "supported (%s)",
        num_tensors, kMaxTensors, src_layout.ToString()));
  }
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
  // ~24 KiB: on the heap, not the stack.
  auto args = std::make_unique<internal::ConvertArgs>();
  uint64_t word = std::gcd(src_layout.head_bytes(), uint64_t{16});
  word = FillTensors(src_layout, src_bases, args->src, word);
  word = FillTensors(dst_layout, dst_bases, args->dst, word);
  args->num_tensors = static_cast<uint32_t>(num_tensors);
  args->block_tokens = g.block_tokens;
  args->kv_heads = g.kv_heads;
  args->head_bytes = static_cast<uint32_t>(src_layout.head_bytes());
  args->tile_bytes = src_layout.tile_bytes();
  args->same_dense_tiles = src_layout.tile_order().has_value() &&
                           src_layout.tile_order() == dst_layout.tile_order();
  const KvTensor& dst0 = dst_layout.tensors()[0];
  args->dst_token_major = dst0.head_stride <= dst0.token_stride;
  const uint64_t per_launch = std::min<uint64_t>(
      internal::kConvertBlocksPerLaunch, kMaxTilesPerLaunch / num_tensors);

  const std::vector<BlockId> src_ids = src_blocks.ToIds();
  const std::vector<BlockId> dst_ids = dst_blocks.ToIds();
  for (size_t first = 0; first < src_ids.size(); first += per_launch) {
    const size_t n = std::min<size_t>(per_launch, src_ids.size() - first);
    args->num_positions = static_cast<uint32_t>(n);
    std::copy_n(src_ids.begin() + first, n, args->src_ids);
    std::copy_n(dst_ids.begin() + first, n, args->dst_ids);
    if (absl::Status st = internal::CudaStatus(
            internal::LaunchConvert(*args, static_cast<uint32_t>(word), stream),
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
  absl::StatusOr<KvLayout> staging_layout = internal::PackBufferLayoutFor(
      "PackBlocksAsync", layout, blocks, staging, staging_bytes);
  if (!staging_layout.ok()) return staging_layout.status();
  return ConvertBlocksAsync(layout, region_bases, blocks, *staging_layout,
                            {&staging, 1}, internal::PackBufferBlocks(blocks),
                            stream);
}

absl::Status UnpackBlocksAsync(const void* staging, uint64_t staging_bytes,
                               const KvLayout& layout,
                               absl::Span<void* const> region_bases,
                               const BlockList& blocks, Stream stream) {
  absl::StatusOr<KvLayout> staging_layout = internal::PackBufferLayoutFor(
      "UnpackBlocksAsync", layout, blocks, staging, staging_bytes);
  if (!staging_layout.ok()) return staging_layout.status();
  return ConvertBlocksAsync(*staging_layout, {&staging, 1},
                            internal::PackBufferBlocks(blocks), layout,
                            region_bases, blocks, stream);
}

}  // namespace flowkv::cuda
