// SPDX-License-Identifier: Apache-2.0
// Simulated cluster: GPU node types with their cost coefficients and KV
// capacity, and the `--cluster` spec that lists a cluster's nodes.
//
// A cluster spec is a comma-separated list of groups ROLE:TYPE[xCOUNT]:
//
//   "p:a100x1,d:a100x1"    one prefill and one decode A100 (1P1D)
//   "hybrid:a100x2"        two colocated A100s (both phases on each node)
//   "p:l20x4,d:h20x4"      heterogeneous: prefill on L20s, decode on H20s
//
// ROLE is p|prefill, d|decode or h|hybrid; TYPE is a name from NodeTypes().
// Nodes get ids 0, 1, ... in the order of the spec.
//
//   absl::StatusOr<std::vector<flowkv::SimNodeSpec>> nodes =
//       flowkv::ParseClusterSpec("p:a100x2,d:h100x2");
//
// Thread safety: the functions are thread-safe (pure, or read-only tables).

#ifndef FLOWKV_SIM_CLUSTER_H_
#define FLOWKV_SIM_CLUSTER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/export.h"
#include "flowkv/scheduler.h"

namespace flowkv {

// One kind of GPU serving Llama-3.1-8B (16 GB of BF16 weights). Sources of
// the coefficients: docs/simulator.md.
struct NodeType {
  std::string name;
  // Device memory, bytes.
  double memory_bytes = 0;
  // Bytes left for the KV cache: memory minus the 16 GB of weights.
  double kv_capacity_bytes = 0;
  NodeCostModel cost;
};

// The built-in node types: a100, h100, l20, h20.
FLOWKV_EXPORT absl::Span<const NodeType> NodeTypes();

// The node type called `name`. NotFound (listing the known names) otherwise.
FLOWKV_EXPORT absl::StatusOr<NodeType> FindNodeType(std::string_view name);

// One node of a simulated cluster.
struct SimNodeSpec {
  NodeRole role = NodeRole::kHybrid;
  NodeType type;
};

// Parses a cluster spec (see the file comment). InvalidArgument naming the
// bad group for a malformed spec, an unknown role or a count outside
// [1, 4096]; NotFound for an unknown node type.
FLOWKV_EXPORT absl::StatusOr<std::vector<SimNodeSpec>> ParseClusterSpec(
    std::string_view spec);

// "p:a100x1,d:a100x1" for the nodes (consecutive equal nodes grouped).
FLOWKV_EXPORT std::string ClusterSpecString(
    absl::Span<const SimNodeSpec> nodes);

}  // namespace flowkv

#endif  // FLOWKV_SIM_CLUSTER_H_
