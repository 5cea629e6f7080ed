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
  LeastLoaded(bool colocate_hybrid, bool check_kv_capacity,
              double default_output_tokens)
      : placer_(kName, colocate_hybrid, check_kv_capacity,
                default_output_tokens) {}

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
  const bool colocate = params.GetUint("colocate_hybrid", 1, 0, 1) != 0;
  const bool check = params.GetUint("check_kv_capacity", 0, 0, 1) != 0;
  const double out = params.Get("default_output_tokens", 128, 0, 1e9);
  if (absl::Status s = params.Finish(); !s.ok()) return s;
  return std::make_unique<LeastLoaded>(colocate, check, out);
}

}  // namespace flowkv::internal
