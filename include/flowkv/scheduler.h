// SPDX-License-Identifier: Apache-2.0
// Scheduler: places each request on a prefill (P) node and a decode (D) node,
// and tells nodes to change roles when load is imbalanced.
//
// A router keeps a ClusterView up to date from the nodes' NodeLoad reports
// and asks a Scheduler for a Placement per request and, periodically, for a
// RebalancePlan. Policies are registered by name and created by name:
//
//   flowkv::ClusterView cluster;
//   cluster.AddNode({.id = 0, .role = flowkv::NodeRole::kPrefill});
//   cluster.AddNode({.id = 1, .role = flowkv::NodeRole::kDecode});
//   auto scheduler = flowkv::CreateScheduler("load_aware", {});
//   if (!scheduler.ok()) return scheduler.status();
//   absl::StatusOr<flowkv::Placement> where =
//       (*scheduler)->Place({.id = 7, .input_tokens = 8000}, cluster, now);
//
// The simulator (flowkv/sim/simulator.h) drives the very same Scheduler
// objects, so a policy measured there is the policy a router runs.

#ifndef FLOWKV_SCHEDULER_H_
#define FLOWKV_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "flowkv/export.h"
#include "flowkv/prefix_index.h"

namespace flowkv {

using NodeId = uint32_t;

enum class NodeRole : uint8_t { kPrefill, kDecode, kHybrid };

// "prefill", "decode", "hybrid".
FLOWKV_EXPORT const char* NodeRoleName(NodeRole role);

// Whether a node working as `role` takes the prefill / decode phase of
// requests (a hybrid node takes both).
inline bool ServesPrefill(NodeRole role) { return role != NodeRole::kDecode; }
inline bool ServesDecode(NodeRole role) { return role != NodeRole::kPrefill; }

// Per-node cost model, times in milliseconds (see docs/simulator.md):
//   prefill(n)          = a + b*n + c*n^2   (n prompt tokens in a batch)
//   decode_step(B, ctx) = t0 + k*ctx + e*B  (B requests, ctx total tokens)
// Default: Llama-3.1-8B on one A100.
struct NodeCostModel {
  double a = 15.0;
  double b = 0.066;
  double c = 1.7e-6;
  double t0 = 9.0;
  double k = 6.5e-5;
  double e = 0.05;

  double PrefillMs(double tokens) const {
    return a + b * tokens + c * tokens * tokens;
  }
  double DecodeStepMs(double batch, double context_tokens) const {
    return t0 + k * context_tokens + e * batch;
  }
};

// What a node reports about itself. The ClusterView smooths the numeric
// fields (exponential moving average) as reports arrive, except
// kv_blocks_total, a capacity, which it takes as reported. Node speed is the
// node's NodeCostModel (NodeInfo::cost). All fields must be finite and >= 0.
struct NodeLoad {
  // Prompt tokens queued for prefill, not yet computed (a prefix the node
  // found in its cache is not queued).
  double queued_prefill_tokens = 0;
  // The node's own estimate of the time its queued prefill work takes, ms,
  // including what is left of a prefill step in progress: an engine knows
  // its queue's prompts, so it can price each with its cost model (a few
  // long prompts take longer than many short ones of the same total). 0:
  // no estimate (kv_aware then estimates from queued_prefill_tokens).
  double queued_prefill_ms = 0;
  // Decode requests running in the batch, and waiting to join it.
  double running_decode = 0;
  double waiting_decode = 0;
  // Sum of the context lengths of the running decode requests.
  double decode_context_tokens = 0;
  // KV cache blocks in use and in total (total 0: capacity unknown, treated
  // as unlimited by the built-in policies).
  double kv_blocks_used = 0;
  double kv_blocks_total = 0;
  // Fraction of time the node computed over the last report period, [0, 1].
  double utilization = 0;
};

// A link between two nodes, for predicting KV transfer time:
//   transfer_ms = fixed_ms + calls * call_overhead_ms + bytes / bandwidth.
struct LinkModel {
  // Default: one machine, FlowKV Table 3 calibration (docs/design.md).
  double bandwidth_bytes_per_s = 23.5e9;
  double call_overhead_ms = 0.045;
  double fixed_ms = 1.5;

  double TransferMs(double bytes, double calls) const {
    return fixed_ms + calls * call_overhead_ms +
           bytes / bandwidth_bytes_per_s * 1e3;
  }
};

// A node as the scheduler sees it.
struct NodeInfo {
  NodeId id = 0;
  // The role the node was deployed with.
  NodeRole role = NodeRole::kHybrid;
  // The role it works as now (differs from `role` while a directive holds).
  NodeRole current_role = NodeRole::kHybrid;
  // Rebalance cycles left before current_role returns to role.
  uint32_t role_cycles_left = 0;
  NodeCostModel cost;
  // KV bytes one token takes on this node (all layers, K and V).
  double kv_bytes_per_token = 128 * 1024;
  // Tokens per KV block on this node.
  uint32_t block_tokens = 16;
  // Smoothed load and when it was last reported.
  NodeLoad load;
  absl::Time last_report = absl::InfinitePast();
  // False once the node is removed or marked down; the scheduler skips it.
  bool available = true;
};

// The router's view of the cluster: nodes, their smoothed loads, the links
// between them, and which KV blocks each node has cached (prefix_index(),
// fed by the router from the nodes' KV events). Lookups by id (Find, Link)
// are O(1) on average.
// Thread safety: externally synchronized (one router thread owns it; a
// Scheduler only reads it during Place / Rebalance).
class FLOWKV_EXPORT ClusterView {
 public:
  struct Options {
    // Weight of a new report in the moving average, (0, 1]; values outside
    // are clamped into it (1 = no smoothing). Default: 0.5.
    double smoothing = 0.5;
    // Reports older than this make a node stale: it is not placed on.
    // Default: 5 s.
    absl::Duration stale_after = absl::Seconds(5);
    // Link used for pairs without an explicit SetLink. Default: LinkModel{}.
    LinkModel default_link;
  };

  ClusterView();
  explicit ClusterView(const Options& options);

  // Adds a node; its current_role is set to `role` and role_cycles_left to
  // 0 (a new node starts in its deployed role). Adding the id of a removed
  // node replaces it and makes it available again (and forgets what the
  // prefix index knew of it). InvalidArgument when the
  // id is present and available, or when block_tokens is 0,
  // kv_bytes_per_token is negative or a field is not finite.
  absl::Status AddNode(const NodeInfo& node);
  // Marks a node unavailable. NotFound for an unknown id.
  absl::Status RemoveNode(NodeId id);

  // Folds `load` into the node's smoothed load:
  //   smoothed = smoothing * load + (1 - smoothing) * smoothed.
  // The first report, and the first after the node went stale, is taken as
  // is. NotFound for an unknown id: reports from unknown nodes are refused.
  // InvalidArgument for a negative or non-finite field, utilization above 1,
  // or kv_blocks_used above a non-zero kv_blocks_total. A removed node's
  // report is recorded; the node stays unavailable.
  absl::Status ReportLoad(NodeId id, const NodeLoad& load, absl::Time now);

  // Applies a role directive: the node works as `role` for `cycles`
  // rebalance cycles. `role` equal to the deployed role ends a directive
  // (cycles ignored). NotFound for an unknown id; InvalidArgument when
  // cycles is 0 for a role other than the deployed one.
  absl::Status SetRole(NodeId id, NodeRole role, uint32_t cycles);
  // One rebalance cycle passed: counts down role_cycles_left, and returns
  // nodes whose count reaches 0 to their deployed role.
  void TickRoleCycles();

  // Sets the link used for KV sent from `from` to `to` (directional; ids
  // need not be added yet). REQUIRES: bandwidth_bytes_per_s > 0.
  void SetLink(NodeId from, NodeId to, const LinkModel& link);
  // The link set for (from, to), else options().default_link.
  const LinkModel& Link(NodeId from, NodeId to) const;

  // Nodes in the order they were added.
  const std::vector<NodeInfo>& nodes() const { return nodes_; }
  // nullptr for an unknown id.
  const NodeInfo* Find(NodeId id) const;
  NodeInfo* FindMutable(NodeId id);

  // Available and reported within stale_after of `now` (a node never
  // reported is fresh: it is idle by definition).
  bool IsUsable(const NodeInfo& node, absl::Time now) const;

  const Options& options() const { return options_; }

  // Which blocks each node has cached, by node id. The router applies each
  // node's KV events here (PrefixIndex::ApplyStored, ...); the prefix-aware
  // policies (kv_aware, prefix_cost) read it in Place.
  PrefixIndex& prefix_index() { return prefix_index_; }
  const PrefixIndex& prefix_index() const { return prefix_index_; }

 private:
  Options options_;
  PrefixIndex prefix_index_;
  std::vector<NodeInfo> nodes_;
  std::unordered_map<NodeId, size_t> index_;
  // Keyed by (from << 32) | to.
  std::unordered_map<uint64_t, LinkModel> links_;
};

// One request as the router knows it at arrival.
struct RequestInfo {
  uint64_t id = 0;
  uint32_t input_tokens = 0;
  // Expected output length (an estimate; 0 when unknown).
  uint32_t expected_output_tokens = 0;
  // The hash of each full KV block of the prompt, in order, in the nodes'
  // block_tokens granularity and with the nodes' chained hashing (each hash
  // names its block and every block before it; see flowkv/prefix_index.h).
  // Empty when unknown: the prefix-aware policies then see no cached
  // prefix. Not owned: the hashes must outlive the Place call.
  absl::Span<const uint64_t> block_hashes = {};
};

// Where a request runs. prefill_node == decode_node for a colocated
// (hybrid) placement, whose KV needs no transfer.
struct Placement {
  NodeId prefill_node = 0;
  NodeId decode_node = 0;
  // The policy's prediction, for logs and metrics (0 when it has none):
  // queue wait + prefill time on the P node, and KV transfer time P -> D.
  double predicted_ttft_ms = 0;
  double predicted_transfer_ms = 0;

  bool colocated() const { return prefill_node == decode_node; }
};

// Node `node` works as `role` for `cycles` rebalance cycles.
struct RoleDirective {
  NodeId node = 0;
  NodeRole role = NodeRole::kHybrid;
  uint32_t cycles = 0;
};

enum class ScaleAdvice : uint8_t { kNone, kScaleOut, kScaleIn };

struct RebalancePlan {
  std::vector<RoleDirective> directives;
  ScaleAdvice scale = ScaleAdvice::kNone;
  // Human-readable evidence for the directives and the advice.
  std::string reason;
  // The load scores the plan was based on (mean over usable nodes serving
  // each phase; see docs/scheduler.md). 0 for policies without scores.
  double prefill_score = 0;
  double decode_score = 0;
};

// A placement policy.
// Thread safety: externally synchronized (a policy may keep state, such as a
// round-robin cursor or its imbalance counters).
class FLOWKV_EXPORT Scheduler {
 public:
  virtual ~Scheduler() = default;

  // The name it was registered under.
  virtual std::string_view name() const = 0;

  // Chooses a P and a D node for `request`. Errors (nothing placed):
  // Unavailable when no usable node can serve a phase; ResourceExhausted
  // when usable decode nodes exist but none has KV capacity for the request
  // (policies that check capacity: kv_cost, load_aware, see
  // docs/scheduler.md). The built-in policies do not allocate on success.
  virtual absl::StatusOr<Placement> Place(const RequestInfo& request,
                                          const ClusterView& cluster,
                                          absl::Time now) = 0;

  // Called periodically by the router, once per rebalance cycle; returns
  // role directives and scale advice (empty for fixed-role policies). The
  // caller applies directives with ClusterView::SetRole and calls
  // ClusterView::TickRoleCycles once per cycle.
  virtual RebalancePlan Rebalance(const ClusterView& cluster, absl::Time now);
};

// Options for creating a policy. `params` holds policy-specific knobs by
// name (documented per policy in docs/scheduler.md); unknown names are an
// InvalidArgument error at creation.
struct SchedulerOptions {
  std::map<std::string, double> params;
};

using SchedulerFactory =
    std::function<absl::StatusOr<std::unique_ptr<Scheduler>>(
        const SchedulerOptions&)>;

// Registers a policy under `name`. AlreadyExists when the name is taken.
// Thread-safe.
FLOWKV_EXPORT absl::Status RegisterScheduler(const std::string& name,
                                             SchedulerFactory factory);

// Creates the policy registered as `name`: NotFound (listing the known
// names) when there is none. Built-in: "round_robin", "least_loaded",
// "kv_cost", "load_aware", "kv_aware", "prefix_cost". Thread-safe.
FLOWKV_EXPORT absl::StatusOr<std::unique_ptr<Scheduler>> CreateScheduler(
    const std::string& name, const SchedulerOptions& options);

// The registered names, sorted. Thread-safe.
FLOWKV_EXPORT std::vector<std::string> RegisteredSchedulers();

}  // namespace flowkv

#endif  // FLOWKV_SCHEDULER_H_
