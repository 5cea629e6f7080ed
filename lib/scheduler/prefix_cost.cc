// SPDX-License-Identifier: Apache-2.0
// prefix_cost: NVIDIA Dynamo's KV router cost function, as its router
// documentation publishes it ("Routing Concepts", Cost Calculation;
// https://docs.nvidia.com/dynamo/dev/components/router/routing-concepts),
// the baseline kv_aware is compared with. Per prefill node:
//
//   raw_prefill_blocks      = active prefill blocks + the prompt's blocks
//   adjusted_prefill_blocks = max(raw_prefill_blocks - overlap_credit *
//                                 overlap_blocks, 0)
//   decode_blocks           = active KV blocks + the prompt's blocks
//   cost = prefill_load_scale * adjusted_prefill_blocks + decode_blocks
//
// overlap_blocks is the node's cached prefix of the request from the radix
// index fed by KV events (here ClusterView::prefix_index()); active prefill
// blocks are the node's queued prefill tokens / block_tokens, active KV
// blocks its kv_blocks_used. Selection as Dynamo does it: the lowest cost
// (temperature 0, the default), or with temperature T > 0 a softmax sample
// with weights exp(-(cost / max cost) / T) over the candidates. (Older
// Dynamo releases document the same form as overlap_score_weight *
// prefill_blocks + decode_blocks.) In disaggregated serving Dynamo routes the
// decode phase without the overlap credit; so does this policy: D is the
// decode node with KV room and the fewest active blocks + the request's.

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "lib/scheduler/policy_util.h"

namespace flowkv::internal {
namespace {

constexpr std::string_view kName = "prefix_cost";
constexpr double kInf = std::numeric_limits<double>::infinity();

struct PrefixCostParams {
  double prefill_load_scale = 1;
  double overlap_credit = 1;
  double temperature = 0;
  uint32_t seed = 1;
  double default_output_tokens = 128;
};

// Thread safety: externally synchronized (cursors, random engine, scratch).
class PrefixCost final : public Scheduler {
 public:
  explicit PrefixCost(const PrefixCostParams& params)
      : params_(params), rng_(params.seed) {}

  std::string_view name() const override { return kName; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override;

 private:
  // Index into `costs` of the chosen candidate (costs of non-candidates are
  // +inf); -1 when there is none. Scans start at `*start`, which moves past
  // the choice.
  int Select(const std::vector<double>& costs, size_t* start);

  const PrefixCostParams params_;
  std::mt19937_64 rng_;
  size_t p_start_ = 0;
  size_t d_start_ = 0;
  std::vector<PrefixMatch> matches_;
  std::vector<uint32_t> cached_;
  std::vector<double> costs_;
};

int PrefixCost::Select(const std::vector<double>& costs, size_t* start) {
  const size_t n = costs.size();
  int best = -1;
  double best_cost = kInf;
  double max_cost = 0;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (*start + k) % n;
    if (costs[i] == kInf) continue;
    max_cost = std::max(max_cost, costs[i]);
    if (best < 0 || costs[i] < best_cost) {
      best = static_cast<int>(i);
      best_cost = costs[i];
    }
  }
  if (best >= 0 && params_.temperature > 0 && max_cost > 0) {
    // Softmax over the normalized costs; the lowest cost has the most
    // weight (subtracting it keeps the exponents <= 0).
    std::vector<double> weights(n, 0.0);
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      if (costs[i] == kInf) continue;
      weights[i] =
          std::exp(-((costs[i] - best_cost) / max_cost) / params_.temperature);
      total += weights[i];
    }
    double pick = std::uniform_real_distribution<double>(0, total)(rng_);
    for (size_t i = 0; i < n; ++i) {
      if (weights[i] == 0) continue;
      best = static_cast<int>(i);
      if (pick < weights[i]) break;
      pick -= weights[i];
    }
  }
  if (best >= 0) *start = static_cast<size_t>(best) + 1;
  return best;
}

absl::StatusOr<Placement> PrefixCost::Place(const RequestInfo& request,
                                            const ClusterView& cluster,
                                            absl::Time now) {
  const std::vector<NodeInfo>& nodes = cluster.nodes();
  const UsableAt at(cluster, now);
  const double input = request.input_tokens;
  const double kv_tokens = KvTokens(request, params_.default_output_tokens);
  CachedBlocksPerNode(cluster, request, &matches_, &cached_);

  SkipCounts p_skips;
  costs_.assign(nodes.size(), kInf);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeInfo& node = nodes[i];
    if (!Candidate(node, /*prefill=*/true, at, &p_skips)) continue;
    const double prompt_blocks = std::ceil(input / node.block_tokens);
    const double raw =
        node.load.queued_prefill_tokens / node.block_tokens + prompt_blocks;
    const double adjusted =
        std::max(raw - params_.overlap_credit * cached_[i], 0.0);
    const double decode = node.load.kv_blocks_used + prompt_blocks;
    costs_[i] = params_.prefill_load_scale * adjusted + decode;
  }
  const int p = Select(costs_, &p_start_);
  if (p < 0) {
    return NoNodeError(kName, true, request, kv_tokens, nodes.size(), p_skips);
  }

  SkipCounts d_skips;
  costs_.assign(nodes.size(), kInf);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeInfo& node = nodes[i];
    if (!Candidate(node, /*prefill=*/false, at, &d_skips)) continue;
    if (!HasCapacity(node, kv_tokens, &d_skips)) continue;
    costs_[i] =
        node.load.kv_blocks_used + std::ceil(kv_tokens / node.block_tokens);
  }
  const int d = Select(costs_, &d_start_);
  if (d < 0) {
    return NoNodeError(kName, false, request, kv_tokens, nodes.size(), d_skips);
  }
  return Placement{.prefill_node = nodes[static_cast<size_t>(p)].id,
                   .decode_node = nodes[static_cast<size_t>(d)].id};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> MakePrefixCost(
    const SchedulerOptions& options) {
  ParamReader r(kName, options);
  PrefixCostParams p;
  p.prefill_load_scale =
      r.Get("prefill_load_scale", p.prefill_load_scale, 0, 1e6);
  p.overlap_credit = r.Get("overlap_credit", p.overlap_credit, 0, 1);
  p.temperature = r.Get("temperature", p.temperature, 0, 1e6);
  p.seed = r.GetUint("seed", p.seed, 0, 0xffffffffu);
  p.default_output_tokens =
      r.Get("default_output_tokens", p.default_output_tokens, 0, 1e9);
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  return std::make_unique<PrefixCost>(p);
}

}  // namespace flowkv::internal
