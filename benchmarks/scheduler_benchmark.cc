// SPDX-License-Identifier: Apache-2.0
// Scheduler decision cost: BM_Place/<policy>/<nodes> places one request on a
// cluster of <nodes> nodes with random (seeded) loads; BM_Rebalance measures
// one load_aware rebalance cycle.
//
//   build/bin/scheduler_benchmark --benchmark_filter=BM_Place

#include <benchmark/benchmark.h>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "flowkv/scheduler.h"

namespace flowkv {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'000'000);

// Half prefill, half decode, every eighth node hybrid; loads drawn from a
// fixed seed. A fraction of the decode nodes is nearly full so the KV
// capacity check rejects some candidates.
ClusterView MakeCluster(int num_nodes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0, 1);
  ClusterView cluster;
  for (int i = 0; i < num_nodes; ++i) {
    NodeInfo node;
    node.id = static_cast<NodeId>(i);
    node.role = i % 8 == 7   ? NodeRole::kHybrid
                : i % 2 == 0 ? NodeRole::kPrefill
                             : NodeRole::kDecode;
    if (i % 4 == 1) {  // some faster nodes
      node.cost.a /= 2.5;
      node.cost.b /= 2.5;
      node.cost.c /= 2.5;
    }
    if (!cluster.AddNode(node).ok()) std::abort();
    const double total = 30'000;
    const NodeLoad load{
        .queued_prefill_tokens = unit(rng) * 40'000,
        .running_decode = std::floor(unit(rng) * 128),
        .waiting_decode = std::floor(unit(rng) * 4),
        .decode_context_tokens = unit(rng) * 200'000,
        .kv_blocks_used = total * (unit(rng) < 0.1 ? 0.999 : unit(rng) * 0.9),
        .kv_blocks_total = total,
        .utilization = unit(rng)};
    if (!cluster.ReportLoad(node.id, load, kNow).ok()) std::abort();
  }
  // A few explicit links, so Link() does real lookups.
  for (int i = 0; i + 1 < num_nodes; i += 16) {
    cluster.SetLink(static_cast<NodeId>(i), static_cast<NodeId>(i + 1),
                    LinkModel{.bandwidth_bytes_per_s = 12e9});
  }
  return cluster;
}

std::vector<RequestInfo> MakeRequests(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> input(100, 12'000);
  std::uniform_int_distribution<uint32_t> output(16, 512);
  std::vector<RequestInfo> requests(1024);
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i] = {.id = i,
                   .input_tokens = input(rng),
                   .expected_output_tokens = output(rng)};
  }
  return requests;
}

void BM_Place(benchmark::State& state, const std::string& policy) {
  const int num_nodes = static_cast<int>(state.range(0));
  const ClusterView cluster = MakeCluster(num_nodes, 42);
  const std::vector<RequestInfo> requests = MakeRequests(7);
  auto scheduler = CreateScheduler(policy, {});
  if (!scheduler.ok()) {
    state.SkipWithError(std::string(scheduler.status().message()).c_str());
    return;
  }
  size_t i = 0;
  int64_t rejected = 0;
  for (auto _ : state) {
    absl::StatusOr<Placement> where =
        (*scheduler)->Place(requests[i++ & 1023], cluster, kNow);
    if (!where.ok()) ++rejected;
    benchmark::DoNotOptimize(where);
  }
  state.counters["nodes"] = num_nodes;
  state.counters["rejected"] = benchmark::Counter(
      static_cast<double>(rejected), benchmark::Counter::kAvgIterations);
}

void BM_Rebalance(benchmark::State& state) {
  const int num_nodes = static_cast<int>(state.range(0));
  const ClusterView cluster = MakeCluster(num_nodes, 42);
  auto scheduler = CreateScheduler("load_aware", {});
  if (!scheduler.ok()) {
    state.SkipWithError(std::string(scheduler.status().message()).c_str());
    return;
  }
  for (auto _ : state) {
    RebalancePlan plan = (*scheduler)->Rebalance(cluster, kNow);
    benchmark::DoNotOptimize(plan);
  }
  state.counters["nodes"] = num_nodes;
}

const bool kRegistered = [] {
  for (const char* policy : {"round_robin", "least_loaded", "kv_cost",
                             "load_aware", "kv_aware", "prefix_cost"}) {
    benchmark::RegisterBenchmark(
        (std::string("BM_Place/") + policy).c_str(),
        [policy](benchmark::State& state) { BM_Place(state, policy); })
        ->Arg(8)
        ->Arg(64)
        ->Arg(1024);
  }
  return true;
}();

BENCHMARK(BM_Rebalance)->Arg(8)->Arg(64)->Arg(1024);

// --- simulator speed: see the simulator's benchmark -------------------------

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
