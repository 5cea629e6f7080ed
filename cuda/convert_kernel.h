// SPDX-License-Identifier: Apache-2.0
// The block conversion kernel's launch interface: plain structs passed by
// value as the kernel's argument (no allocation, no host-device copy, so a
// launch is fully ordered on its stream). Compiled by nvcc and by the host
// compiler; no Abseil here.
//
// The address math is KvLayout's (include/flowkv/kv_layout.h): each (layer,
// part) tensor is a base address and block, token and head strides, filled
// in from the layout's tensor table by cuda/layout_kernels.cc.
// tests/cuda/cuda_layout_test.cc compares the kernel's bytes with the CPU
// reference, which uses KvLayout itself.

#ifndef FLOWKV_CUDA_CONVERT_KERNEL_H_
#define FLOWKV_CUDA_CONVERT_KERNEL_H_

#include <cstdint>
#include <cuda_runtime_api.h>

namespace flowkv::internal {

// Matches flowkv::cuda::kMaxTensors.
inline constexpr uint32_t kConvertMaxTensors = 256;
// Block positions converted by one launch; longer lists take several.
inline constexpr uint32_t kConvertBlocksPerLaunch = 1024;

// One (layer, part) tensor of a pool: element (block, token, head) starts at
// base + block * block_stride + token * token_stride + head * head_stride.
struct ConvertTensor {
  uintptr_t base;  // region base + the tensor's offset
  uint64_t block_stride;
  uint64_t token_stride;
  uint64_t head_stride;
};

// One launch: copies `num_positions` blocks, position i from src block
// src_ids[i] to dst block dst_ids[i], every tensor (about 24 KiB).
struct ConvertArgs {
  // Tensor i of both pools is the same (layer, part); [0, num_tensors).
  ConvertTensor src[kConvertMaxTensors];
  ConvertTensor dst[kConvertMaxTensors];
  uint32_t num_tensors;
  // The shared geometry.
  uint32_t block_tokens;
  uint32_t kv_heads;
  uint32_t head_bytes;
  uint64_t tile_bytes;  // block_tokens * kv_heads * head_bytes, < 2^32
  // Both pools store every tile densely in the same order: copy tiles as
  // flat byte ranges.
  bool same_dense_tiles;
  // Walk a tile's head vectors token by token (heads inner), else head by
  // head: the destination's order, so writes coalesce.
  bool dst_token_major;
  uint32_t num_positions;
  uint32_t src_ids[kConvertBlocksPerLaunch];
  uint32_t dst_ids[kConvertBlocksPerLaunch];
};

// Enqueues the conversion of `args` on `stream`, copying `word_bytes` (1, 2,
// 4, 8 or 16) bytes per access. REQUIRES: head_bytes, every tensor base and
// every stride are multiples of word_bytes. Returns the launch's error.
cudaError_t LaunchConvert(const ConvertArgs& args, uint32_t word_bytes,
                          cudaStream_t stream);

}  // namespace flowkv::internal

#endif  // FLOWKV_CUDA_CONVERT_KERNEL_H_
