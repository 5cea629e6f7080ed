// SPDX-License-Identifier: Apache-2.0
// Simulator speed: simulated requests per second of wall time.
//
//   build/bin/sim_benchmark
//
// BM_Simulate/<workload>/<nodes>: one Simulate call per iteration on a
// p:a100xN/2,d:a100xN/2 cluster; items_per_second = simulated requests per
// second of wall time (UseRealTime).

#include <benchmark/benchmark.h>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "flowkv/sim/cluster.h"
#include "flowkv/sim/simulator.h"
#include "flowkv/sim/workload.h"

namespace flowkv {
namespace {

void Simulate(benchmark::State& state, const std::string& workload,
              double rate_per_node, const std::string& policy) {
  const int nodes = static_cast<int>(state.range(0));
  const std::string spec =
      absl::StrCat("p:a100x", nodes / 2, ",d:a100x", nodes / 2);
  absl::StatusOr<std::vector<SimNodeSpec>> cluster = ParseClusterSpec(spec);
  absl::StatusOr<std::vector<SimRequest>> reqs =
      MakeWorkload({.spec = workload,
                    .rate = rate_per_node * nodes,
                    .num_requests = 2000,
                    .seed = 1});
  if (!cluster.ok() || !reqs.ok()) {
    state.SkipWithError("setup failed");
    return;
  }
  SimOptions options;
  options.policy = policy;
  options.keep_requests = false;
  uint64_t events = 0;
  for (auto _ : state) {
    absl::StatusOr<SimResult> r = flowkv::Simulate(*cluster, *reqs, options);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    events += r->events;
    benchmark::DoNotOptimize(r->e2e_ms.mean);
  }
  state.SetItemsProcessed(state.iterations() * reqs->size());
  state.counters["events_per_s"] = benchmark::Counter(
      static_cast<double>(events), benchmark::Counter::kIsRate);
}

void BM_Simulate_Synthetic(benchmark::State& state) {
  Simulate(state, "synthetic:2000:256", 1.0, "load_aware");
}
void BM_Simulate_GovReport(benchmark::State& state) {
  Simulate(state, "gov_report", 0.4, "load_aware");
}
void BM_Simulate_RoundRobin(benchmark::State& state) {
  Simulate(state, "synthetic:2000:256", 1.0, "round_robin");
}

BENCHMARK(BM_Simulate_Synthetic)
    ->Arg(2)
    ->Arg(8)
    ->Arg(64)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Simulate_GovReport)
    ->Arg(2)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Simulate_RoundRobin)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace flowkv

BENCHMARK_MAIN();
