// SPDX-License-Identifier: Apache-2.0
// What a flowkv-cluster run measured: one row per request, samples of each
// node's role and queue over time, the run's counters, and the summary and
// JSON built from them (the JSON's fields are listed in docs/cluster.md).
// Times are steady-clock ms since the start of the run.
//
// Thread safety: plain values and pure functions.

#ifndef FLOWKV_TOOLS_CLUSTER_METRICS_H_
#define FLOWKV_TOOLS_CLUSTER_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "flowkv/scheduler.h"

namespace flowkv::cluster {

struct RequestRecord {
  uint64_t id = 0;
  uint32_t prompt_tokens = 0;
  uint32_t output_tokens = 0;
  double arrival_ms = 0;
  // First token known at the router (prefill done), and last token.
  double first_token_ms = -1;
  double finish_ms = -1;
  bool finished = false;
  bool failed = false;
  // Attempts beyond the first (a node died under it, or it was refused).
  uint32_t retries = 0;
  uint32_t prefill_node = 0;
  uint32_t decode_node = 0;
  uint64_t kv_bytes = 0;
  double transfer_ms = 0;
  // The prefill's compute time on its node.
  double prefill_ms = 0;
  // Compared with the colocated reference after the run.
  bool exact = false;
  std::vector<uint32_t> tokens;

  double ttft_ms() const { return first_token_ms - arrival_ms; }
  double e2e_ms() const { return finish_ms - arrival_ms; }
  // Mean time per output token after the first (0 for one token).
  double tpot_ms() const {
    return tokens.size() > 1 ? (finish_ms - first_token_ms) /
                                   static_cast<double>(tokens.size() - 1)
                             : 0;
  }
};

struct NodeSample {
  double t_ms = 0;
  uint32_t node = 0;
  NodeRole role = NodeRole::kHybrid;
  double queued_prefill_tokens = 0;
  double running_decode = 0;
  double kv_blocks_used = 0;
};

struct RunInfo {
  std::string policy;
  std::string workload;
  bool colocated = false;
  uint32_t prefill_nodes = 0;
  uint32_t decode_nodes = 0;
  double length_scale = 1;
  double duration_ms = 0;
  uint64_t role_switches = 0;
  uint64_t rebalances = 0;
  std::vector<uint32_t> killed_nodes;
  // --etcd: the nodes found registered in etcd at the start, and those whose
  // entries disappeared during the run (lease expired, or revoked).
  bool etcd = false;
  uint32_t etcd_members = 0;
  std::vector<uint32_t> etcd_lost_nodes;
  // Set when the run was compared with the simulator (--compare-sim).
  bool has_sim = false;
  double sim_ttft_mean_ms = 0;
  double sim_e2e_mean_ms = 0;
};

struct Distribution {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};
Distribution Summarize(std::vector<double> values);

// The JSON document: run info, summary and per-request rows, node samples.
std::string RunJson(const RunInfo& info,
                    const std::vector<RequestRecord>& requests,
                    const std::vector<NodeSample>& samples);
// A few lines for the terminal.
std::string RunTable(const RunInfo& info,
                     const std::vector<RequestRecord>& requests);

}  // namespace flowkv::cluster

#endif  // FLOWKV_TOOLS_CLUSTER_METRICS_H_
