// SPDX-License-Identifier: Apache-2.0
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "flowkv/scheduler.h"

namespace flowkv {
namespace {

uint64_t LinkKey(NodeId from, NodeId to) {
  return (uint64_t{from} << 32) | uint64_t{to};
}

double ClampSmoothing(double smoothing) {
  if (!(smoothing > 0)) return 1.0;  // also NaN
  return smoothing > 1 ? 1.0 : smoothing;
}

bool Finite(double v) { return std::isfinite(v); }

absl::Status CheckLoad(NodeId id, const NodeLoad& load) {
  const std::pair<const char*, double> fields[] = {
      {"queued_prefill_tokens", load.queued_prefill_tokens},
      {"queued_prefill_ms", load.queued_prefill_ms},
      {"running_decode", load.running_decode},
      {"waiting_decode", load.waiting_decode},
      {"decode_context_tokens", load.decode_context_tokens},
      {"kv_blocks_used", load.kv_blocks_used},
      {"kv_blocks_total", load.kv_blocks_total},
      {"utilization", load.utilization}};
  for (const auto& [name, value] : fields) {
    if (!Finite(value) || value < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ReportLoad: node %u: %s = %g, must be finite and >= 0", id, name,
          value));
    }
  }
  if (load.utilization > 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ReportLoad: node %u: utilization = %g, must be <= 1",
                        id, load.utilization));
  }
  if (load.kv_blocks_total > 0 && load.kv_blocks_used > load.kv_blocks_total) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ReportLoad: node %u: kv_blocks_used = %g exceeds kv_blocks_total = %g",
        id, load.kv_blocks_used, load.kv_blocks_total));
  }
  return absl::OkStatus();
}

absl::Status CheckNode(const NodeInfo& node) {
  if (node.block_tokens == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("AddNode: node %u: block_tokens must be > 0", node.id));
  }
  if (!Finite(node.kv_bytes_per_token) || node.kv_bytes_per_token < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "AddNode: node %u: kv_bytes_per_token = %g, must be finite and >= 0",
        node.id, node.kv_bytes_per_token));
  }
  const NodeCostModel& c = node.cost;
  for (double v : {c.a, c.b, c.c, c.t0, c.k, c.e}) {
    if (!Finite(v)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "AddNode: node %u: cost model coefficient %g is not finite", node.id,
          v));
    }
  }
  return CheckLoad(node.id, node.load);
}

double Blend(double alpha, double fresh, double old) {
  return alpha * fresh + (1 - alpha) * old;
}

}  // namespace

const char* NodeRoleName(NodeRole role) {
  switch (role) {
    case NodeRole::kPrefill:
      return "prefill";
    case NodeRole::kDecode:
      return "decode";
    case NodeRole::kHybrid:
      return "hybrid";
  }
  return "unknown";
}

ClusterView::ClusterView() : ClusterView(Options{}) {}

ClusterView::ClusterView(const Options& options) : options_(options) {
  options_.smoothing = ClampSmoothing(options_.smoothing);
}

absl::Status ClusterView::AddNode(const NodeInfo& node) {
  if (absl::Status s = CheckNode(node); !s.ok()) return s;
  NodeInfo added = node;
  added.current_role = node.role;
  added.role_cycles_left = 0;
  added.available = true;
  auto it = index_.find(node.id);
  if (it != index_.end()) {
    NodeInfo& existing = nodes_[it->second];
    if (existing.available) {
      return absl::InvalidArgumentError(
          absl::StrFormat("AddNode: node %u is already present", node.id));
    }
    existing = added;
    prefix_index_.RemoveNode(node.id);
    return absl::OkStatus();
  }
  index_.emplace(node.id, nodes_.size());
  nodes_.push_back(added);
  return absl::OkStatus();
}

absl::Status ClusterView::RemoveNode(NodeId id) {
  NodeInfo* node = FindMutable(id);
  if (node == nullptr) {
    return absl::NotFoundError(
        absl::StrFormat("RemoveNode: unknown node %u", id));
  }
  node->available = false;
  return absl::OkStatus();
}

absl::Status ClusterView::ReportLoad(NodeId id, const NodeLoad& load,
                                     absl::Time now) {
  NodeInfo* node = FindMutable(id);
  if (node == nullptr) {
    return absl::NotFoundError(absl::StrFormat(
        "ReportLoad: unknown node %u (%d nodes known); add it first", id,
        nodes_.size()));
  }
  if (absl::Status s = CheckLoad(id, load); !s.ok()) return s;
  const bool first = node->last_report == absl::InfinitePast() ||
                     now - node->last_report > options_.stale_after;
  if (first) {
    node->load = load;
  } else {
    const double w = options_.smoothing;
    NodeLoad& s = node->load;
    s.queued_prefill_tokens =
        Blend(w, load.queued_prefill_tokens, s.queued_prefill_tokens);
    s.queued_prefill_ms = Blend(w, load.queued_prefill_ms, s.queued_prefill_ms);
    s.running_decode = Blend(w, load.running_decode, s.running_decode);
    s.waiting_decode = Blend(w, load.waiting_decode, s.waiting_decode);
    s.decode_context_tokens =
        Blend(w, load.decode_context_tokens, s.decode_context_tokens);
    s.kv_blocks_used = Blend(w, load.kv_blocks_used, s.kv_blocks_used);
    s.kv_blocks_total = load.kv_blocks_total;
    s.utilization = Blend(w, load.utilization, s.utilization);
    if (s.kv_blocks_total > 0 && s.kv_blocks_used > s.kv_blocks_total) {
      s.kv_blocks_used = s.kv_blocks_total;
    }
  }
  if (now > node->last_report) node->last_report = now;
  return absl::OkStatus();
}

absl::Status ClusterView::SetRole(NodeId id, NodeRole role, uint32_t cycles) {
  NodeInfo* node = FindMutable(id);
  if (node == nullptr) {
    return absl::NotFoundError(absl::StrFormat("SetRole: unknown node %u", id));
  }
  if (role == node->role) {
    node->current_role = role;
    node->role_cycles_left = 0;
    return absl::OkStatus();
  }
  if (cycles == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "SetRole: node %u: cycles must be > 0 to work as %s (deployed as %s)",
        id, NodeRoleName(role), NodeRoleName(node->role)));
  }
  node->current_role = role;
  node->role_cycles_left = cycles;
  return absl::OkStatus();
}

void ClusterView::TickRoleCycles() {
  for (NodeInfo& node : nodes_) {
    if (node.role_cycles_left == 0) continue;
    if (--node.role_cycles_left == 0) node.current_role = node.role;
  }
}

void ClusterView::SetLink(NodeId from, NodeId to, const LinkModel& link) {
  links_[LinkKey(from, to)] = link;
}

const LinkModel& ClusterView::Link(NodeId from, NodeId to) const {
  if (links_.empty()) return options_.default_link;
  auto it = links_.find(LinkKey(from, to));
  return it == links_.end() ? options_.default_link : it->second;
}

const NodeInfo* ClusterView::Find(NodeId id) const {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : &nodes_[it->second];
}

NodeInfo* ClusterView::FindMutable(NodeId id) {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : &nodes_[it->second];
}

bool ClusterView::IsUsable(const NodeInfo& node, absl::Time now) const {
  if (!node.available) return false;
  if (node.last_report == absl::InfinitePast()) return true;
  return now - node.last_report <= options_.stale_after;
}

}  // namespace flowkv
