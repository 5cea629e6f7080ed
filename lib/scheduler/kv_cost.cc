// kv_cost: Dynamo-style KV cost. For each node
//   prefill_blocks = (queued prefill tokens [+ this prompt]) / block_tokens
//   decode_blocks  = KV blocks in use [+ this request's blocks]
//   P = argmin  prefill_weight * prefill_blocks + decode_blocks
//   D = argmin  decode_blocks   (with KV capacity)

#include <cmath>
#include <limits>

#include "lib/scheduler/policy_util.h"

namespace flowkv::internal {
namespace {

constexpr std::string_view kName = "kv_cost";

// Thread safety: externally synchronized (tie-break cursor).
class KvCost final : public Scheduler {
 public:
  KvCost(double prefill_weight, bool colocate_hybrid, bool check_kv_capacity,
         double default_output_tokens)
      : prefill_weight_(prefill_weight),
        colocate_hybrid_(colocate_hybrid),
        check_kv_capacity_(check_kv_capacity),
        default_output_tokens_(default_output_tokens) {}

  std::string_view name() const override { return kName; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override {
    const std::vector<NodeInfo>& nodes = cluster.nodes();
    const UsableAt at(cluster, now);
    const double kv_tokens = KvTokens(request, default_output_tokens_);
    const double input = request.input_tokens;

    SkipCounts p_skips;
    const NodeInfo* p = nullptr;
    double p_best = std::numeric_limits<double>::infinity();
    ForEachFrom(nodes, p_start_, [&](const NodeInfo& node) {
      if (!Candidate(node, /*prefill=*/true, at, &p_skips)) return;
      const double prefill_blocks =
          (node.load.queued_prefill_tokens + input) / node.block_tokens;
      const double cost =
          prefill_weight_ * prefill_blocks + node.load.kv_blocks_used;
      if (p == nullptr || cost < p_best) {
        p = &node;
        p_best = cost;
      }
    });
    if (p == nullptr) {
      return NoNodeError(kName, true, request, kv_tokens, nodes.size(),
                         p_skips);
    }

    SkipCounts d_skips;
    const NodeInfo* d = nullptr;
    if (colocate_hybrid_ && p->current_role == NodeRole::kHybrid) {
      SkipCounts ignored;
      if (!check_kv_capacity_ || HasCapacity(*p, kv_tokens, &ignored)) d = p;
    }
    if (d == nullptr) {
      double d_best = std::numeric_limits<double>::infinity();
      ForEachFrom(nodes, d_start_, [&](const NodeInfo& node) {
        if (!Candidate(node, /*prefill=*/false, at, &d_skips)) return;
        if (check_kv_capacity_ && !HasCapacity(node, kv_tokens, &d_skips)) {
          return;
        }
        const double cost =
            node.load.kv_blocks_used + std::ceil(kv_tokens / node.block_tokens);
        if (d == nullptr || cost < d_best) {
          d = &node;
          d_best = cost;
        }
      });
    }
    if (d == nullptr) {
      return NoNodeError(kName, false, request, kv_tokens, nodes.size(),
                         d_skips);
    }
    p_start_ = static_cast<size_t>(p - nodes.data()) + 1;
    d_start_ = static_cast<size_t>(d - nodes.data()) + 1;
    return Placement{.prefill_node = p->id, .decode_node = d->id};
  }

 private:
  const double prefill_weight_;
  const bool colocate_hybrid_;
  const bool check_kv_capacity_;
  const double default_output_tokens_;
  // Where the argmin scans start: just after the last node chosen for each
  // phase, so equally loaded nodes take turns.
  size_t p_start_ = 0;
  size_t d_start_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> MakeKvCost(
    const SchedulerOptions& options) {
  ParamReader params(kName, options);
  const double weight = params.Get("prefill_weight", 1.0, 0, 1e6);
  const bool colocate = params.GetUint("colocate_hybrid", 1, 0, 1) != 0;
  const bool check = params.GetUint("check_kv_capacity", 1, 0, 1) != 0;
  const double out = params.Get("default_output_tokens", 128, 0, 1e9);
  if (absl::Status s = params.Finish(); !s.ok()) return s;
  return std::make_unique<KvCost>(weight, colocate, check, out);
}

}  // namespace flowkv::internal
