// SPDX-License-Identifier: Apache-2.0
// Throughput of the CUDA layout kernels on a Llama-3.1-8B sized pool
// (L=32, 16-token blocks, 8 KV heads, head_dim 128, fp16: 64 KiB per block
// and layer, 2 MiB per block). Each iteration converts a request of 512
// blocks (8,192 tokens, 1 GiB of KV) whose source blocks are scattered over
// the pool. bytes_per_second counts bytes copied (device memory traffic is
// twice that). Skipped without a GPU.

#include <algorithm>
#include <cstdint>
#include <cuda_runtime_api.h>
#include <numeric>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "flowkv/block_list.h"
#include "flowkv/cuda/layout_kernels.h"
#include "flowkv/kv_layout.h"
#include "flowkv/layout_convert.h"

namespace flowkv {
namespace {

constexpr uint32_t kPoolBlocks = 640;
constexpr uint32_t kRequestBlocks = 512;

const KvGeometry kLlama8B = {.num_layers = 32,
                             .num_blocks = kPoolBlocks,
                             .block_tokens = 16,
                             .kv_heads = 8,
                             .head_dim = 128,
                             .dtype_bytes = 2};

enum Case : int64_t {
  kGatherNhd = 0,     // vLLM per-layer NHD -> block-major NHD
  kGatherToHnd = 1,   // vLLM per-layer NHD -> block-major HND
  kScatterNhd = 2,    // block-major NHD -> vLLM per-layer NHD
  kPackFromVllm = 3,  // vLLM per-layer NHD -> contiguous staging buffer
  kPackedToNhd = 4,   // vLLM standardized LBNHC (K/V packed per head) ->
                      // block-major NHD: strided, head vector by head vector
  kPackedToHnd = 5,   // vLLM LBHNC -> TensorRT-LLM block pool (HND)
};

KvLayout Layout(PoolOrder pool_order, BlockOrder block_order,
                RegionSplit split) {
  return *KvLayout::Create({.geometry = kLlama8B,
                            .pool_order = pool_order,
                            .block_order = block_order,
                            .region_split = split});
}

// Device regions for `layout`; empty when an allocation fails.
std::vector<void*> Allocate(const KvLayout& layout) {
  std::vector<void*> bases;
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    void* p = nullptr;
    if (cudaMalloc(&p, layout.region_bytes()) != cudaSuccess) break;
    cudaMemset(p, r, layout.region_bytes());
    bases.push_back(p);
  }
  if (bases.size() != layout.num_regions()) {
    for (void* p : bases) cudaFree(p);
    bases.clear();
  }
  return bases;
}

void BM_ConvertBlocksAsync(benchmark::State& state) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    state.SkipWithError("no GPU");
    return;
  }
  const auto which = static_cast<Case>(state.range(0));
  const KvLayout vllm = Layout(PoolOrder::kLayerMajor, BlockOrder::kNHD,
                               RegionSplit::kOnePerLayer);
  const KvLayout flowkv_nhd = Layout(PoolOrder::kBlockMajor, BlockOrder::kNHD,
                                     RegionSplit::kOnePerPool);
  const KvLayout flowkv_hnd = Layout(PoolOrder::kBlockMajor, BlockOrder::kHND,
                                     RegionSplit::kOnePerPool);
  const KvLayout packed_nhd = *KvLayout::Vllm(kLlama8B, VllmKvLayout::kLBNHC,
                                              RegionSplit::kOnePerLayer);
  const KvLayout packed_hnd = *KvLayout::Vllm(kLlama8B, VllmKvLayout::kLBHNC,
                                              RegionSplit::kOnePerLayer);
  const KvLayout& src_layout = which == kScatterNhd    ? flowkv_nhd
                               : which == kPackedToNhd ? packed_nhd
                               : which == kPackedToHnd ? packed_hnd
                                                       : vllm;
  const KvLayout& dst_layout = which == kGatherToHnd || which == kPackedToHnd
                                   ? flowkv_hnd
                               : which == kScatterNhd ? vllm
                                                      : flowkv_nhd;
  std::vector<void*> src = Allocate(src_layout);
  std::vector<void*> dst = Allocate(dst_layout);
  if (src.empty() || dst.empty()) {
    state.SkipWithError("cudaMalloc failed");
    return;
  }
  // The vLLM side's blocks are scattered; the block-major side is one run.
  std::vector<BlockId> ids(kPoolBlocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(1));
  ids.resize(kRequestBlocks);
  const BlockList scattered = BlockList::FromIds(ids);
  const BlockList contiguous = BlockList::FromRuns({{0, kRequestBlocks}});
  const BlockList& src_blocks = which == kScatterNhd ? contiguous : scattered;
  const BlockList& dst_blocks = which == kScatterNhd ? scattered : contiguous;
  const std::vector<const void*> src_const(src.begin(), src.end());
  const uint64_t bytes = PackedBytes(vllm, scattered);

  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  cudaStreamCreate(&stream);
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (auto _ : state) {
    cudaEventRecord(start, stream);
    const absl::Status st =
        which == kPackFromVllm
            ? cuda::PackBlocksAsync(vllm, src_const, scattered, dst[0],
                                    dst_layout.total_bytes(), stream)
            : cuda::ConvertBlocksAsync(src_layout, src_const, src_blocks,
                                       dst_layout, dst, dst_blocks, stream);
    cudaEventRecord(stop, stream);
    if (!st.ok() || cudaEventSynchronize(stop) != cudaSuccess) {
      state.SkipWithError("conversion failed");
      break;
    }
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms / 1e3);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
  state.counters["blocks"] = kRequestBlocks;
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  for (void* p : src) cudaFree(p);
  for (void* p : dst) cudaFree(p);
}
BENCHMARK(BM_ConvertBlocksAsync)
    ->ArgName("case")
    ->Arg(kGatherNhd)
    ->Arg(kGatherToHnd)
    ->Arg(kScatterNhd)
    ->Arg(kPackFromVllm)
    ->Arg(kPackedToNhd)
    ->Arg(kPackedToHnd)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// The CPU reference on the same request, for comparison (host memory).
void BM_ConvertBlocksHost(benchmark::State& state) {
  const KvLayout vllm = Layout(PoolOrder::kLayerMajor, BlockOrder::kNHD,
                               RegionSplit::kOnePerLayer);
  const KvLayout flowkv_nhd = Layout(PoolOrder::kBlockMajor, BlockOrder::kNHD,
                                     RegionSplit::kOnePerPool);
  std::vector<std::vector<char>> src_regions(
      vllm.num_regions(), std::vector<char>(vllm.region_bytes(), 1));
  std::vector<char> dst_region(flowkv_nhd.total_bytes(), 0);
  std::vector<const void*> src;
  for (const auto& r : src_regions) src.push_back(r.data());
  void* dst = dst_region.data();
  std::vector<BlockId> ids(kPoolBlocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(1));
  ids.resize(kRequestBlocks);
  const BlockList scattered = BlockList::FromIds(ids);
  const BlockList contiguous = BlockList::FromRuns({{0, kRequestBlocks}});
  for (auto _ : state) {
    if (!ConvertBlocks(vllm, src, scattered, flowkv_nhd, {&dst, 1}, contiguous)
             .ok()) {
      state.SkipWithError("conversion failed");
      break;
    }
    benchmark::DoNotOptimize(dst_region.data());
  }
  state.SetBytesProcessed(
      static_cast<int64_t>(state.iterations() * PackedBytes(vllm, scattered)));
}
BENCHMARK(BM_ConvertBlocksHost)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
