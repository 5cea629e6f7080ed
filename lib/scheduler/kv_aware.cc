// SPDX-License-Identifier: Apache-2.0
// kv_aware: load_aware's time model with the prefix cache in it. See
// docs/scheduler.md ("kv_aware") for the formulas, options and defaults.
//
// P = argmin predicted TTFT, where a node's cached prefix of the request
// (ClusterView::prefix_index()) shortens only this request's own prefill:
//   ttft(p) = queue_wait(p) + prefill_after_cache(cached_p, input - cached_p)
// so a cache hit is worth the prefill time it saves and no more: it never
// hides a queue (Dynamo's block cost subtracts the overlap from the queued
// blocks too, so a node with a long queue and a long hit looks idle), and
// the saving is priced with the node's own speed and the attention term
// that grows with the context.
// The queue wait is the node's own estimate (NodeLoad::queued_prefill_ms)
// when it reports one, else load_aware's from its queued tokens.
// D = argmin transfer(p -> d of the blocks d does not hold) +
//     decode_weight * output * decode_step(d): a decode node that already
// holds the prompt's prefix receives only the rest.
// Rebalance: load_aware's (role switching, scale advice), same options.

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/scheduler/policy_util.h"

namespace flowkv::internal {
namespace {

constexpr std::string_view kName = "kv_aware";
constexpr double kInf = std::numeric_limits<double>::infinity();

struct KvAwareParams {
  double prefill_chunk_tokens = 8192;
  double transfer_calls_per_request = 1;
  double transfer_calls_per_block = 0;
  double default_output_tokens = 128;
  double decode_weight = 1;
  // Weight of a cached block's saving, [0, 1] (0: ignore the cache, which
  // makes P the load_aware choice).
  double cache_credit = 1;
};

// Thread safety: externally synchronized (tie-break cursors, scratch).
class KvAware final : public Scheduler {
 public:
  KvAware(const KvAwareParams& params, std::unique_ptr<Scheduler> rebalancer)
      : params_(params), rebalancer_(std::move(rebalancer)) {}

  std::string_view name() const override { return kName; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override;
  // load_aware's role switching and scale advice, with the same options.
  RebalancePlan Rebalance(const ClusterView& cluster, absl::Time now) override {
    return rebalancer_->Rebalance(cluster, now);
  }

 private:
  const KvAwareParams params_;
  const std::unique_ptr<Scheduler> rebalancer_;
  size_t p_start_ = 0;
  size_t d_start_ = 0;
  std::vector<PrefixMatch> matches_;
  std::vector<uint32_t> cached_;
};

absl::StatusOr<Placement> KvAware::Place(const RequestInfo& request,
                                         const ClusterView& cluster,
                                         absl::Time now) {
  const std::vector<NodeInfo>& nodes = cluster.nodes();
  const UsableAt at(cluster, now);
  const double kv_tokens = KvTokens(request, params_.default_output_tokens);
  const double input = request.input_tokens;
  const double output = kv_tokens - input;
  const double chunk = params_.prefill_chunk_tokens;
  CachedBlocksPerNode(cluster, request, &matches_, &cached_);
  auto reusable = [&](const NodeInfo& node) {
    const size_t i = static_cast<size_t>(&node - nodes.data());
    return std::floor(params_.cache_credit *
                      ReusableTokens(node, cached_[i], input));
  };

  SkipCounts p_skips;
  const NodeInfo* p = nullptr;
  double p_ttft = kInf;
  ForEachFrom(nodes, p_start_, [&](const NodeInfo& node) {
    if (!Candidate(node, /*prefill=*/true, at, &p_skips)) return;
    const NodeLoad& l = node.load;
    const double cached = reusable(node);
    const double fresh = input - cached;
    const double queue =
        l.queued_prefill_ms > 0
            ? l.queued_prefill_ms
            : ChunkedPrefillMs(node.cost, l.queued_prefill_tokens, chunk);
    double ttft = queue + PrefillAfterCacheMs(node.cost, cached, fresh, chunk);
    if (node.current_role == NodeRole::kHybrid && l.running_decode > 0) {
      // A hybrid node interleaves a decode step with each prefill chunk.
      const double chunks =
          std::ceil((l.queued_prefill_tokens + fresh) / chunk);
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

  SkipCounts d_skips;
  const DecodeChoice d = ChooseDecodeNode(
      nodes, d_start_, at, kv_tokens, input, output, params_.decode_weight,
      [&](const NodeInfo& node) {
        if (&node == p) return 0.0;
        // Only the blocks the decode node lacks cross the link.
        const double moved = input - reusable(node);
        return cluster.Link(p->id, node.id)
            .TransferMs(moved * p->kv_bytes_per_token,
                        params_.transfer_calls_per_request +
                            params_.transfer_calls_per_block *
                                std::ceil(moved / p->block_tokens));
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

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> MakeKvAware(
    const SchedulerOptions& options) {
  // The placement options (below) and cache_credit are read here; every
  // other option is load_aware's rebalancing, checked by load_aware.
  static constexpr std::string_view kOwn[] = {"prefill_chunk_tokens",
                                              "transfer_calls_per_request",
                                              "transfer_calls_per_block",
                                              "default_output_tokens",
                                              "decode_weight",
                                              "cache_credit"};
  SchedulerOptions own, rebalancing;
  for (const auto& [key, value] : options.params) {
    const bool mine =
        std::find(std::begin(kOwn), std::end(kOwn), key) != std::end(kOwn);
    (mine ? own : rebalancing).params[key] = value;
    if (mine && key != "cache_credit") rebalancing.params[key] = value;
  }
  absl::StatusOr<std::unique_ptr<Scheduler>> rebalancer =
      MakeLoadAware(rebalancing);
  if (!rebalancer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_aware (rebalancing options as load_aware's): ",
                     rebalancer.status().message()));
  }
  ParamReader r(kName, own);
  KvAwareParams p;
  p.prefill_chunk_tokens =
      r.Get("prefill_chunk_tokens", p.prefill_chunk_tokens, 1, 1e9);
  p.transfer_calls_per_request =
      r.Get("transfer_calls_per_request", p.transfer_calls_per_request, 0, 1e9);
  p.transfer_calls_per_block =
      r.Get("transfer_calls_per_block", p.transfer_calls_per_block, 0, 1e9);
  p.default_output_tokens =
      r.Get("default_output_tokens", p.default_output_tokens, 0, 1e9);
  p.decode_weight = r.Get("decode_weight", p.decode_weight, 0, 1e6);
  p.cache_credit = r.Get("cache_credit", p.cache_credit, 0, 1);
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  return std::make_unique<KvAware>(p, std::move(*rebalancer));
}

}  // namespace flowkv::internal
