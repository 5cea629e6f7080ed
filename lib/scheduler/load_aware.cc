// SPDX-License-Identifier: Apache-2.0
// load_aware: FlowKV's load-aware policy. See docs/scheduler.md for every
// formula, option and default used here.

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/scheduler/policy_util.h"

namespace flowkv::internal {
namespace {

constexpr std::string_view kName = "load_aware";
constexpr double kInf = std::numeric_limits<double>::infinity();

struct LoadAwareParams {
  // Placement.
  double prefill_chunk_tokens = 8192;
  double transfer_calls_per_request = 1;
  double transfer_calls_per_block = 0;
  double default_output_tokens = 128;
  double decode_weight = 1;
  // Load scores.
  double prefill_target_ms = 1000;
  double decode_batch_slots = 256;
  // Rebalancing.
  double overload_score = 1.0;
  double idle_score = 0.2;
  uint32_t overload_cycles = 3;
  uint32_t switch_cycles = 20;
  bool switch_to_hybrid = false;
  uint32_t min_role_nodes = 1;
  bool hybrid_fallback = false;
  uint32_t scale_cycles = 3;
};

// Thread safety: externally synchronized (tie-break cursor, imbalance
// counters).
class LoadAware final : public Scheduler {
 public:
  explicit LoadAware(const LoadAwareParams& params) : params_(params) {}

  std::string_view name() const override { return kName; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override;
  RebalancePlan Rebalance(const ClusterView& cluster, absl::Time now) override;

 private:
  // Queue wait of a prefill node (ms).
  double QueueWaitMs(const NodeInfo& node) const {
    return ChunkedPrefillMs(node.cost, node.load.queued_prefill_tokens,
                            params_.prefill_chunk_tokens);
  }
  double PrefillScore(const NodeInfo& node) const {
    return QueueWaitMs(node) / params_.prefill_target_ms;
  }
  double DecodeScore(const NodeInfo& node) const {
    const NodeLoad& l = node.load;
    const double kv =
        l.kv_blocks_total > 0 ? l.kv_blocks_used / l.kv_blocks_total : 0;
    return std::max(
        kv, (l.running_decode + l.waiting_decode) / params_.decode_batch_slots);
  }

  const LoadAwareParams params_;
  // Where the argmin scans start: just after the last node chosen for each
  // phase, so equally loaded nodes take turns.
  size_t p_start_ = 0;
  size_t d_start_ = 0;
  // Consecutive Rebalance cycles each condition held.
  uint32_t prefill_over_cycles_ = 0;
  uint32_t decode_over_cycles_ = 0;
  uint32_t both_over_cycles_ = 0;
  uint32_t all_idle_cycles_ = 0;
};

absl::StatusOr<Placement> LoadAware::Place(const RequestInfo& request,
                                           const ClusterView& cluster,
                                           absl::Time now) {
  const std::vector<NodeInfo>& nodes = cluster.nodes();
  const UsableAt at(cluster, now);
  const double kv_tokens = KvTokens(request, params_.default_output_tokens);
  const double input = request.input_tokens;
  const double output = kv_tokens - input;
  const double chunk = params_.prefill_chunk_tokens;

  // P = argmin predicted TTFT = queue wait + this prompt's prefill (+ the
  // decode steps a hybrid node interleaves with its prefill chunks).
  SkipCounts p_skips;
  const NodeInfo* p = nullptr;
  double p_ttft = kInf;
  ForEachFrom(nodes, p_start_, [&](const NodeInfo& node) {
    if (!Candidate(node, /*prefill=*/true, at, &p_skips)) return;
    const NodeLoad& l = node.load;
    double ttft = ChunkedPrefillMs(node.cost, l.queued_prefill_tokens, chunk) +
                  ChunkedPrefillMs(node.cost, input, chunk);
    if (node.current_role == NodeRole::kHybrid && l.running_decode > 0) {
      const double chunks =
          std::ceil((l.queued_prefill_tokens + input) / chunk);
      ttft += chunks *
              node.cost.DecodeStepMs(l.running_decode, l.decode_context_tokens);
    }
    if (p == nullptr || ttft < p_ttft) {
      p = &node;
      p_ttft = ttft;
    }
  });
  if (p == nullptr) {
    return NoNodeError(kName, true, request, kv_tokens, nodes.size(), p_skips);
  }

  // D = argmin transfer time from P + decode_weight * predicted decode time,
  // among nodes with KV capacity.
  const double bytes = input * p->kv_bytes_per_token;
  const double calls =
      params_.transfer_calls_per_request +
      params_.transfer_calls_per_block * std::ceil(input / p->block_tokens);
  SkipCounts d_skips;
  const DecodeChoice d = ChooseDecodeNode(
      nodes, d_start_, at, kv_tokens, input, output, params_.decode_weight,
      [&](const NodeInfo& node) {
        return &node == p
                   ? 0.0
                   : cluster.Link(p->id, node.id).TransferMs(bytes, calls);
      },
      &d_skips);
  if (d.node == nullptr) {
    return NoNodeError(kName, false, request, kv_tokens, nodes.size(), d_skips);
  }
  p_start_ = static_cast<size_t>(p - nodes.data()) + 1;
  d_start_ = static_cast<size_t>(d.node - nodes.data()) + 1;
  return Placement{.prefill_node = p->id,
                   .decode_node = d.node->id,
                   .predicted_ttft_ms = p_ttft,
                   .predicted_transfer_ms = d.transfer_ms};
}

RebalancePlan LoadAware::Rebalance(const ClusterView& cluster, absl::Time now) {
  RebalancePlan plan;
  const UsableAt at(cluster, now);
  const LoadAwareParams& k = params_;

  uint32_t usable = 0, p_count = 0, d_count = 0;
  double p_sum = 0, d_sum = 0, max_score = 0;
  // The idlest node working only as D (candidate to help prefill), and the
  // idlest working only as P (candidate to help decode).
  const NodeInfo* idle_d = nullptr;
  const NodeInfo* idle_p = nullptr;
  double idle_d_score = kInf, idle_p_score = kInf;
  for (const NodeInfo& node : cluster.nodes()) {
    if (!node.available || !at.Fresh(node)) continue;
    ++usable;
    const double ps = PrefillScore(node);
    const double ds = DecodeScore(node);
    if (ServesPrefill(node.current_role)) {
      ++p_count;
      p_sum += ps;
      max_score = std::max(max_score, ps);
    }
    if (ServesDecode(node.current_role)) {
      ++d_count;
      d_sum += ds;
      max_score = std::max(max_score, ds);
    }
    if (node.current_role == NodeRole::kDecode && ds < idle_d_score) {
      idle_d = &node;
      idle_d_score = ds;
    }
    if (node.current_role == NodeRole::kPrefill && ps < idle_p_score) {
      idle_p = &node;
      idle_p_score = ps;
    }
  }
  if (usable == 0) {
    prefill_over_cycles_ = decode_over_cycles_ = 0;
    both_over_cycles_ = all_idle_cycles_ = 0;
    plan.reason = "no usable node";
    return plan;
  }
  // A phase no usable node serves counts as infinitely loaded.
  const double p_score = p_count > 0 ? p_sum / p_count : kInf;
  const double d_score = d_count > 0 ? d_sum / d_count : kInf;
  plan.prefill_score = p_score;
  plan.decode_score = d_score;
  const bool p_over = p_score > k.overload_score;
  const bool d_over = d_score > k.overload_score;
  prefill_over_cycles_ = p_over ? prefill_over_cycles_ + 1 : 0;
  decode_over_cycles_ = d_over ? decode_over_cycles_ + 1 : 0;
  both_over_cycles_ = p_over && d_over ? both_over_cycles_ + 1 : 0;
  all_idle_cycles_ = max_score < k.idle_score ? all_idle_cycles_ + 1 : 0;

  auto note = [&plan](const std::string& text) {
    if (!plan.reason.empty()) plan.reason += "; ";
    plan.reason += text;
  };

  // Renew directives about to expire while the side they help is still
  // overloaded and the side they left is not.
  for (const NodeInfo& node : cluster.nodes()) {
    if (node.role_cycles_left == 0 || node.role_cycles_left > 1) continue;
    if (!node.available || !at.Fresh(node)) continue;
    const bool helps_p = ServesPrefill(node.current_role) &&
                         !ServesPrefill(node.role) && p_over && !d_over;
    const bool helps_d = ServesDecode(node.current_role) &&
                         !ServesDecode(node.role) && d_over && !p_over;
    if (helps_p || helps_d) {
      plan.directives.push_back({.node = node.id,
                                 .role = node.current_role,
                                 .cycles = k.switch_cycles});
      note(
          absl::StrFormat("node %u keeps working as %s for %u cycles (%s score "
                          "%.2f > %.2f)",
                          node.id, NodeRoleName(node.current_role),
                          k.switch_cycles, helps_p ? "prefill" : "decode",
                          helps_p ? p_score : d_score, k.overload_score));
    }
  }

  // Switch the idlest node of the other side when one side stayed
  // overloaded for overload_cycles cycles and the other has an idle node.
  auto try_switch = [&](bool to_prefill) {
    const NodeInfo* node = to_prefill ? idle_d : idle_p;
    const double node_score = to_prefill ? idle_d_score : idle_p_score;
    if (node == nullptr || node_score >= k.idle_score) return false;
    const uint32_t other_count = to_prefill ? d_count : p_count;
    NodeRole role = k.switch_to_hybrid ? NodeRole::kHybrid
                    : to_prefill       ? NodeRole::kPrefill
                                       : NodeRole::kDecode;
    // Keep at least min_role_nodes serving the side the node leaves: work
    // as hybrid instead, or (the default) do not switch at all.
    if (role != NodeRole::kHybrid && other_count < k.min_role_nodes + 1) {
      if (!k.hybrid_fallback) return false;
      role = NodeRole::kHybrid;
    }
    const uint32_t cycles = k.switch_cycles;
    plan.directives.push_back(
        {.node = node->id, .role = role, .cycles = cycles});
    note(absl::StrFormat(
        "%s side overloaded for %u cycles (mean score %.2f > %.2f) while %s "
        "node %u is idle (score %.2f < %.2f): node %u works as %s for %u "
        "cycles",
        to_prefill ? "prefill" : "decode",
        to_prefill ? prefill_over_cycles_ : decode_over_cycles_,
        to_prefill ? p_score : d_score, k.overload_score,
        to_prefill ? "decode" : "prefill", node->id, node_score, k.idle_score,
        node->id, NodeRoleName(role), cycles));
    return true;
  };
  if (p_over && !d_over && prefill_over_cycles_ >= k.overload_cycles &&
      try_switch(/*to_prefill=*/true)) {
    prefill_over_cycles_ = 0;
  }
  if (d_over && !p_over && decode_over_cycles_ >= k.overload_cycles &&
      try_switch(/*to_prefill=*/false)) {
    decode_over_cycles_ = 0;
  }

  if (both_over_cycles_ >= k.scale_cycles) {
    plan.scale = ScaleAdvice::kScaleOut;
    note(absl::StrFormat(
        "scale out: both sides overloaded for %u cycles (prefill score %.2f, "
        "decode score %.2f > %.2f; %u usable nodes)",
        both_over_cycles_, p_score, d_score, k.overload_score, usable));
    both_over_cycles_ = 0;
  } else if (all_idle_cycles_ >= k.scale_cycles) {
    plan.scale = ScaleAdvice::kScaleIn;
    note(absl::StrFormat(
        "scale in: all %u usable nodes idle for %u cycles (highest score %.2f "
        "< %.2f; prefill score %.2f, decode score %.2f)",
        usable, all_idle_cycles_, max_score, k.idle_score, p_score, d_score));
    all_idle_cycles_ = 0;
  }
  return plan;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> MakeLoadAware(
    const SchedulerOptions& options) {
  ParamReader r(kName, options);
  LoadAwareParams p;
  p.prefill_chunk_tokens =
      r.Get("prefill_chunk_tokens", p.prefill_chunk_tokens, 1, 1e9);
  p.transfer_calls_per_request =
      r.Get("transfer_calls_per_request", p.transfer_calls_per_request, 0, 1e9);
  p.transfer_calls_per_block =
      r.Get("transfer_calls_per_block", p.transfer_calls_per_block, 0, 1e9);
  p.default_output_tokens =
      r.Get("default_output_tokens", p.default_output_tokens, 0, 1e9);
  p.decode_weight = r.Get("decode_weight", p.decode_weight, 0, 1e6);
  p.prefill_target_ms =
      r.Get("prefill_target_ms", p.prefill_target_ms, 1e-3, 1e9);
  p.decode_batch_slots =
      r.Get("decode_batch_slots", p.decode_batch_slots, 1, 1e9);
  p.overload_score = r.Get("overload_score", p.overload_score, 0, 1e9);
  p.idle_score = r.Get("idle_score", p.idle_score, 0, 1e9);
  p.overload_cycles =
      r.GetUint("overload_cycles", p.overload_cycles, 1, 1u << 30);
  p.switch_cycles = r.GetUint("switch_cycles", p.switch_cycles, 1, 1u << 30);
  p.switch_to_hybrid = r.GetUint("switch_to_hybrid", 0, 0, 1) != 0;
  p.min_role_nodes = r.GetUint("min_role_nodes", p.min_role_nodes, 0, 1u << 30);
  p.hybrid_fallback = r.GetUint("hybrid_fallback", 0, 0, 1) != 0;
  p.scale_cycles = r.GetUint("scale_cycles", p.scale_cycles, 1, 1u << 30);
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  if (p.idle_score >= p.overload_score) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "load_aware: idle_score = %g must be below overload_score = %g",
        p.idle_score, p.overload_score));
  }
  return std::make_unique<LoadAware>(p);
}

}  // namespace flowkv::internal
