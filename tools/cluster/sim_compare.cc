// SPDX-License-Identifier: Apache-2.0
// The simulator's view of a flowkv-cluster run (see sim_compare.h).

#include "tools/cluster/sim_compare.h"

#include "flowkv/sim/cluster.h"
#include "flowkv/sim/simulator.h"
#include "flowkv/sim/workload.h"

namespace flowkv::cluster {

absl::StatusOr<SimPrediction> PredictWithSimulator(
    const RouterOptions& options, const std::vector<ClusterRequest>& requests,
    const NodeCostModel& cost) {
  absl::StatusOr<std::unique_ptr<ModelRunner>> model =
      ModelRunner::Create(options.model);
  if (!model.ok()) return model.status();
  absl::StatusOr<KvLayout> layout = (*model)->MakeLayout(1);
  if (!layout.ok()) return layout.status();

  NodeType type;
  type.name = "cpu";
  type.kv_capacity_bytes = static_cast<double>(options.blocks_per_node) *
                           options.model.block_tokens *
                           static_cast<double>((*model)->kv_bytes_per_token());
  type.memory_bytes = type.kv_capacity_bytes;
  type.cost = cost;
  std::vector<SimNodeSpec> nodes;
  for (uint32_t i = 0; i < options.prefill_nodes + options.decode_nodes; ++i) {
    const NodeRole role = options.colocated           ? NodeRole::kHybrid
                          : i < options.prefill_nodes ? NodeRole::kPrefill
                                                      : NodeRole::kDecode;
    nodes.push_back({role, type});
  }
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
  so.model = layout->geometry();
  so.model.num_blocks = 1;
  so.rebalance_interval_ms = options.colocated ? 0 : options.rebalance_ms;
  so.heartbeat_interval_ms = options.report_ms;
  so.colocate_hybrid = true;
  so.keep_requests = false;
  absl::StatusOr<SimResult> result = Simulate(nodes, sim_requests, so);
  if (!result.ok()) return result.status();
  return SimPrediction{result->ttft_ms.mean, result->e2e_ms.mean};
}

}  // namespace flowkv::cluster
