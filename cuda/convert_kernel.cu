// SPDX-License-Identifier: Apache-2.0
// The block conversion kernel: one CUDA block per (block position, tensor),
// copying one tile between two strided KvLayouts (cuda/convert_kernel.h).
#include <cstdint>
#include <cuda_runtime.h>

#include "cuda/convert_kernel.h"

namespace flowkv::internal {
namespace {

constexpr uint32_t kThreads = 256;

// One CUDA block per tile (block position, tensor). Dense tiles in the same
// order are copied as flat ranges; otherwise the threads walk the tile's head
// vectors in the destination's order, in units of `Word`, each unit at
// (token, head, word) of KvLayout::ElementAddress on both sides.
template <typename Word>
__global__ void __launch_bounds__(kThreads)
    ConvertTiles(const __grid_constant__ ConvertArgs args) {
  const uint32_t tensor = blockIdx.x % args.num_tensors;
  const uint32_t pos = blockIdx.x / args.num_tensors;
  const ConvertTensor& s = args.src[tensor];
  const ConvertTensor& d = args.dst[tensor];
  const uintptr_t src_tile = s.base + args.src_ids[pos] * s.block_stride;
  const uintptr_t dst_tile = d.base + args.dst_ids[pos] * d.block_stride;
  const uint32_t units = static_cast<uint32_t>(args.tile_bytes / sizeof(Word));
  if (args.same_dense_tiles) {
    const Word* src = reinterpret_cast<const Word*>(src_tile);
    Word* dst = reinterpret_cast<Word*>(dst_tile);
    for (uint32_t u = threadIdx.x; u < units; u += kThreads) dst[u] = src[u];
    return;
  }
  const uint32_t words = args.head_bytes / sizeof(Word);
  const uint32_t tokens = args.block_tokens;
  const uint32_t heads = args.kv_heads;
  for (uint32_t u = threadIdx.x; u < units; u += kThreads) {
    const uint32_t element = u / words;
    const uint32_t word = u - element * words;
    uint32_t token;
    uint32_t head;
    if (args.dst_token_major) {
      token = element / heads;
      head = element - token * heads;
    } else {
      head = element / tokens;
      token = element - head * tokens;
    }
    const Word* src = reinterpret_cast<const Word*>(
        src_tile + token * s.token_stride + head * s.head_stride);
    Word* dst = reinterpret_cast<Word*>(dst_tile + token * d.token_stride +
                                        head * d.head_stride);
    dst[word] = src[word];
  }
}

template <typename Word>
cudaError_t Launch(const ConvertArgs& args, cudaStream_t stream) {
  const uint32_t tiles = args.num_positions * args.num_tensors;
  ConvertTiles<Word><<<tiles, kThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchConvert(const ConvertArgs& args, uint32_t word_bytes,
                          cudaStream_t stream) {
  switch (word_bytes) {
    case 16:
      return Launch<uint4>(args, stream);
    case 8:
      return Launch<uint2>(args, stream);
    case 4:
      return Launch<uint32_t>(args, stream);
    case 2:
      return Launch<uint16_t>(args, stream);
    case 1:
      return Launch<uint8_t>(args, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace flowkv::internal
