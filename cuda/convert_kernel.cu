#include <cstdint>
#include <cuda_runtime.h>

#include "cuda/convert_kernel.h"

namespace flowkv::internal {
namespace {

constexpr uint32_t kThreads = 256;

// KvLayout::TileAddress, resolved to a pointer: MUST match kv_layout.cc.
__device__ __forceinline__ uintptr_t TileBase(const ConvertPool& pool,
                                              const ConvertArgs& args,
                                              uint32_t layer, uint32_t kv,
                                              uint32_t block) {
  if (pool.block_major) {
    return pool.bases[0] +
           ((uint64_t{block} * args.num_layers + layer) * 2 + kv) *
               args.tile_bytes;
  }
  const uint64_t in_layer =
      (uint64_t{kv} * pool.num_blocks + block) * args.tile_bytes;
  if (pool.per_layer_regions) return pool.bases[layer] + in_layer;
  return pool.bases[0] +
         uint64_t{layer} * 2 * pool.num_blocks * args.tile_bytes + in_layer;
}

// One CUDA block per tile (block position, layer, K|V). The threads walk the
// destination tile in order, in units of `Word`; for each unit they find the
// head vector (token, head) it belongs to and read it from the source tile
// (KvLayout::ElementAddress: NHD index token * kv_heads + head, HND index
// head * block_tokens + token).
template <typename Word>
__global__ void __launch_bounds__(kThreads)
    ConvertTiles(const __grid_constant__ ConvertArgs args) {
  const uint32_t tile = blockIdx.x;
  const uint32_t kv = tile & 1u;
  const uint32_t layer = (tile >> 1) % args.num_layers;
  const uint32_t pos = (tile >> 1) / args.num_layers;
  const Word* src = reinterpret_cast<const Word*>(
      TileBase(args.src, args, layer, kv, args.src_ids[pos]));
  Word* dst = reinterpret_cast<Word*>(
      TileBase(args.dst, args, layer, kv, args.dst_ids[pos]));
  const uint32_t units = static_cast<uint32_t>(args.tile_bytes / sizeof(Word));
  if (args.src.hnd == args.dst.hnd) {
    for (uint32_t u = threadIdx.x; u < units; u += kThreads) dst[u] = src[u];
    return;
  }
  const uint32_t words = args.head_bytes / sizeof(Word);
  const uint32_t tokens = args.block_tokens;
  const uint32_t heads = args.kv_heads;
  for (uint32_t u = threadIdx.x; u < units; u += kThreads) {
    const uint32_t element = u / words;
    const uint32_t word = u - element * words;
    uint32_t src_element;
    if (args.dst.hnd) {  // element = head * tokens + token; source NHD.
      const uint32_t head = element / tokens;
      const uint32_t token = element - head * tokens;
      src_element = token * heads + head;
    } else {  // element = token * heads + head; source HND.
      const uint32_t token = element / heads;
      const uint32_t head = element - token * heads;
      src_element = head * tokens + token;
    }
    dst[u] = src[src_element * words + word];
  }
}

template <typename Word>
cudaError_t Launch(const ConvertArgs& args, cudaStream_t stream) {
  const uint32_t tiles = args.num_positions * args.num_layers * 2;
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
