// least_loaded: vLLM's disaggregated proxy. P = the node with the fewest
// queued prefill tokens, D = the node with the fewest running + waiting
// decode requests.

#include <limits>

#include "lib/scheduler/policy_util.h"

namespace flowkv::internal {
namespace {

constexpr std::string_view kName = "least_loaded";

// Thread safety: externally synchronized (tie-break cursor).
class LeastLoaded final : public Scheduler {
 public:
  LeastLoaded(bool colocate_hybrid, bool check_kv_capacity,
              double default_output_tokens)
      : colocate_hybrid_(colocate_hybrid),
        check_kv_capacity_(check_kv_capacity),
        default_output_tokens_(default_output_tokens) {}

  std::string_view name() const override { return kName; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override {
    const std::vector<NodeInfo>& nodes = cluster.nodes();
    const UsableAt at(cluster, now);
    const double kv_tokens = KvTokens(request, default_output_tokens_);

    SkipCounts p_skips;
    const NodeInfo* p = nullptr;
    double p_best = std::numeric_limits<double>::infinity();
    ForEachFrom(nodes, p_start_, [&](const NodeInfo& node) {
      if (!Candidate(node, /*prefill=*/true, at, &p_skips)) return;
      if (p == nullptr || node.load.queued_prefill_tokens < p_best) {
        p = &node;
        p_best = node.load.queued_prefill_tokens;
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
        const double load = node.load.running_decode + node.load.waiting_decode;
        if (d == nullptr || load < d_best) {
          d = &node;
          d_best = load;
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
  const bool colocate_hybrid_;
  const bool check_kv_capacity_;
  const double default_output_tokens_;
  // Where the argmin scans start: just after the last node chosen for each
  // phase, so equally loaded nodes take turns.
  size_t p_start_ = 0;
  size_t d_start_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> MakeLeastLoaded(
    const SchedulerOptions& options) {
  ParamReader params(kName, options);
  const bool colocate = params.GetUint("colocate_hybrid", 1, 0, 1) != 0;
  const bool check = params.GetUint("check_kv_capacity", 0, 0, 1) != 0;
  const double out = params.Get("default_output_tokens", 128, 0, 1e9);
  if (absl::Status s = params.Finish(); !s.ok()) return s;
  return std::make_unique<LeastLoaded>(colocate, check, out);
}

}  // namespace flowkv::internal
