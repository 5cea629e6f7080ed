// SPDX-License-Identifier: Apache-2.0
// GPU-resident KV pools through flowkv::cuda::CudaPoolMemory, on
// Llama-3.1-8B geometry (32 layers, K and V, 8 KV heads, head_dim 128, bf16,
// 16-token blocks: 2 MiB per block) and a request of 8,192 tokens (512
// blocks, 1 GiB of KV):
//
//  (a) GPU to GPU between two processes through CUDA IPC (the exporter is
//      bin/cuda_pool_peer): block-wise, one copy per layer x K/V x block
//      (a vLLM per-layer pool, 32,768 copies), against FlowKV, one copy per
//      aligned run of a block-major pool allocated contiguously (1 copy).
//      The copies come from PlanTransfer. Block-wise is timed with one
//      cudaMemcpyAsync per copy and with cudaMemcpyBatchAsync.
//  (b) IPC bandwidth of the FlowKV copy against cudaMemcpy device to device
//      of the same bytes inside this process.
//  (c) Staging: Gather (GPU -> page-locked host) and Scatter (host -> GPU)
//      of the request against plain cudaMemcpy D2H and H2D of the same
//      bytes; also the first Gather into pageable memory, which pins it.
//
//   build/bin/cuda_pool_benchmark [--iterations N]
//
// Prints a summary table; exits 2 without a GPU. This is a program rather
// than a Google Benchmark binary because (a) needs a second process set up
// once for all measurements.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cuda_runtime_api.h>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "flowkv/block_list.h"
#include "flowkv/cuda/cuda_pool_memory.h"
#include "flowkv/kv_layout.h"
#include "flowkv/transfer_plan.h"
#include "fmt/core.h"
#include "tests/support/cuda_peer_process.h"

namespace flowkv {
namespace {

using cuda::CudaPoolMemory;
using cuda::CudaPoolOptions;
using testing::CudaPeerProcess;

constexpr uint32_t kPoolBlocks = 1024;
constexpr uint32_t kRequestBlocks = 512;  // 8,192 tokens
constexpr uint64_t kRequestTokens = kRequestBlocks * 16;

const KvGeometry kLlama8B = {.num_layers = 32,
                             .num_blocks = kPoolBlocks,
                             .block_tokens = 16,
                             .kv_heads = 8,
                             .head_dim = 128,
                             .dtype_bytes = 2};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "cuda_pool_benchmark: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Check(absl::StatusOr<T> value, const char* what) {
  if (!value.ok()) Die(fmt::format("{}: {}", what, value.status().ToString()));
  return *std::move(value);
}

void Check(absl::Status status, const char* what) {
  if (!status.ok()) Die(fmt::format("{}: {}", what, status.ToString()));
}

void CudaCheck(cudaError_t error, const char* what) {
  if (error != cudaSuccess) {
    Die(fmt::format("{}: {}", what, cudaGetErrorString(error)));
  }
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Median wall time of `iterations` runs of `run` (after one warm-up run),
// which starts a batch and calls its argument once it completed.
double TimeBatches(int iterations,
                   const std::function<void(PoolCopyDone)>& run) {
  std::vector<double> times;
  for (int i = 0; i <= iterations; ++i) {
    std::promise<absl::Status> done;
    const auto start = std::chrono::steady_clock::now();
    run([&done](absl::Status s) { done.set_value(std::move(s)); });
    Check(done.get_future().get(), "copy batch");
    if (i > 0)
      times.push_back(Seconds(std::chrono::steady_clock::now() - start));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Median time of a plain cudaMemcpyAsync of `bytes` on a stream.
double TimeMemcpy(int iterations, void* dst, const void* src, uint64_t bytes) {
  cudaStream_t stream = nullptr;
  CudaCheck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
            "cudaStreamCreate");
  std::vector<double> times;
  for (int i = 0; i <= iterations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    CudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream),
              "cudaMemcpyAsync");
    CudaCheck(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    if (i > 0)
      times.push_back(Seconds(std::chrono::steady_clock::now() - start));
  }
  cudaStreamDestroy(stream);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

std::vector<TransferOp> PeerCopies(const std::vector<TransferOp>& ops) {
  std::vector<TransferOp> copies;
  copies.reserve(ops.size());
  for (const TransferOp& op : ops) {
    copies.push_back({op.src_region, op.src_offset, op.dst_region,
                      op.dst_offset, op.length});
  }
  return copies;
}

// The request's source runs packed back to back into `host`.
std::vector<PoolHostCopy> HostCopies(const std::vector<TransferOp>& ops,
                                     std::byte* host) {
  std::vector<PoolHostCopy> copies;
  uint64_t used = 0;
  for (const TransferOp& op : ops) {
    copies.push_back({op.src_region, op.src_offset, host + used, op.length});
    used += op.length;
  }
  return copies;
}

std::vector<uint64_t> RegionSizes(const KvLayout& layout) {
  std::vector<uint64_t> sizes;
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    sizes.push_back(layout.region_bytes(r));
  }
  return sizes;
}

// A local pool for `layout` and (optionally) the exporter process of its
// twin.
struct PoolPair {
  std::unique_ptr<CudaPoolMemory> local;
  std::unique_ptr<CudaPeerProcess> exporter;
};

PoolPair MakePair(const KvLayout& layout, const CudaPoolOptions& options,
                  bool with_exporter = true) {
  PoolPair pair;
  pair.local = Check(CudaPoolMemory::Allocate(0, RegionSizes(layout), options),
                     "CudaPoolMemory::Allocate");
  for (uint32_t r = 0; r < layout.num_regions(); ++r) {
    CudaCheck(
        cudaMemset(pair.local->region_base(r), r + 1, layout.region_bytes(r)),
        "cudaMemset");
  }
  if (!with_exporter) return pair;
  pair.exporter = Check(
      CudaPeerProcess::Start(
          {"--region_bytes", std::to_string(layout.region_bytes(0)),
           "--regions", std::to_string(layout.num_regions()), "--seed", "0"}),
      "starting cuda_pool_peer");
  return pair;
}

struct Row {
  std::string name;
  uint64_t copies = 0;
  uint64_t bytes = 0;
  double seconds = 0;
};

void PrintRow(const Row& row) {
  fmt::print("{:<46} {:>8} {:>10.1f} {:>11.4f} {:>9.1f}\n", row.name,
             row.copies, row.bytes / 1048576.0, row.seconds,
             row.bytes / row.seconds / 1e9);
}

int Run(int iterations) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    std::fprintf(stderr,
                 "cuda_pool_benchmark: no GPU (%s, %d devices): nothing "
                 "measured\n",
                 cudaGetErrorName(error), count);
    return 2;
  }
  cudaDeviceProp properties{};
  CudaCheck(cudaGetDeviceProperties(&properties, 0), "cudaGetDeviceProperties");
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  fmt::print("device 0: {} (runtime {}, driver {}), {} iterations, median\n",
             properties.name, runtime, driver, iterations);

  const KvLayout blockwise_layout =
      Check(KvLayout::VllmFlashAttn(kLlama8B), "VllmFlashAttn");
  const KvLayout flowkv_layout =
      Check(KvLayout::FlowKvBlockMajor(kLlama8B), "FlowKvBlockMajor");
  // Block-wise: every other block on both sides (no two request blocks
  // adjacent), so every (layer, part, block) is its own copy.
  std::vector<BlockId> scattered;
  for (uint32_t i = 0; i < kRequestBlocks; ++i) scattered.push_back(2 * i);
  const BlockList scattered_blocks = BlockList::FromIds(scattered);
  const BlockList contiguous_blocks =
      BlockList::FromRuns({{0, kRequestBlocks}});
  const std::vector<TransferOp> blockwise_ops =
      Check(PlanTransfer({.src_layout = &blockwise_layout,
                          .src_blocks = scattered_blocks,
                          .dst_layout = &blockwise_layout,
                          .dst_blocks = scattered_blocks,
                          .num_tokens = kRequestTokens}),
            "PlanTransfer (block-wise)");
  const std::vector<TransferOp> flowkv_ops =
      Check(PlanTransfer({.src_layout = &flowkv_layout,
                          .src_blocks = contiguous_blocks,
                          .dst_layout = &flowkv_layout,
                          .dst_blocks = contiguous_blocks,
                          .num_tokens = kRequestTokens}),
            "PlanTransfer (flowkv)");
  uint64_t request_bytes = 0;
  for (const TransferOp& op : flowkv_ops) request_bytes += op.length;

  // Pageable host memory for the last case: it must outlive the pools,
  // which keep it pinned.
  std::vector<std::byte> pageable(request_bytes);
  std::vector<Row> rows;
  // (a) block-wise, per-run and batched, then FlowKV.
  double blockwise_seconds = 0;
  for (const uint32_t batch_min_runs : {0u, 16u}) {
    CudaPoolOptions options;
    options.batch_min_runs = batch_min_runs;
    PoolPair pair = MakePair(blockwise_layout, options);
    auto peer = Check(pair.local->OpenPeer(pair.exporter->descriptor()),
                      "OpenPeer (block-wise)");
    const std::vector<TransferOp> copies = PeerCopies(blockwise_ops);
    const double seconds = TimeBatches(iterations, [&](PoolCopyDone done) {
      peer->CopyTo(copies, nullptr, std::move(done));
    });
    rows.push_back({batch_min_runs == 0
                        ? "(a) IPC block-wise, cudaMemcpyAsync per copy"
                        : "(a) IPC block-wise, cudaMemcpyBatchAsync",
                    copies.size(), request_bytes, seconds});
    if (batch_min_runs == 0) blockwise_seconds = seconds;
  }
  PoolPair flowkv = MakePair(flowkv_layout, {});
  auto flowkv_peer =
      Check(flowkv.local->OpenPeer(flowkv.exporter->descriptor()),
            "OpenPeer (flowkv)");
  const std::vector<TransferOp> flowkv_copies = PeerCopies(flowkv_ops);
  const double flowkv_seconds = TimeBatches(iterations, [&](PoolCopyDone done) {
    flowkv_peer->CopyTo(flowkv_copies, nullptr, std::move(done));
  });
  rows.push_back({"(a) IPC flowkv, one copy per aligned run",
                  flowkv_copies.size(), request_bytes, flowkv_seconds});

  // (b) the same bytes device to device inside this process.
  void* local_copy = nullptr;
  CudaCheck(cudaMalloc(&local_copy, request_bytes), "cudaMalloc");
  const double d2d_seconds = TimeMemcpy(
      iterations, local_copy, flowkv.local->region_base(0), request_bytes);
  rows.push_back({"(b) cudaMemcpy device to device (one process)", 1,
                  request_bytes, d2d_seconds});

  // (c) staging through page-locked host memory.
  std::byte* pinned = nullptr;
  CudaCheck(cudaMallocHost(reinterpret_cast<void**>(&pinned), request_bytes),
            "cudaMallocHost");
  const std::vector<PoolHostCopy> gather = HostCopies(flowkv_ops, pinned);
  // Slot-sized pieces as a staging ring would move them (64 MiB).
  std::vector<PoolHostCopy> pieces;
  for (const PoolHostCopy& copy : gather) {
    for (uint64_t at = 0; at < copy.length; at += 64 << 20) {
      pieces.push_back({copy.region, copy.offset + at,
                        static_cast<std::byte*>(copy.host) + at,
                        std::min<uint64_t>(64 << 20, copy.length - at)});
    }
  }
  const double gather_seconds = TimeBatches(iterations, [&](PoolCopyDone done) {
    flowkv.local->Gather(pieces, nullptr, std::move(done));
  });
  const double scatter_seconds =
      TimeBatches(iterations, [&](PoolCopyDone done) {
        flowkv.local->Scatter(pieces, std::move(done));
      });
  const double d2h_seconds = TimeMemcpy(
      iterations, pinned, flowkv.local->region_base(0), request_bytes);
  const double h2d_seconds = TimeMemcpy(
      iterations, flowkv.local->region_base(0), pinned, request_bytes);
  rows.push_back({"(c) Gather pool -> pinned host (64 MiB runs)", pieces.size(),
                  request_bytes, gather_seconds});
  rows.push_back({"(c) cudaMemcpy D2H, pinned", 1, request_bytes, d2h_seconds});
  rows.push_back({"(c) Scatter pinned host -> pool (64 MiB runs)",
                  pieces.size(), request_bytes, scatter_seconds});
  rows.push_back({"(c) cudaMemcpy H2D, pinned", 1, request_bytes, h2d_seconds});
  // Block-wise runs gathered into host memory: many small copies.
  {
    PoolPair pair = MakePair(blockwise_layout, {}, /*with_exporter=*/false);
    const std::vector<PoolHostCopy> small = HostCopies(blockwise_ops, pinned);
    const double seconds = TimeBatches(iterations, [&](PoolCopyDone done) {
      pair.local->Gather(small, nullptr, std::move(done));
    });
    rows.push_back({"(c) Gather block-wise runs (batched)", small.size(),
                    request_bytes, seconds});
  }
  // First Gather into pageable memory: the pool pins it (once).
  {
    const std::vector<PoolHostCopy> copies =
        HostCopies(flowkv_ops, pageable.data());
    std::promise<absl::Status> done;
    const auto start = std::chrono::steady_clock::now();
    flowkv.local->Gather(copies, nullptr, [&done](absl::Status s) {
      done.set_value(std::move(s));
    });
    Check(done.get_future().get(), "Gather into pageable memory");
    rows.push_back({"(c) first Gather into pageable host (pins it)",
                    copies.size(), request_bytes,
                    Seconds(std::chrono::steady_clock::now() - start)});
  }

  fmt::print("\n{:<46} {:>8} {:>10} {:>11} {:>9}\n", "case", "copies", "MiB",
             "seconds", "GB/s");
  for (const Row& row : rows) PrintRow(row);
  const double ipc_ratio = d2d_seconds / flowkv_seconds;
  const double staging_ratio = std::max(d2h_seconds, h2d_seconds) /
                               std::max(gather_seconds, scatter_seconds);
  fmt::print("\nsummary\n");
  fmt::print(
      "  (a) block-wise / flowkv over IPC: {:.4f} s / {:.4f} s = {:.1f}x "
      "(paper: 0.944 s / 0.053 s = 17.8x)\n",
      blockwise_seconds, flowkv_seconds, blockwise_seconds / flowkv_seconds);
  fmt::print(
      "  (b) IPC bandwidth / local device-to-device: {:.2f}x (goal >= "
      "0.90) {}\n",
      ipc_ratio, ipc_ratio >= 0.9 ? "met" : "NOT MET");
  fmt::print(
      "  (c) slower of Gather/Scatter vs slower of D2H/H2D: {:.2f}x "
      "(goal >= 0.80) {}\n",
      staging_ratio, staging_ratio >= 0.8 ? "met" : "NOT MET");

  flowkv_peer.reset();
  cudaFreeHost(pinned);
  cudaFree(local_copy);
  return 0;
}

}  // namespace
}  // namespace flowkv

int main(int argc, char** argv) {
  int iterations = 5;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--iterations") == 0) {
      iterations = std::max(1, std::atoi(argv[i + 1]));
    }
  }
  return flowkv::Run(iterations);
}
