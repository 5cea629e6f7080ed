// SPDX-License-Identifier: Apache-2.0
// kv_cost: Dynamo-style KV cost. For each node
//   prefill_blocks = (queued prefill tokens [+ this prompt]) / block_tokens
//   decode_blocks  = KV blocks in use [+ this request's blocks]
//   P = argmin  prefill_weight * prefill_blocks + decode_blocks
//   D = argmin  decode_blocks   (with KV capacity)

#include <cmath>

#include "lib/scheduler/policy_util.h"

namespace flowkv::internal {
namespace {

constexpr std::string_view kName = "kv_cost";

// Thread safety: externally synchronized (tie-break cursors).
class KvCost final : public Scheduler {
 public:
  KvCost(double prefill_weight, const PlacementOptions& options)
      : prefill_weight_(prefill_weight), placer_(kName, options) {}

  std::string_view name() const override { return kName; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override {
    const double input = request.input_tokens;
    const double kv_tokens = placer_.KvTokensOf(request);
    return placer_.Place(
        request, cluster, now,
        [&](const NodeInfo& node) {
          const double prefill_blocks =
              (node.load.queued_prefill_tokens + input) / node.block_tokens;
          return prefill_weight_ * prefill_blocks + node.load.kv_blocks_used;
        },
        [&](const NodeInfo& node) {
          return node.load.kv_blocks_used +
                 std::ceil(kv_tokens / node.block_tokens);
        });
  }

 private:
  const double prefill_weight_;
  ArgminPlacer placer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> MakeKvCost(
    const SchedulerOptions& options) {
  ParamReader params(kName, options);
  const double weight = params.Get("prefill_weight", 1.0, 0, 1e6);
  const PlacementOptions placement =
      ReadPlacementOptions(params, /*check_kv_capacity_default=*/true);
  if (absl::Status s = params.Finish(); !s.ok()) return s;
  return std::make_unique<KvCost>(weight, placement);
}

}  // namespace flowkv::internal
