// SPDX-License-Identifier: Apache-2.0
// The simulator's view of a flowkv-cluster run (--compare_sim and
// --cluster_file): the cluster file of the run (tools/sim/cluster_file.h:
// every node's cost model, ModelRunner::Calibrate's fit on this machine;
// the model's KV geometry and pool; the link fitted to the run's own
// KvTransfers between its node processes), and the simulator's prediction
// for the same requests, node roles, policy and rebalance period through
// flowkv::Simulate.
//
// Thread safety: pure functions.

#ifndef FLOWKV_TOOLS_CLUSTER_SIM_COMPARE_H_
#define FLOWKV_TOOLS_CLUSTER_SIM_COMPARE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "tools/cluster/metrics.h"
#include "tools/cluster/replay.h"
#include "tools/cluster/router.h"
#include "tools/sim/cluster_file.h"

namespace flowkv::cluster {

struct SimPrediction {
  double ttft_mean_ms = 0;
  double e2e_mean_ms = 0;
};

// The link a run's transfers fit: transfer_ms = fixed + bytes / bandwidth,
// least squares over the finished requests that moved KV, both terms >= 0
// (no call overhead term: the cluster's calls are per layer, folded into
// the two). With fewer than two distinct sizes, fixed is the mean time and
// the bandwidth unbounded (1e15 B/s); with no transfer, LinkModel{}.
LinkModel FitLink(const std::vector<RequestRecord>& records);

// The cluster file of `options`' cluster with cost model `cost` and `link`.
// Errors: the model's (creating it).
absl::StatusOr<sim_tools::ClusterFile> MeasuredCluster(
    const RouterOptions& options, const NodeCostModel& cost,
    const LinkModel& link);

// Errors: the simulator's.
absl::StatusOr<SimPrediction> PredictWithSimulator(
    const RouterOptions& options, const std::vector<ClusterRequest>& requests,
    const sim_tools::ClusterFile& cluster);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_SIM_COMPARE_H_
