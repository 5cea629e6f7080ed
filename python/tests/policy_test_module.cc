// _policy_test_module: registers "prefer_same_rack_cxx", the C++ policy of
// examples/custom_scheduler.cc (the prefill node with the fewest queued
// prompt tokens; the least busy decode node with room in its rack, else in
// any rack), for test_scheduler.py to compare with the same policy written
// in Python.

#include <cmath>
#include <memory>
#include <pybind11/pybind11.h>
#include <string>

#include "flowkv/scheduler.h"

namespace {

using flowkv::ClusterView;
using flowkv::NodeInfo;
using flowkv::Placement;
using flowkv::RequestInfo;

// Thread safety: externally synchronized, like every Scheduler.
class PreferSameRack final : public flowkv::Scheduler {
 public:
  explicit PreferSameRack(uint32_t rack_size) : rack_size_(rack_size) {}

  std::string_view name() const override { return "prefer_same_rack_cxx"; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override {
    const NodeInfo* p = nullptr;
    for (const NodeInfo& node : cluster.nodes()) {
      if (!flowkv::ServesPrefill(node.current_role) ||
          !cluster.IsUsable(node, now)) {
        continue;
      }
      if (p == nullptr ||
          node.load.queued_prefill_tokens < p->load.queued_prefill_tokens) {
        p = &node;
      }
    }
    if (p == nullptr) {
      return absl::UnavailableError("prefer_same_rack: no usable prefill node");
    }
    const NodeInfo* same_rack = nullptr;
    const NodeInfo* any_rack = nullptr;
    for (const NodeInfo& node : cluster.nodes()) {
      if (!flowkv::ServesDecode(node.current_role) ||
          !cluster.IsUsable(node, now) || !HasRoom(node, request)) {
        continue;
      }
      const NodeInfo*& best =
          node.id / rack_size_ == p->id / rack_size_ ? same_rack : any_rack;
      if (best == nullptr || Busy(node) < Busy(*best)) best = &node;
    }
    const NodeInfo* d = same_rack != nullptr ? same_rack : any_rack;
    if (d == nullptr) {
      return absl::ResourceExhaustedError(
          "prefer_same_rack: no usable decode node has room for the request");
    }
    return Placement{.prefill_node = p->id, .decode_node = d->id};
  }

 private:
  static double Busy(const NodeInfo& node) {
    return node.load.running_decode + node.load.waiting_decode;
  }
  static bool HasRoom(const NodeInfo& node, const RequestInfo& request) {
    const double total = node.load.kv_blocks_total;
    const double need = std::ceil(
        double(request.input_tokens + request.expected_output_tokens) /
        node.block_tokens);
    return total == 0 || total - node.load.kv_blocks_used >= need;
  }

  const uint32_t rack_size_;
};

}  // namespace

PYBIND11_MODULE(_policy_test_module, m) {
  m.def("register", [] {
    absl::Status s = flowkv::RegisterScheduler(
        "prefer_same_rack_cxx",
        [](const flowkv::SchedulerOptions& options)
            -> absl::StatusOr<std::unique_ptr<flowkv::Scheduler>> {
          uint32_t rack_size = 4;
          auto it = options.params.find("rack_size");
          if (it != options.params.end()) {
            rack_size = static_cast<uint32_t>(it->second);
          }
          return std::make_unique<PreferSameRack>(rack_size);
        });
    if (!s.ok() && s.code() != absl::StatusCode::kAlreadyExists) {
      throw std::runtime_error(std::string(s.message()));
    }
  });
}
