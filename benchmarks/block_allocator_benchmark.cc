// SPDX-License-Identifier: Apache-2.0
// Allocator speed and fragmentation.
//
//   build/bin/block_allocator_benchmark
//
// BM_AllocateFree/<blocks>: one Allocate(64) + Free pair on a half-full,
//   fragmented pool.
// BM_Churn/<allocator>/<occupancy %>: a request churn on a 128k-block pool
//   held at a steady occupancy. Prompts draw LongBench-like lengths
//   (16-token blocks), decode appends a block every 16 output tokens with
//   Extend, finished requests are freed. `flowkv` is BlockAllocator;
//   `freelist` is the vLLM-style baseline: a LIFO stack of single block ids.
//   `slack` is BlockAllocatorOptions::growth_slack_blocks (0: every
//   allocation at the start of its free run).
#include <algorithm>
#include <benchmark/benchmark.h>
#include <cmath>
#include <random>
#include <vector>

#include "flowkv/block_allocator.h"

namespace flowkv {
namespace {

constexpr uint32_t kBlockTokens = 16;

// LongBench v1 subsets (docs/design.md): mean prompt words x 1.3 tokens/word
// (code counted 1:1.3 too) and max new tokens.
struct Subset {
  double prompt_tokens;
  uint32_t output_tokens;
};
constexpr Subset kLongBench[] = {
    {8734 * 1.3, 512},  {10614 * 1.3, 512}, {2113 * 1.3, 512},
    {18409 * 1.3, 128}, {3619 * 1.3, 128},  {9151 * 1.3, 32},
    {11214 * 1.3, 32},  {8209 * 1.3, 32},   {1235 * 1.3, 64},
};

// A request: prompt blocks, then one block per 16 generated tokens.
struct RequestShape {
  uint32_t prompt_blocks;
  uint32_t decode_blocks;
};

class Workload {
 public:
  explicit Workload(uint64_t seed) : rng_(seed) {}
  RequestShape Next() {
    const Subset& s = kLongBench[pick_(rng_)];
    // Log-normal around the subset mean, sigma 0.3, clipped to [64, 32k].
    const double tokens = std::clamp(
        s.prompt_tokens * std::exp(0.3 * normal_(rng_) - 0.045), 64.0, 32768.0);
    return {static_cast<uint32_t>(std::ceil(tokens / kBlockTokens)),
            (s.output_tokens + kBlockTokens - 1) / kBlockTokens};
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
  std::uniform_int_distribution<size_t> pick_{0, std::size(kLongBench) - 1};
  std::normal_distribution<double> normal_;
};

// The baseline: vLLM's free block queue reduced to a LIFO stack of ids.
class FreeListAllocator {
 public:
  explicit FreeListAllocator(uint32_t num_blocks) {
    free_.reserve(num_blocks);
    for (uint32_t i = num_blocks; i > 0; --i) free_.push_back(i - 1);
  }
  bool Allocate(uint32_t n, std::vector<BlockId>* out) {
    if (n > free_.size()) return false;
    for (uint32_t i = 0; i < n; ++i) {
      out->push_back(free_.back());
      free_.pop_back();
    }
    return true;
  }
  void Free(const std::vector<BlockId>& ids) {
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) free_.push_back(*it);
  }
  size_t free_blocks() const { return free_.size(); }

 private:
  std::vector<BlockId> free_;
};

void BM_AllocateFree(benchmark::State& state) {
  const uint32_t num_blocks = static_cast<uint32_t>(state.range(0));
  auto allocator = *BlockAllocator::Create({.num_blocks = num_blocks});
  // Fragment the pool: fill it with random-sized lists, free every other.
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<uint32_t> size(1, 128);
  std::vector<BlockList> lists;
  while (allocator->free_blocks() > 128) {
    lists.push_back(*allocator->Allocate(size(rng)));
  }
  for (size_t i = 0; i < lists.size(); i += 2) {
    if (!allocator->Free(lists[i]).ok()) state.SkipWithError("free failed");
  }
  for (auto _ : state) {
    absl::StatusOr<BlockList> list = allocator->Allocate(64);
    benchmark::DoNotOptimize(list);
    if (!allocator->Free(*list).ok()) state.SkipWithError("free failed");
  }
  state.counters["free_runs"] =
      static_cast<double>(allocator->Stats().free_runs);
}
BENCHMARK(BM_AllocateFree)->Arg(16 << 10)->Arg(128 << 10)->Arg(1 << 20);

// One live request of the churn.
template <typename Blocks>
struct Live {
  Blocks blocks;
  uint32_t decode_left;
};

// Drives a churn at `occupancy`: `allocate(n, &blocks)`, `extend(&blocks)`,
// `release(blocks)` and `runs(blocks)` adapt one allocator.
template <typename Blocks, typename Allocate, typename Extend, typename Release,
          typename Runs>
void RunChurn(benchmark::State& state, uint32_t num_blocks, Allocate allocate,
              Extend extend, Release release, Runs runs) {
  const double occupancy = state.range(0) / 100.0;
  const uint64_t target = static_cast<uint64_t>(num_blocks * occupancy);
  Workload workload(42);
  std::vector<Live<Blocks>> live;
  uint64_t used = 0;
  uint64_t ops = 0;
  double runs_sum = 0;
  double single_sum = 0;
  uint64_t samples = 0;
  RequestShape pending = workload.Next();

  // One step: admit while below target, else advance one request by a
  // decode block (freeing it when done).
  auto step = [&] {
    if (used + pending.prompt_blocks <= target) {
      Live<Blocks> request{Blocks(), pending.decode_blocks};
      if (!allocate(pending.prompt_blocks, &request.blocks)) return false;
      used += pending.prompt_blocks;
      live.push_back(std::move(request));
      pending = workload.Next();
    } else {
      if (live.empty()) return false;
      const size_t i = std::uniform_int_distribution<size_t>(
          0, live.size() - 1)(workload.rng());
      Live<Blocks>& request = live[i];
      if (request.decode_left > 0 && used < num_blocks) {
        if (!extend(&request.blocks)) return false;
        ++used;
        --request.decode_left;
      } else {
        used -= release(request.blocks);
        live[i] = std::move(live.back());
        live.pop_back();
      }
    }
    ++ops;
    return true;
  };
  // Warm up into the steady state, untimed.
  for (int i = 0; i < 200000; ++i) {
    if (!step()) {
      state.SkipWithError("allocator failed during warm-up");
      return;
    }
  }
  ops = 0;
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) {
      if (!step()) {
        state.SkipWithError("allocator failed");
        return;
      }
    }
    state.PauseTiming();
    for (const auto& request : live) {
      const size_t r = runs(request.blocks);
      runs_sum += static_cast<double>(r);
      single_sum += r == 1 ? 1 : 0;
    }
    samples += live.size();
    state.ResumeTiming();
  }
  state.counters["runs_per_request"] =
      runs_sum / std::max<uint64_t>(samples, 1);
  state.counters["single_run_fraction"] =
      single_sum / std::max<uint64_t>(samples, 1);
  state.counters["ns_per_op"] = benchmark::Counter(
      static_cast<double>(ops),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["live_requests"] = static_cast<double>(live.size());
}

constexpr uint32_t kChurnBlocks = 128 << 10;

// state.range(1): BlockAllocatorOptions::growth_slack_blocks.
void BM_Churn_flowkv(benchmark::State& state) {
  auto allocator = *BlockAllocator::Create(
      {.num_blocks = kChurnBlocks,
       .growth_slack_blocks = static_cast<uint32_t>(state.range(1))});
  RunChurn<BlockList>(
      state, kChurnBlocks,
      [&](uint32_t n, BlockList* out) {
        absl::StatusOr<BlockList> list = allocator->Allocate(n);
        if (!list.ok()) return false;
        *out = *std::move(list);
        return true;
      },
      [&](BlockList* list) { return allocator->Extend(list, 1).ok(); },
      [&](const BlockList& list) {
        return allocator->Free(list).ok() ? list.num_blocks() : 0;
      },
      [](const BlockList& list) { return list.num_runs(); });
}

void BM_Churn_freelist(benchmark::State& state) {
  FreeListAllocator allocator(kChurnBlocks);
  RunChurn<std::vector<BlockId>>(
      state, kChurnBlocks,
      [&](uint32_t n, std::vector<BlockId>* out) {
        return allocator.Allocate(n, out);
      },
      [&](std::vector<BlockId>* ids) { return allocator.Allocate(1, ids); },
      [&](const std::vector<BlockId>& ids) {
        allocator.Free(ids);
        return ids.size();
      },
      [](const std::vector<BlockId>& ids) {
        return BlockList::FromIds(ids).num_runs();
      });
}

BENCHMARK(BM_Churn_flowkv)
    ->Name("BM_Churn/flowkv")
    ->ArgNames({"occupancy", "slack"})
    ->Args({50, 32})
    ->Args({80, 32})
    ->Args({90, 32})
    ->Args({95, 32})
    ->Args({90, 0});
BENCHMARK(BM_Churn_freelist)
    ->Name("BM_Churn/freelist")
    ->ArgName("occupancy")
    ->Arg(50)
    ->Arg(80)
    ->Arg(90)
    ->Arg(95);

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
