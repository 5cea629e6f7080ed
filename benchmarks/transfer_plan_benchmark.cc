// SPDX-License-Identifier: Apache-2.0
// Planning speed and op counts of TransferPlan for an 8k-token Llama-3.1-8B
// request (32 layers, 8 KV heads, head_dim 128, 2-byte dtype, 16-token
// blocks).
//
//   build/bin/transfer_plan_benchmark                      # everything
//   build/bin/transfer_plan_benchmark --benchmark_filter=BM_Pair
//
// BM_Plan/<case>: AppendTransferPlan into a reused vector (the hot path).
// BM_Count/<case>: CountTransferOps (what the simulator calls).
// Cases:
//   block_major_1run     block-major both sides, one run each
//   block_major_8runs    block-major both sides, 8 runs each, cut differently
//   layer_major_1run     layer-major (vLLM) both sides, one run each
//   layer_major_8runs    layer-major both sides, 8 runs each
//   block_to_layer       block-major source, layer-major destination
//   tp8_to_tp4_hnd       heads 4..7 of an 8-head HND pool to a 4-head one
//   nhd_to_hnd           NHD source, HND destination (one op per head vector)
// Counters: ops (per plan), time_per_plan, time_per_op.
//
// BM_Pair/<src>/<dst>/<lists>: every (source preset -> destination preset)
// pair, with both sides' 512 blocks contiguous (`contiguous`) or taken from
// a BlockAllocator churned at 90 % occupancy (`fragmented`). Counters: ops,
// min_ops (the minimum, counted independently by
// tests/support/plan_reference.h: maximal runs of head vectors contiguous on
// both sides), excess (ops - min_ops, 0 when the plan is minimal), src_runs,
// dst_runs, time_per_plan. After the run the program prints both pair tables in
// Markdown (ops and microseconds per plan), as docs/layouts.md shows them.
#include <algorithm>
#include <benchmark/benchmark.h>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/time/clock.h"
#include "flowkv/block_allocator.h"
#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"
#include "flowkv/transfer_plan.h"
#include "tests/support/plan_reference.h"

namespace flowkv {
namespace {

constexpr uint32_t kTokens = 8192;
constexpr uint32_t kBlocks = kTokens / 16;

KvGeometry Llama(uint32_t kv_heads = 8) {
  return {.num_layers = 32,
          .num_blocks = 16384,
          .block_tokens = 16,
          .kv_heads = kv_heads,
          .head_dim = 128,
          .dtype_bytes = 2};
}

KvLayout Layout(PoolOrder pool, BlockOrder block = BlockOrder::kNHD,
                uint32_t kv_heads = 8) {
  return *KvLayout::Create(
      {.geometry = Llama(kv_heads), .pool_order = pool, .block_order = block});
}

// 8 runs of 64 blocks, spread over the pool, starting at `base`.
BlockList EightRuns(uint32_t base, uint32_t first_run) {
  BlockList list;
  uint32_t left = kBlocks;
  for (int i = 0; i < 8; ++i) {
    const uint32_t n = i == 7 ? left : (i == 0 ? first_run : 64);
    list.Append(base + 1000 * static_cast<uint32_t>(7 - i), n);
    left -= n;
  }
  return list;
}

struct Case {
  KvLayout src;
  KvLayout dst;
  TransferPlanRequest request;
};

Case MakeCase(int which) {
  const KvLayout bm = Layout(PoolOrder::kBlockMajor);
  const KvLayout lm = Layout(PoolOrder::kLayerMajor);
  const BlockList one_a({{100, kBlocks}});
  const BlockList one_b({{3000, kBlocks}});
  switch (which) {
    case 0:
      return {bm, bm, {.src_blocks = one_a, .dst_blocks = one_b}};
    case 1:
      return {bm,
              bm,
              {.src_blocks = EightRuns(0, 64), .dst_blocks = EightRuns(1, 40)}};
    case 2:
      return {lm, lm, {.src_blocks = one_a, .dst_blocks = one_b}};
    case 3:
      return {lm,
              lm,
              {.src_blocks = EightRuns(0, 64), .dst_blocks = EightRuns(1, 40)}};
    case 4:
      return {bm, lm, {.src_blocks = one_a, .dst_blocks = one_b}};
    case 5:
      return {Layout(PoolOrder::kBlockMajor, BlockOrder::kHND, 8),
              Layout(PoolOrder::kBlockMajor, BlockOrder::kHND, 4),
              {.src_blocks = one_a,
               .dst_blocks = one_b,
               .src_head_begin = 4,
               .num_heads = 4}};
    default:
      return {bm,
              Layout(PoolOrder::kBlockMajor, BlockOrder::kHND),
              {.src_blocks = one_a, .dst_blocks = one_b}};
  }
}

const char* const kNames[] = {"block_major_1run", "block_major_8runs",
                              "layer_major_1run", "layer_major_8runs",
                              "block_to_layer",   "tp8_to_tp4_hnd",
                              "nhd_to_hnd"};

void SetCounters(benchmark::State& state, uint64_t ops) {
  state.counters["ops"] = static_cast<double>(ops);
  state.counters["time_per_plan"] = benchmark::Counter(
      static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["time_per_op"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(ops),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_Plan(benchmark::State& state) {
  Case c = MakeCase(static_cast<int>(state.range(0)));
  c.request.src_layout = &c.src;
  c.request.dst_layout = &c.dst;
  c.request.num_tokens = kTokens;
  state.SetLabel(kNames[state.range(0)]);
  std::vector<TransferOp> ops;
  // Warm-up: the timed calls reuse the vector's capacity, as a caller would.
  (void)AppendTransferPlan(c.request, &ops);
  for (auto _ : state) {
    ops.clear();
    absl::Status s = AppendTransferPlan(c.request, &ops);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(ops.data());
  }
  SetCounters(state, ops.size());
}
BENCHMARK(BM_Plan)->DenseRange(0, 6);

void BM_Count(benchmark::State& state) {
  Case c = MakeCase(static_cast<int>(state.range(0)));
  c.request.src_layout = &c.src;
  c.request.dst_layout = &c.dst;
  c.request.num_tokens = kTokens;
  state.SetLabel(kNames[state.range(0)]);
  uint64_t count = 0;
  for (auto _ : state) {
    absl::StatusOr<uint64_t> n = CountTransferOps(c.request);
    if (!n.ok()) {
      state.SkipWithError(n.status().ToString().c_str());
      break;
    }
    count = *n;
    benchmark::DoNotOptimize(count);
  }
  SetCounters(state, count);
}
BENCHMARK(BM_Count)->DenseRange(0, 6);

// ---------------------------------------------------------------------------
// Every preset pair.

struct Preset {
  const char* name;
  absl::StatusOr<KvLayout> (*make)(const KvGeometry&);
};

// Each byte layout once (VllmCrossLayer NHD is FlowKvBlockMajor NHD;
// TrtllmBlockPool is FlowKvBlockMajor HND).
const Preset kPresets[] = {
    {"flowkv_block_major(NHD)",
     [](const KvGeometry& g) { return KvLayout::FlowKvBlockMajor(g); }},
    {"trtllm_block_pool",
     [](const KvGeometry& g) { return KvLayout::TrtllmBlockPool(g); }},
    {"vllm_flash_attn(NHD)",
     [](const KvGeometry& g) { return KvLayout::VllmFlashAttn(g); }},
    {"vllm_flash_attn(HND)",
     [](const KvGeometry& g) {
       return KvLayout::VllmFlashAttn(g, BlockOrder::kHND);
     }},
    {"vllm_flash_infer(NHD)",
     [](const KvGeometry& g) { return KvLayout::VllmFlashInfer(g); }},
    {"vllm_flash_infer(HND)",
     [](const KvGeometry& g) {
       return KvLayout::VllmFlashInfer(g, BlockOrder::kHND);
     }},
    {"vllm_cross_layer(HND)",
     [](const KvGeometry& g) {
       return KvLayout::VllmCrossLayer(g, BlockOrder::kHND);
     }},
    {"vllm(LBNHC)",
     [](const KvGeometry& g) {
       return KvLayout::Vllm(g, VllmKvLayout::kLBNHC,
                             RegionSplit::kOnePerLayer);
     }},
    {"vllm(LBHNC)",
     [](const KvGeometry& g) {
       return KvLayout::Vllm(g, VllmKvLayout::kLBHNC,
                             RegionSplit::kOnePerLayer);
     }},
    {"vllm(LHBNC)",
     [](const KvGeometry& g) {
       return KvLayout::Vllm(g, VllmKvLayout::kLHBNC,
                             RegionSplit::kOnePerLayer);
     }},
    {"vllm(BLNHC)",
     [](const KvGeometry& g) {
       return KvLayout::Vllm(g, VllmKvLayout::kBLNHC);
     }},
    {"vllm(BLHNC)",
     [](const KvGeometry& g) {
       return KvLayout::Vllm(g, VllmKvLayout::kBLHNC);
     }},
    {"vllm(BHLNC)",
     [](const KvGeometry& g) {
       return KvLayout::Vllm(g, VllmKvLayout::kBHLNC);
     }},
    {"sglang_mha", [](const KvGeometry& g) { return KvLayout::SglangMha(g); }},
};
constexpr int kNumPresets = static_cast<int>(std::size(kPresets));

// A 512-block list from a 16384-block BlockAllocator after a request churn
// held at 90 % occupancy: LongBench-like prompts (log-normal around the
// subsets' mean lengths, 16-token blocks), decode growth with Extend (one
// block per 16 generated tokens), random completions.
BlockList ChurnedList(uint64_t seed) {
  constexpr double kPromptTokens[] = {11354, 13798, 2747,  23932, 4705,
                                      11896, 14578, 10672, 1606};
  constexpr uint32_t kPool = 16384;
  auto allocator = *BlockAllocator::Create({.num_blocks = kPool});
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<BlockList> live;
  auto occupancy = [&] {
    return 1.0 - static_cast<double>(allocator->free_blocks()) / kPool;
  };
  auto free_one = [&] {
    const size_t i = rng() % live.size();
    (void)allocator->Free(live[i]);
    live[i] = std::move(live.back());
    live.pop_back();
  };
  for (int step = 0; step < 20000; ++step) {
    if (!live.empty() && rng() % 4 != 0) {  // Decode steps grow requests.
      BlockList& list = live[rng() % live.size()];
      if (allocator->free_blocks() > 0) (void)allocator->Extend(&list, 1);
    }
    if (occupancy() < 0.9) {
      const double mean = kPromptTokens[rng() % std::size(kPromptTokens)];
      const double tokens =
          std::clamp(mean * std::exp(0.3 * normal(rng) - 0.045), 64.0, 32768.0);
      absl::StatusOr<BlockList> list =
          allocator->Allocate(static_cast<uint32_t>(std::ceil(tokens / 16)));
      if (list.ok()) {
        live.push_back(*std::move(list));
      } else if (!live.empty()) {
        free_one();
      }
    } else if (!live.empty()) {
      free_one();
    }
  }
  while (allocator->free_blocks() < kBlocks && !live.empty()) free_one();
  return *allocator->Allocate(kBlocks);
}

struct Cell {
  uint64_t ops = 0;
  uint64_t min_ops = 0;
  double micros = 0;
};
std::map<std::tuple<int, int, int>, Cell>& Cells() {
  static auto* cells = new std::map<std::tuple<int, int, int>, Cell>();
  return *cells;
}

void BM_Pair(benchmark::State& state) {
  const int src_index = static_cast<int>(state.range(0));
  const int dst_index = static_cast<int>(state.range(1));
  const int fragmented = static_cast<int>(state.range(2));
  const KvLayout src = *kPresets[src_index].make(Llama());
  const KvLayout dst = *kPresets[dst_index].make(Llama());
  static const BlockList kSrcChurned = ChurnedList(1);
  static const BlockList kDstChurned = ChurnedList(2);
  const TransferPlanRequest request{
      .src_layout = &src,
      .src_blocks = fragmented ? kSrcChurned : BlockList({{100, kBlocks}}),
      .dst_layout = &dst,
      .dst_blocks = fragmented ? kDstChurned : BlockList({{3000, kBlocks}}),
      .num_tokens = kTokens};
  state.SetLabel(std::string(kPresets[src_index].name) + " -> " +
                 kPresets[dst_index].name +
                 (fragmented ? " fragmented" : " contiguous"));
  Cell& cell = Cells()[{src_index, dst_index, fragmented}];
  if (cell.min_ops == 0) {  // Once per cell, outside the timed loop.
    std::vector<testing::ElementCopy> copies =
        testing::ReferenceCopies(request);
    cell.min_ops = testing::MinimumOps(copies, src.head_bytes());
  }
  std::vector<TransferOp> ops;
  (void)AppendTransferPlan(request, &ops);
  const absl::Time start = absl::Now();
  for (auto _ : state) {
    ops.clear();
    absl::Status s = AppendTransferPlan(request, &ops);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(ops.data());
  }
  cell.micros = absl::ToDoubleMicroseconds(absl::Now() - start) /
                static_cast<double>(std::max<int64_t>(1, state.iterations()));
  cell.ops = ops.size();
  state.counters["ops"] = static_cast<double>(ops.size());
  state.counters["min_ops"] = static_cast<double>(cell.min_ops);
  state.counters["excess"] =
      static_cast<double>(ops.size()) - static_cast<double>(cell.min_ops);
  state.counters["src_runs"] =
      static_cast<double>(request.src_blocks.num_runs());
  state.counters["dst_runs"] =
      static_cast<double>(request.dst_blocks.num_runs());
  state.counters["time_per_plan"] = benchmark::Counter(
      static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_Pair)
    ->ArgsProduct({benchmark::CreateDenseRange(0, kNumPresets - 1, 1),
                   benchmark::CreateDenseRange(0, kNumPresets - 1, 1),
                   {0, 1}})
    ->MinTime(0.05)
    ->Unit(benchmark::kMicrosecond);

// "2,048" / "4.19M".
std::string Count(uint64_t n) {
  char text[32];
  if (n >= 1000000) {
    std::snprintf(text, sizeof(text), "%.2fM", static_cast<double>(n) / 1e6);
  } else {
    std::snprintf(text, sizeof(text), "%llu",
                  static_cast<unsigned long long>(n));
  }
  return text;
}

// The Markdown tables of the BM_Pair cells that ran: "ops / us", with
// "(min N)" where the plan is not minimal.
void PrintPairTables() {
  if (Cells().empty()) return;
  for (int fragmented : {0, 1}) {
    std::printf(
        "\n%s lists: ops per request / planning time (us), source "
        "rows, destination columns\n\n| src \\ dst |",
        fragmented ? "Fragmented (allocator churned at 90 %)" : "Contiguous");
    for (const Preset& p : kPresets) std::printf(" %s |", p.name);
    std::printf("\n|---|");
    for (int i = 0; i < kNumPresets; ++i) std::printf("---|");
    std::printf("\n");
    for (int s = 0; s < kNumPresets; ++s) {
      std::printf("| %s |", kPresets[s].name);
      for (int d = 0; d < kNumPresets; ++d) {
        const auto it = Cells().find({s, d, fragmented});
        if (it == Cells().end()) {
          std::printf(" |");
          continue;
        }
        const Cell& c = it->second;
        const char* format = c.micros < 1     ? " %s / %.2f%s |"
                             : c.micros < 100 ? " %s / %.1f%s |"
                                              : " %s / %.0f%s |";
        std::printf(format, Count(c.ops).c_str(), c.micros,
                    c.ops == c.min_ops
                        ? ""
                        : (" (min " + Count(c.min_ops) + ")").c_str());
      }
      std::printf("\n");
    }
  }
}

}  // namespace
}  // namespace flowkv

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  flowkv::PrintPairTables();
  benchmark::Shutdown();
  return 0;
}
