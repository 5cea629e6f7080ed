// SPDX-License-Identifier: Apache-2.0
// least_loaded: vLLM's disaggregated proxy. P = the node with the fewest
// queued prefill tokens, D = the node with the fewest running + waiting
// decode requests.

#include "lib/scheduler/policy_util.h"

namespace flowkv::internal {
namespace {

constexpr std::string_view kName = "least_loaded";

// Thread safety: externally synchronized (tie-break cursors).
class LeastLoaded final : public Scheduler {
 public:
  explicit LeastLoaded(const PlacementOptions& options)
      : placer_(kName, options) {}

  std::string_view name() const override { return kName; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override {
    return placer_.Place(
        request, cluster, now,
        [](const NodeInfo& node) { return node.load.queued_prefill_tokens; },
        [](const NodeInfo& node) {
          return node.load.running_decode + node.load.waiting_decode;
        });
  }

 private:
  ArgminPlacer placer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> MakeLeastLoaded(
    const SchedulerOptions& options) {
  ParamReader params(kName, options);
  const PlacementOptions placement =
      ReadPlacementOptions(params, /*check_kv_capacity_default=*/false);
  if (absl::Status s = params.Finish(); !s.ok()) return s;
  return std::make_unique<LeastLoaded>(placement);
}

}  // namespace flowkv::internal
