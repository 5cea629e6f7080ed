// SPDX-License-Identifier: Apache-2.0
// The allocator's prefix cache under a request churn with shared prompts.
//
//   build/bin/prefix_cache_benchmark
//
// BM_PrefixChurn/cache:<0|1>/occupancy:<%>: a 128k-block pool whose live
//   requests (prompt + decode blocks) hold `occupancy` of it. Each prompt is
//   one of 64 shared documents (4k-16k tokens, 16-token blocks), then a
//   unique question of 1-64 blocks; 1-32 decode blocks follow with Extend.
//   cache:1 looks the prompt's block hashes up, allocates the rest after
//   the hit (Allocate(n, after)) and frees with the hashes, so finished
//   prompts stay cached in the free space; cache:0 runs the same request
//   stream with Allocate and Free alone. Counters: ns_per_op (one admission,
//   decode step or release), runs_per_request of the live requests,
//   hit_rate (cached blocks found / blocks asked), evicted_per_request.
#include <algorithm>
#include <benchmark/benchmark.h>
#include <random>
#include <vector>

#include "flowkv/block_allocator.h"

namespace flowkv {
namespace {

constexpr uint32_t kBlocks = 128 << 10;
constexpr int kDocuments = 64;

BlockHash Chain(BlockHash parent, uint64_t tokens) {
  uint64_t x = parent * 0x9E3779B97F4A7C15ull + tokens + 1;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

struct Request {
  BlockList blocks;
  std::vector<BlockHash> hashes;
  uint32_t decode_left = 0;
};

void BM_PrefixChurn(benchmark::State& state) {
  const bool cache = state.range(0) != 0;
  const uint64_t target = kBlocks * state.range(1) / 100;
  auto allocator = *BlockAllocator::Create(
      {.num_blocks = kBlocks, .enable_prefix_cache = cache});
  std::mt19937_64 rng(7);
  std::vector<uint32_t> doc_blocks(kDocuments);
  for (uint32_t& b : doc_blocks) b = 256 + rng() % 768;
  std::vector<Request> live;
  uint64_t used = 0;
  uint64_t ops = 0;
  uint64_t requests = 0;
  double runs_sum = 0;
  uint64_t samples = 0;

  auto admit = [&]() -> bool {
    const int doc = static_cast<int>(rng() % kDocuments);
    const uint32_t question = 1 + rng() % 64;
    Request r;
    BlockHash h = 0;
    for (uint32_t i = 0; i < doc_blocks[doc]; ++i) {
      r.hashes.push_back(h = Chain(h, static_cast<uint64_t>(doc) << 32 | i));
    }
    const uint64_t unique = rng();
    for (uint32_t i = 0; i < question; ++i) {
      r.hashes.push_back(h = Chain(h, unique + i));
    }
    const uint32_t total = static_cast<uint32_t>(r.hashes.size()) + 1;
    r.decode_left = 1 + rng() % 32;
    if (used + total > target) return false;
    if (cache) {
      absl::StatusOr<BlockList> hit = allocator->Lookup(r.hashes);
      if (!hit.ok()) return false;
      r.blocks = *std::move(hit);
    }
    const uint32_t need = total - static_cast<uint32_t>(r.blocks.num_blocks());
    absl::StatusOr<BlockList> rest =
        r.blocks.empty() ? allocator->Allocate(need)
                         : allocator->Allocate(need, r.blocks.runs().back());
    if (!rest.ok()) return false;
    r.blocks.AppendList(*rest);
    used += total;
    ++requests;
    live.push_back(std::move(r));
    return true;
  };
  auto step = [&] {
    if (!admit()) {
      if (live.empty()) return false;
      const size_t i = rng() % live.size();
      Request& r = live[i];
      if (r.decode_left > 0 && used < target) {
        if (!allocator->Extend(&r.blocks, 1).ok()) return false;
        ++used;
        --r.decode_left;
      } else {
        const absl::Status s = cache ? allocator->Free(r.blocks, r.hashes)
                                     : allocator->Free(r.blocks);
        if (!s.ok()) return false;
        used -= r.blocks.num_blocks();
        live[i] = std::move(live.back());
        live.pop_back();
      }
    }
    ++ops;
    return true;
  };
  for (int i = 0; i < 50000; ++i) {
    if (!step()) {
      state.SkipWithError("allocator failed during warm-up");
      return;
    }
  }
  ops = 0;
  requests = 0;
  const BlockAllocatorStats warm = allocator->Stats();
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) {
      if (!step()) {
        state.SkipWithError("allocator failed");
        return;
      }
    }
    state.PauseTiming();
    for (const Request& r : live) runs_sum += r.blocks.num_runs();
    samples += live.size();
    state.ResumeTiming();
  }
  const BlockAllocatorStats end = allocator->Stats();
  state.counters["ns_per_op"] = benchmark::Counter(
      static_cast<double>(ops),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["runs_per_request"] =
      runs_sum / static_cast<double>(std::max<uint64_t>(samples, 1));
  const double asked =
      static_cast<double>(end.lookup_blocks - warm.lookup_blocks);
  state.counters["hit_rate"] =
      asked == 0 ? 0
                 : static_cast<double>(end.lookup_hit_blocks -
                                       warm.lookup_hit_blocks) /
                       asked;
  state.counters["evicted_per_request"] =
      static_cast<double>(end.evicted_blocks - warm.evicted_blocks) /
      static_cast<double>(std::max<uint64_t>(requests, 1));
}

BENCHMARK(BM_PrefixChurn)
    ->ArgNames({"cache", "occupancy"})
    ->Args({0, 50})
    ->Args({1, 50})
    ->Args({0, 90})
    ->Args({1, 90});

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
