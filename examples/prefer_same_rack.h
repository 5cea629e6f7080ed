// SPDX-License-Identifier: Apache-2.0
// "prefer_same_rack", a user's own placement policy: the prefill node is the
// one with the fewest queued prompt tokens; the decode node is the least busy
// one in the same rack as the prefill node (the KV cache stays on the rack's
// fast links), falling back to any rack when the rack has no usable decode
// node with room. Racks are consecutive node ids: rack = id / rack_size.
//
// Header-only so that examples/custom_scheduler.cc and the Python tests'
// extension (python/tests/policy_test_module.cc) run the very same policy.

#ifndef FLOWKV_EXAMPLES_PREFER_SAME_RACK_H_
#define FLOWKV_EXAMPLES_PREFER_SAME_RACK_H_

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "flowkv/scheduler.h"
#include "fmt/core.h"

namespace flowkv_examples {

// Thread safety: externally synchronized, like every Scheduler.
class PreferSameRack final : public flowkv::Scheduler {
 public:
  // `name` is what name() reports: the name the policy is registered under.
  PreferSameRack(std::string name, uint32_t rack_size)
      : name_(std::move(name)), rack_size_(rack_size) {}

  std::string_view name() const override { return name_; }

  absl::StatusOr<flowkv::Placement> Place(const flowkv::RequestInfo& request,
                                          const flowkv::ClusterView& cluster,
                                          absl::Time now) override {
    using flowkv::NodeInfo;
    // No allocation here: iterate the view's nodes in place.
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
    return flowkv::Placement{.prefill_node = p->id, .decode_node = d->id};
  }

 private:
  static double Busy(const flowkv::NodeInfo& node) {
    return node.load.running_decode + node.load.waiting_decode;
  }
  static bool HasRoom(const flowkv::NodeInfo& node,
                      const flowkv::RequestInfo& request) {
    const double total = node.load.kv_blocks_total;
    const double need = std::ceil(
        double(request.input_tokens + request.expected_output_tokens) /
        node.block_tokens);
    return total == 0 || total - node.load.kv_blocks_used >= need;
  }

  const std::string name_;
  const uint32_t rack_size_;
};

// Creates the policy under `name`. The factory reads the policy's own knob
// (rack_size, default 4) and refuses any other, or a rack_size that is not a
// whole number >= 1, with InvalidArgument.
inline absl::StatusOr<std::unique_ptr<flowkv::Scheduler>> MakePreferSameRack(
    std::string name, const flowkv::SchedulerOptions& options) {
  uint32_t rack_size = 4;
  for (const auto& [param, value] : options.params) {
    if (param != "rack_size") {
      return absl::InvalidArgumentError(fmt::format(
          "prefer_same_rack: unknown param '{}'; known: rack_size", param));
    }
    if (!(value >= 1) || value != std::floor(value)) {
      return absl::InvalidArgumentError(fmt::format(
          "prefer_same_rack: rack_size = {} must be a whole number >= 1",
          value));
    }
    rack_size = static_cast<uint32_t>(value);
  }
  return std::make_unique<PreferSameRack>(std::move(name), rack_size);
}

}  // namespace flowkv_examples

#endif  // FLOWKV_EXAMPLES_PREFER_SAME_RACK_H_
