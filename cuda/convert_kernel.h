// The block conversion kernel's launch interface: plain structs passed by
// value as the kernel's argument (no allocation, no host-device copy, so a
// launch is fully ordered on its stream). Compiled by nvcc and by the host
// compiler; no Abseil here.
//
// The address math is KvLayout's (include/flowkv/kv_layout.h, TileAddress and
// ElementAddress) replicated on the device: it MUST match KvLayout.
// tests/cuda_layout_test.cc compares the kernel's bytes with the CPU
// reference, which uses KvLayout itself.

#ifndef FLOWKV_CUDA_CONVERT_KERNEL_H_
#define FLOWKV_CUDA_CONVERT_KERNEL_H_

#include <cstdint>
#include <cuda_runtime_api.h>

namespace flowkv::internal {

// Matches flowkv::cuda::kMaxRegions.
inline constexpr uint32_t kConvertMaxRegions = 256;
// Block positions converted by one launch; longer lists take several.
inline constexpr uint32_t kConvertBlocksPerLaunch = 2048;

// One pool's order and region bases.
struct ConvertPool {
  // Region bases as addresses; only [0, num_regions) are read.
  uintptr_t bases[kConvertMaxRegions];
  uint32_t num_blocks;
  // PoolOrder::kBlockMajor (else layer-major).
  bool block_major;
  // BlockOrder::kHND (else NHD).
  bool hnd;
  // RegionSplit::kOnePerLayer (region = layer).
  bool per_layer_regions;
};

// One launch: copies `num_positions` blocks, position i from src block
// src_ids[i] to dst block dst_ids[i], every layer, K and V.
struct ConvertArgs {
  ConvertPool src;
  ConvertPool dst;
  // The shared geometry.
  uint32_t num_layers;
  uint32_t block_tokens;
  uint32_t kv_heads;
  uint32_t head_bytes;
  uint64_t tile_bytes;  // block_tokens * kv_heads * head_bytes, < 2^32
  uint32_t num_positions;
  uint32_t src_ids[kConvertBlocksPerLaunch];
  uint32_t dst_ids[kConvertBlocksPerLaunch];
};

// Enqueues the conversion of `args` on `stream`, copying `word_bytes` (1, 2,
// 4, 8 or 16) bytes per access. REQUIRES: head_bytes and every used region
// base are multiples of word_bytes. Returns the launch's error.
cudaError_t LaunchConvert(const ConvertArgs& args, uint32_t word_bytes,
                          cudaStream_t stream);

}  // namespace flowkv::internal

#endif  // FLOWKV_CUDA_CONVERT_KERNEL_H_
