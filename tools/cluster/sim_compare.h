// SPDX-License-Identifier: Apache-2.0
// The simulator's prediction for a flowkv-cluster run (--compare_sim): the
// same requests, node roles, policy and rebalance period through
// flowkv::Simulate, with every node's cost model `cost` (ModelRunner::
// Calibrate's fit on this machine) and the model's KV geometry.
//
// Thread safety: a pure function (it times the model, so run it while the
// cluster is idle).

#ifndef FLOWKV_TOOLS_CLUSTER_SIM_COMPARE_H_
#define FLOWKV_TOOLS_CLUSTER_SIM_COMPARE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "tools/cluster/replay.h"
#include "tools/cluster/router.h"

namespace flowkv::cluster {

struct SimPrediction {
  double ttft_mean_ms = 0;
  double e2e_mean_ms = 0;
};

// Errors: the model's (creating it) and the simulator's.
absl::StatusOr<SimPrediction> PredictWithSimulator(
    const RouterOptions& options, const std::vector<ClusterRequest>& requests,
    const NodeCostModel& cost);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_SIM_COMPARE_H_
