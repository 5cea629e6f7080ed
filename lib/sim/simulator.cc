// SPDX-License-Identifier: Apache-2.0
// The simulator's driver: Simulate(), the names of the transfer and batching
// options, Sim::Init (checks the options and the requests, builds the nodes,
// the scheduler and the ClusterView) and Sim::Run (the event queue and the
// loop that advances simulated time and dispatches each event). It may call
// every other part of Sim (simulator_impl.h); the other parts reach the
// event queue only through Push.

#include "flowkv/sim/simulator.h"

#include <cmath>
#include <memory>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "flowkv/block_allocator.h"
#include "lib/sim/simulator_impl.h"

namespace flowkv {
namespace internal::sim {

// Simulated time without any step, transfer or arrival after which a run
// stops with an error instead of spinning on heartbeats.
constexpr double kStallMs = 600000;

absl::Status Sim::Init(absl::Span<const SimNodeSpec> specs) {
  if (specs.empty()) return absl::InvalidArgumentError("cluster has no nodes");
  if (!(o_.load_smoothing > 0 && o_.load_smoothing <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "load_smoothing must be in (0, 1], got ", o_.load_smoothing));
  }
  if (!(o_.heartbeat_interval_ms > 0) || !(o_.rebalance_interval_ms >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "heartbeat_interval_ms must be > 0 and rebalance_interval_ms >= 0, "
        "got ",
        o_.heartbeat_interval_ms, " and ", o_.rebalance_interval_ms));
  }
  if (o_.max_batch == 0 || o_.prefill_token_budget == 0 ||
      (o_.batching == NodeBatching::kChunkedPrefill &&
       o_.chunk_tokens <= o_.max_batch)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_batch and prefill_token_budget must be >= 1, and chunk_tokens "
        "above max_batch in chunked mode; got max_batch ",
        o_.max_batch, ", prefill_token_budget ", o_.prefill_token_budget,
        ", chunk_tokens ", o_.chunk_tokens));
  }
  if (o_.hash_block_tokens == 0 || !(o_.kv_event_delay_ms >= 0) ||
      !std::isfinite(o_.kv_event_delay_ms)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hash_block_tokens must be >= 1 and kv_event_delay_ms finite and >= "
        "0; got ",
        o_.hash_block_tokens, " and ", o_.kv_event_delay_ms));
  }
  prefix_cache_ = o_.prefix_cache;
  absl::StatusOr<CallCounts> cc = ComputeCallCounts(o_.model);
  if (!cc.ok()) return cc.status();
  cc_ = *cc;
  block_tokens_ = o_.model.block_tokens;
  double prev = 0;
  for (size_t i = 0; i < input_.size(); ++i) {
    const SimRequest& r = input_[i];
    if (r.input_tokens == 0 || r.output_tokens == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("request ", r.id, " has zero input or output tokens"));
    }
    if (r.arrival_ms < prev || !std::isfinite(r.arrival_ms)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "requests must be sorted by arrival: request ", r.id, " arrives at ",
          r.arrival_ms, " ms, before ", prev, " ms"));
    }
    prev = r.arrival_ms;
  }
  absl::StatusOr<std::unique_ptr<Scheduler>> s =
      CreateScheduler(o_.policy, o_.scheduler_options);
  if (!s.ok()) return s.status();
  sched_ = std::move(*s);

  ClusterView::Options vo;
  vo.smoothing = o_.load_smoothing;
  vo.default_link = o_.link;
  view_.emplace(vo);
  colocated_ = o_.colocate_hybrid;
  nodes_.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const SimNodeSpec& spec = specs[i];
    if (spec.role != NodeRole::kHybrid) colocated_ = false;
    Node& n = nodes_[i];
    n.id = static_cast<NodeId>(i);
    n.type = spec.type;
    const double blocks = std::floor(spec.type.kv_capacity_bytes /
                                     static_cast<double>(cc_.block_bytes));
    if (!(blocks >= 1) || blocks >= 4294967295.0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "node %d (%s): KV capacity %.0f bytes gives %.0f blocks; want [1, "
          "2^32-1)",
          i, spec.type.name, spec.type.kv_capacity_bytes, blocks));
    }
    absl::StatusOr<std::unique_ptr<BlockAllocator>> a =
        BlockAllocator::Create({.num_blocks = static_cast<uint32_t>(blocks),
                                .enable_prefix_cache = o_.prefix_cache});
    if (!a.ok()) return a.status();
    n.alloc = std::move(*a);
    n.rec.id = n.id;
    n.rec.role = spec.role;
    n.rec.type = spec.type.name;
    NodeInfo info;
    info.id = n.id;
    info.role = spec.role;
    info.current_role = spec.role;
    info.cost = spec.type.cost;
    info.kv_bytes_per_token =
        static_cast<double>(cc_.block_bytes) / block_tokens_;
    info.block_tokens = block_tokens_;
    absl::Status st = view_->AddNode(info);
    if (!st.ok()) return st;
  }
  reqs_.resize(input_.size());
  for (size_t i = 0; i < input_.size(); ++i) {
    RequestRecord& rec = reqs_[i].rec;
    rec.id = input_[i].id;
    rec.input_tokens = input_[i].input_tokens;
    rec.output_tokens = input_[i].output_tokens;
    rec.arrival_ms = input_[i].arrival_ms;
    BuildHashes(reqs_[i], input_[i]);
  }
  res_.policy = o_.policy;
  res_.transfer = TransferModeName(o_.transfer);
  res_.batching = NodeBatchingName(o_.batching);
  res_.requests = input_.size();
  return absl::OkStatus();
}

absl::StatusOr<SimResult> Sim::Run() {
  if (!reqs_.empty()) {
    now_ = reqs_[0].rec.arrival_ms;
    next_progress_ = now_ + o_.progress_every_ms;
    last_progress_ = now_;
    for (Node& n : nodes_) {
      n.window_start = now_;
      Report(n);
    }
    Push(now_ + o_.heartbeat_interval_ms, EventType::kHeartbeat, 0);
    if (o_.rebalance_interval_ms > 0) {
      Push(now_ + o_.rebalance_interval_ms, EventType::kRebalance, 0);
    }
  }
  while (finished_ < reqs_.size()) {
    const bool arrival_next =
        next_arrival_ < reqs_.size() &&
        (events_.empty() ||
         reqs_[next_arrival_].rec.arrival_ms <= events_.top().t);
    if (arrival_next) {
      const Index r = static_cast<Index>(next_arrival_++);
      Advance(reqs_[r].rec.arrival_ms);
      ++res_.events;
      Arrive(r);
    } else {
      if (events_.empty()) {
        return absl::InternalError(
            absl::StrCat("simulator: no events left with ",
                         reqs_.size() - finished_, " requests unfinished"));
      }
      const Event e = events_.top();
      events_.pop();
      Advance(e.t);
      ++res_.events;
      switch (e.type) {
        case EventType::kStepDone:
          StepDone(nodes_[e.target]);
          break;
        case EventType::kTransferDone:
          TransferDone(e.target);
          break;
        case EventType::kHeartbeat:
          // An empty system waiting for the next arrival is not stalled.
          if (in_system_ == 0) last_progress_ = now_;
          if (now_ - last_progress_ > kStallMs) {
            return absl::InternalError(absl::StrFormat(
                "simulator: no progress for %.0f s of simulated time at t=%.3f "
                "s with %d requests unfinished (KV deadlock between nodes?)",
                kStallMs / 1000, now_ / 1000, reqs_.size() - finished_));
          }
          Heartbeat();
          if (finished_ < reqs_.size()) {
            Push(now_ + o_.heartbeat_interval_ms, EventType::kHeartbeat, 0);
          }
          break;
        case EventType::kKvEvents:
          DeliverEvents(e.target);
          break;
        case EventType::kRebalance:
          Rebalance();
          if (finished_ < reqs_.size()) {
            Push(now_ + o_.rebalance_interval_ms, EventType::kRebalance, 0);
          }
          break;
      }
    }
    if (o_.progress && now_ >= next_progress_) {
      next_progress_ = now_ + o_.progress_every_ms;
      o_.progress({now_, next_arrival_, res_.completed, reqs_.size()});
    }
  }
  return Collect();
}

}  // namespace internal::sim

const char* TransferModeName(TransferMode mode) {
  switch (mode) {
    case TransferMode::kFlowKv:
      return "flowkv";
    case TransferMode::kBlockwise:
      return "blockwise";
    case TransferMode::kLayerMajor:
      return "layer_major";
  }
  return "?";
}

const char* NodeBatchingName(NodeBatching batching) {
  return batching == NodeBatching::kPrefillFirst ? "prefill_first" : "chunked";
}

absl::StatusOr<NodeBatching> ParseNodeBatching(std::string_view name_std) {
  const absl::string_view name(name_std.data(), name_std.size());
  if (name == "prefill_first") return NodeBatching::kPrefillFirst;
  if (name == "chunked") return NodeBatching::kChunkedPrefill;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown batching \"", name, "\"; known: prefill_first, chunked"));
}

absl::StatusOr<TransferMode> ParseTransferMode(std::string_view name_std) {
  const absl::string_view name(name_std.data(), name_std.size());
  for (TransferMode m : {TransferMode::kFlowKv, TransferMode::kBlockwise,
                         TransferMode::kLayerMajor}) {
    if (name == TransferModeName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown transfer mode \"", name,
                   "\"; known: flowkv, blockwise, layer_major"));
}

absl::StatusOr<SimResult> Simulate(absl::Span<const SimNodeSpec> nodes,
                                   absl::Span<const SimRequest> requests,
                                   const SimOptions& options) {
  internal::sim::Sim sim(options, requests);
  absl::Status s = sim.Init(nodes);
  if (!s.ok()) return s;
  return sim.Run();
}

}  // namespace flowkv
