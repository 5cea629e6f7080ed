// SPDX-License-Identifier: Apache-2.0
// The flowkv-cluster router: starts the node processes, keeps membership and
// a ClusterView fed by the nodes' NodeLoad reports, places each arriving
// request with a Scheduler (Place), runs Rebalance periodically and carries
// out its role directives live, relays the decode node's blocks and engine
// address to the prefill node, and retries the requests of a node that dies
// (its control socket reaches EOF) on the nodes left. After the run it
// checks every finished request against a colocated run of the same model.
//
//   RouterOptions options;  // nodes, policy, model, ...
//   absl::StatusOr<RunReport> report = RunCluster(options, requests);
//
// One thread runs everything (a poll() loop); nothing here is shared.

#ifndef FLOWKV_TOOLS_CLUSTER_ROUTER_H_
#define FLOWKV_TOOLS_CLUSTER_ROUTER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "flowkv/scheduler.h"
#include "tools/cluster/metrics.h"
#include "tools/cluster/model_runner.h"
#include "tools/cluster/replay.h"

namespace flowkv::cluster {

struct RouterOptions {
  uint32_t prefill_nodes = 2;
  uint32_t decode_nodes = 2;
  // Every node hybrid, each request prefilled and decoded on one node.
  bool colocated = false;
  std::string policy = "load_aware";
  SchedulerOptions scheduler;
  ModelSpec model;
  // Pool layout presets of the nodes deployed as prefill and as decode
  // (colocated nodes: the prefill one). Default: model.kv_preset.
  std::string prefill_kv_preset;
  std::string decode_kv_preset;
  uint32_t blocks_per_node = 1024;
  // Rebalance period, ms (0: never). Default: 500.
  double rebalance_ms = 500;
  double report_ms = 100;
  // Pin node i to CPU core i % (cores available), so nodes compute
  // independently when there are as many cores as nodes.
  bool pin_cores = false;
  // A request is given up after this many attempts.
  uint32_t max_attempts = 4;
  // Fault injection: SIGKILL node `kill_node` once `kill_after` requests
  // finished and a request is in flight on it (-1: never).
  int kill_node = -1;
  uint32_t kill_after = 0;
  // False: the router takes the node down at the kill (the requests in
  // flight on it are retried, deterministically). True: it learns of the
  // death as of any other, from EOF on the node's control socket.
  bool kill_found_by_eof = false;
  // The nodes' cost model for the scheduler (e.g. ModelRunner::Calibrate's
  // fit on this machine). Without one, each node's model is the linear fit
  // of the speeds it measures and reports (the default model until then).
  std::optional<NodeCostModel> node_cost;
  // Progress lines on stderr.
  bool verbose = false;
  // --etcd: membership in the etcd at this endpoint ("": in the router).
  // Each node registers itself (role, engine address) under
  // /flowkv/<cluster_name> with a lease of etcd_ttl_ms; the router joins a
  // node only once its entry is there, and takes down a node whose entry
  // disappears. Needs a build with libcurl (Unimplemented otherwise).
  std::string etcd_endpoint;
  std::string cluster_name = "flowkv";
  double etcd_ttl_ms = 3000;
};

struct RunReport {
  RunInfo info;
  std::vector<RequestRecord> requests;
  std::vector<NodeSample> samples;
};

// Runs the cluster over `requests` (arrival times are ms from the start).
// Errors: the nodes did not start (Unavailable / DeadlineExceeded), an
// unknown policy (NotFound); with etcd: etcd unreachable (Unavailable), the
// cluster name already has members (FailedPrecondition). Requests that fail are
// reported, not an error.
absl::StatusOr<RunReport> RunCluster(
    const RouterOptions& options, const std::vector<ClusterRequest>& requests);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_ROUTER_H_
