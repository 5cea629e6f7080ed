// SPDX-License-Identifier: Apache-2.0
// The cluster file: a measured cluster for flowkv-sim. `flowkv-cluster
// --calibrate --cluster_file F` writes one (its model's cost per token on
// this machine, the KV transfer cost its nodes measured, the node pool and
// the cluster's shape); `flowkv-sim --cluster_file F` simulates that cluster
// instead of a --cluster of built-in GPU types. Text, one "key = value" a
// line, '#' starts a comment; every key once:
//
//   node_type = cpu                      # a name for the node type
//   memory_bytes = 33554432              # = kv_capacity_bytes on a CPU
//   kv_capacity_bytes = 33554432
//   prefill_ms = A B C                   # a + b n + c n^2   (NodeCostModel)
//   decode_ms = T0 K E                   # t0 + k ctx + e batch
//   link_bandwidth_bytes_per_s = 1.2e9   # LinkModel
//   link_call_overhead_ms = 0
//   link_fixed_ms = 0.4
//   kv_geometry = 2 16 2 16 4 2          # the model's KV: layers, block
//                                        # tokens, kv heads, head dim,
//                                        # dtype bytes, parts (KvGeometry)
//   prefill_nodes = 2                    # the cluster: P + D nodes,
//   decode_nodes = 2                     # or hybrid (colocated) nodes
//   hybrid_nodes = 0
//
// Thread safety: pure functions.
#ifndef FLOWKV_TOOLS_SIM_CLUSTER_FILE_H_
#define FLOWKV_TOOLS_SIM_CLUSTER_FILE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "flowkv/kv_layout.h"
#include "flowkv/scheduler.h"
#include "flowkv/sim/cluster.h"

namespace flowkv::sim_tools {

struct ClusterFile {
  NodeType type;
  LinkModel link;
  // SimOptions::model (num_blocks is not part of the file: 1).
  KvGeometry geometry;
  uint32_t prefill_nodes = 0;
  uint32_t decode_nodes = 0;
  uint32_t hybrid_nodes = 0;

  // The nodes, prefill first, then decode, then hybrid (ids in that order).
  std::vector<SimNodeSpec> Nodes() const;
};

// The file's text (parses back to the same values).
std::string FormatClusterFile(const ClusterFile& file);
// InvalidArgument naming the line for an unknown, repeated or missing key,
// a value that is not a finite number >= 0 (bandwidth > 0; kv_geometry
// whole numbers >= 1, at most 2^20), no node, or
// more than 4096 nodes.
absl::StatusOr<ClusterFile> ParseClusterFile(std::string_view text);
// Reads and parses `path` (NotFound when it cannot be read).
absl::StatusOr<ClusterFile> ReadClusterFile(const std::string& path);
// Writes `file` to `path` (Unavailable when it cannot be written).
absl::Status WriteClusterFile(const std::string& path, const ClusterFile& file);

}  // namespace flowkv::sim_tools

#endif  // FLOWKV_TOOLS_SIM_CLUSTER_FILE_H_
