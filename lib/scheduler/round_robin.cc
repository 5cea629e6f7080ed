// SPDX-License-Identifier: Apache-2.0
// round_robin: fixed roles; prefill nodes in turn, decode nodes in turn.

#include "lib/scheduler/policy_util.h"

namespace flowkv::internal {
namespace {

constexpr std::string_view kName = "round_robin";

// Thread safety: externally synchronized (cursors).
class RoundRobin final : public Scheduler {
 public:
  explicit RoundRobin(const PlacementOptions& options)
      : colocate_hybrid_(options.colocate_hybrid),
        check_kv_capacity_(options.check_kv_capacity),
        default_output_tokens_(options.default_output_tokens) {}

  std::string_view name() const override { return kName; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override {
    const std::vector<NodeInfo>& nodes = cluster.nodes();
    const size_t n = nodes.size();
    const UsableAt at(cluster, now);
    const double kv_tokens = KvTokens(request, default_output_tokens_);

    SkipCounts p_skips;
    size_t p = n;
    for (size_t i = 0; i < n; ++i) {
      const size_t idx = (p_next_ + i) % n;
      if (Candidate(nodes[idx], /*prefill=*/true, at, &p_skips)) {
        p = idx;
        break;
      }
    }
    if (p == n) {
      return NoNodeError(kName, true, request, kv_tokens, n, p_skips);
    }

    SkipCounts d_skips;
    size_t d = n;
    if (colocate_hybrid_ && nodes[p].current_role == NodeRole::kHybrid) {
      SkipCounts ignored;
      if (!check_kv_capacity_ || HasCapacity(nodes[p], kv_tokens, &ignored)) {
        d = p;
      }
    }
    const bool colocated = d == p;
    for (size_t i = 0; d == n && i < n; ++i) {
      const size_t idx = (d_next_ + i) % n;
      if (Candidate(nodes[idx], /*prefill=*/false, at, &d_skips) &&
          (!check_kv_capacity_ ||
           HasCapacity(nodes[idx], kv_tokens, &d_skips))) {
        d = idx;
      }
    }
    if (d == n) {
      return NoNodeError(kName, false, request, kv_tokens, n, d_skips);
    }
    p_next_ = p + 1;
    if (!colocated) d_next_ = d + 1;
    return Placement{.prefill_node = nodes[p].id, .decode_node = nodes[d].id};
  }

 private:
  const bool colocate_hybrid_;
  const bool check_kv_capacity_;
  const double default_output_tokens_;
  size_t p_next_ = 0;
  size_t d_next_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> MakeRoundRobin(
    const SchedulerOptions& options) {
  ParamReader params(kName, options);
  const PlacementOptions placement =
      ReadPlacementOptions(params, /*check_kv_capacity_default=*/false);
  if (absl::Status s = params.Finish(); !s.ok()) return s;
  return std::make_unique<RoundRobin>(placement);
}

}  // namespace flowkv::internal
