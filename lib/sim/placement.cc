// SPDX-License-Identifier: Apache-2.0
// A request's way through the control plane: arrival, placement by the
// Scheduler (pending requests are retried on every heartbeat and rejected
// when nothing can ever take them), rejection of requests too big for their
// nodes, and completion (its KV blocks freed). Also what the Scheduler sees
// and steers: load reports to the ClusterView, the heartbeat's utilization
// windows, and the rebalancing of node roles. It may call the node model
// (Enqueue) and the ClusterView and Scheduler; it owns pending_ and the
// completed/rejected counters.

#include <algorithm>
#include <vector>

#include "absl/status/statusor.h"
#include "flowkv/block_list.h"
#include "flowkv/sim/simulator.h"
#include "lib/sim/simulator_impl.h"

namespace flowkv::internal::sim {

void Sim::Arrive(Index r) {
  last_progress_ = now_;
  ++in_system_;
  if (!pending_.empty() || !TryPlace(r)) pending_.push_back(r);
}

bool Sim::TryPlace(Index r) {
  Req& q = reqs_[r];
  RequestInfo info{.id = q.rec.id,
                   .input_tokens = q.rec.input_tokens,
                   .expected_output_tokens = q.rec.output_tokens,
                   .block_hashes = q.hashes};
  absl::StatusOr<Placement> p = sched_->Place(info, *view_, Abs(now_));
  if (!p.ok() || p->prefill_node >= nodes_.size() ||
      p->decode_node >= nodes_.size()) {
    ++res_.place_retries;
    return false;
  }
  q.pn = p->prefill_node;
  q.dn = colocated_ ? q.pn : p->decode_node;
  const NodeInfo* pi = view_->Find(q.pn);
  const NodeInfo* di = view_->Find(q.dn);
  if ((pi != nullptr && pi->current_role == NodeRole::kDecode) ||
      (di != nullptr && di->current_role == NodeRole::kPrefill)) {
    ++res_.role_violations;
  }
  q.placed = true;
  q.rec.placed_ms = now_;
  q.rec.prefill_node = nodes_[q.pn].id;
  q.rec.decode_node = nodes_[q.dn].id;
  const uint64_t prompt_blocks = CeilDiv(q.rec.input_tokens, block_tokens_);
  const uint64_t total_blocks = CeilDiv(
      uint64_t{q.rec.input_tokens} + q.rec.output_tokens, block_tokens_);
  const bool too_big =
      q.pn == q.dn ? total_blocks > nodes_[q.pn].alloc->num_blocks()
                   : prompt_blocks > nodes_[q.pn].alloc->num_blocks() ||
                         total_blocks > nodes_[q.dn].alloc->num_blocks();
  if (too_big) {
    Reject(r);
    return true;
  }
  Enqueue(r);
  return true;
}

void Sim::Finish(Index r) {
  Req& q = reqs_[r];
  // A one-token output finishes on its P node, with its prompt blocks.
  const bool on_p = q.rec.output_tokens == 1;
  Node& owner = nodes_[on_p ? q.pn : q.dn];
  BlockList& blocks = on_p ? q.p_blocks : q.d_blocks;
  (void)owner.alloc->Free(blocks);
  blocks.Clear();
  owner.reserved -= q.growth_left;
  q.growth_left = 0;
  q.done = true;
  q.rec.completed = true;
  q.rec.finish_ms = now_;
  ++res_.completed;
  ++finished_;
  --in_system_;
}

void Sim::Reject(Index r) {
  Req& q = reqs_[r];
  q.done = true;
  q.rec.completed = false;
  q.rec.finish_ms = now_;
  ++res_.rejected;
  ++finished_;
  --in_system_;
}

void Sim::Report(Node& n) {
  NodeLoad load;
  load.queued_prefill_tokens = static_cast<double>(n.queued_prefill_tokens);
  // What is left of the queue's prefill time (the step in progress counts
  // until it ends).
  const double elapsed = n.busy && n.step_prefill ? now_ - n.step_start : 0;
  load.queued_prefill_ms = std::max(0.0, n.queued_ms - elapsed);
  load.running_decode = static_cast<double>(n.running.size());
  load.waiting_decode =
      static_cast<double>(n.decode_wait.size() + n.inbound.size() + n.incoming);
  load.decode_context_tokens = static_cast<double>(n.running_ctx);
  load.kv_blocks_total = n.alloc->num_blocks();
  load.kv_blocks_used =
      static_cast<double>(n.alloc->num_blocks() - n.alloc->available_blocks());
  load.utilization = n.util;
  (void)view_->ReportLoad(n.id, load, Abs(now_));
  PublishEvents(n);
}

bool Sim::Idle() const {
  for (const Node& n : nodes_) {
    if (n.busy || !n.prefill_q.empty() || !n.inbound.empty() ||
        n.incoming > 0 || !n.decode_wait.empty() || !n.running.empty()) {
      return false;
    }
  }
  return true;
}

void Sim::Heartbeat() {
  for (Node& n : nodes_) {
    const double span = now_ - n.window_start;
    const double busy = n.BusyAt(now_);
    if (span > 0) n.util = std::clamp((busy - n.window_busy) / span, 0.0, 1.0);
    n.window_busy = busy;
    n.window_start = now_;
    Report(n);
  }
  bool placed_any = false;
  while (!pending_.empty()) {
    if (!TryPlace(pending_.front())) break;
    pending_.pop_front();
    placed_any = true;
  }
  if (pending_.empty() || placed_any || !Idle()) {
    idle_failures_ = 0;
    return;
  }
  // Nothing runs and nothing can be placed: after 50 tries the pending
  // requests are rejected (e.g. a cluster without a usable prefill node).
  if (++idle_failures_ >= 50 && next_arrival_ >= reqs_.size()) {
    while (!pending_.empty()) {
      Reject(pending_.front());
      pending_.pop_front();
    }
  }
}

void Sim::Rebalance() {
  ++res_.rebalances;
  std::vector<NodeRole> before;
  before.reserve(nodes_.size());
  for (const Node& n : nodes_)
    before.push_back(view_->Find(n.id)->current_role);
  view_->TickRoleCycles();
  RebalancePlan plan = sched_->Rebalance(*view_, Abs(now_));
  for (const RoleDirective& d : plan.directives) {
    (void)view_->SetRole(d.node, d.role, d.cycles);
  }
  if (plan.scale == ScaleAdvice::kScaleOut) ++res_.scale_out_advice;
  if (plan.scale == ScaleAdvice::kScaleIn) ++res_.scale_in_advice;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (view_->Find(nodes_[i].id)->current_role != before[i]) {
      ++nodes_[i].rec.role_switches;
      ++res_.role_switches;
    }
  }
}

}  // namespace flowkv::internal::sim
