// SPDX-License-Identifier: Apache-2.0
// The simulator's view of a flowkv-cluster run (see sim_compare.h).

#include "tools/cluster/sim_compare.h"

#include <set>

#include "flowkv/sim/cluster.h"
#include "flowkv/sim/simulator.h"
#include "flowkv/sim/workload.h"

namespace flowkv::cluster {

LinkModel FitLink(const std::vector<RequestRecord>& records) {
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  std::set<uint64_t> sizes;
  for (const RequestRecord& r : records) {
    if (!r.finished || r.kv_bytes == 0 || !(r.transfer_ms > 0)) continue;
    const double x = static_cast<double>(r.kv_bytes), y = r.transfer_ms;
    n += 1, sx += x, sy += y, sxx += x * x, sxy += x * y;
    sizes.insert(r.kv_bytes);
  }
  LinkModel link;
  if (n == 0) return link;
  link.call_overhead_ms = 0;
  link.bandwidth_bytes_per_s = 1e15;
  link.fixed_ms = sy / n;
  const double var = sxx - sx * sx / n;
  if (sizes.size() < 2 || !(var > 0)) return link;
  double slope = (sxy - sx * sy / n) / var;  // ms per byte
  double fixed = (sy - slope * sx) / n;
  if (slope <= 0) return link;  // no size effect: the mean
  if (fixed < 0) {              // through the origin
    fixed = 0;
    slope = sxy / sxx;
  }
  link.fixed_ms = fixed;
  link.bandwidth_bytes_per_s = 1e3 / slope;
  return link;
}

absl::StatusOr<sim_tools::ClusterFile> MeasuredCluster(
    const RouterOptions& options, const NodeCostModel& cost,
    const LinkModel& link) {
  absl::StatusOr<std::unique_ptr<ModelRunner>> model =
      ModelRunner::Create(options.model);
  if (!model.ok()) return model.status();
  absl::StatusOr<KvLayout> layout = (*model)->MakeLayout(1);
  if (!layout.ok()) return layout.status();
  sim_tools::ClusterFile f;
  f.type.name = "cpu";
  f.type.kv_capacity_bytes =
      static_cast<double>(options.blocks_per_node) *
      options.model.block_tokens *
      static_cast<double>((*model)->kv_bytes_per_token());
  f.type.memory_bytes = f.type.kv_capacity_bytes;
  f.type.cost = cost;
  f.link = link;
  f.geometry = layout->geometry();
  f.geometry.num_blocks = 1;
  const uint32_t total = options.prefill_nodes + options.decode_nodes;
  if (options.colocated) {
    f.hybrid_nodes = total;
  } else {
    f.prefill_nodes = options.prefill_nodes;
    f.decode_nodes = options.decode_nodes;
  }
  return f;
}

absl::StatusOr<SimPrediction> PredictWithSimulator(
    const RouterOptions& options, const std::vector<ClusterRequest>& requests,
    const sim_tools::ClusterFile& cluster) {
  std::vector<SimRequest> sim_requests;
  for (const ClusterRequest& r : requests) {
    sim_requests.push_back(
        {.id = r.id,
         .arrival_ms = r.arrival_ms,
         .input_tokens = static_cast<uint32_t>(r.prompt.size()),
         .output_tokens = r.max_new});
  }
  SimOptions so;
  so.policy = options.policy;
  so.scheduler_options = options.scheduler;
  so.model = cluster.geometry;
  so.link = cluster.link;
  so.rebalance_interval_ms = options.colocated ? 0 : options.rebalance_ms;
  so.heartbeat_interval_ms = options.report_ms;
  so.colocate_hybrid = true;
  so.keep_requests = false;
  absl::StatusOr<SimResult> result =
      Simulate(cluster.Nodes(), sim_requests, so);
  if (!result.ok()) return result.status();
  return SimPrediction{result->ttft_ms.mean, result->e2e_ms.mean};
}

}  // namespace flowkv::cluster
