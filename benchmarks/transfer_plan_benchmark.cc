// Planning speed of TransferPlan for an 8k-token Llama-3.1-8B request
// (32 layers, 8 KV heads, head_dim 128, 2-byte dtype, 16-token blocks).
//
//   build/bin/transfer_plan_benchmark
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
#include <benchmark/benchmark.h>
#include <vector>

#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"
#include "flowkv/transfer_plan.h"

namespace flowkv {
namespace {

constexpr uint32_t kTokens = 8192;
constexpr uint32_t kBlocks = kTokens / 16;

KvLayout Layout(PoolOrder pool, BlockOrder block = BlockOrder::kNHD,
                uint32_t kv_heads = 8) {
  return *KvLayout::Create({.geometry = {.num_layers = 32,
                                         .num_blocks = 8192,
                                         .block_tokens = 16,
                                         .kv_heads = kv_heads,
                                         .head_dim = 128,
                                         .dtype_bytes = 2},
                            .pool_order = pool,
                            .block_order = block});
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

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
