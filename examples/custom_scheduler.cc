// A user's own placement policy, registered by name next to the built-in
// ones and created the same way a router creates "load_aware".
//
// "prefer_same_rack": the prefill node is the one with the fewest queued
// prompt tokens; the decode node is the least busy one in the same rack as
// the prefill node (the KV cache stays on the rack's fast links), falling
// back to any rack when the rack has no usable decode node with room.
// Racks are consecutive node ids: rack = id / rack_size.
//
//   build/bin/custom_scheduler

#include <cmath>
#include <limits>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "flowkv/scheduler.h"
#include "fmt/core.h"

namespace {

using flowkv::ClusterView;
using flowkv::NodeInfo;
using flowkv::NodeRole;
using flowkv::Placement;
using flowkv::RequestInfo;

// Thread safety: externally synchronized, like every Scheduler.
class PreferSameRack final : public flowkv::Scheduler {
 public:
  explicit PreferSameRack(uint32_t rack_size) : rack_size_(rack_size) {}

  std::string_view name() const override { return "prefer_same_rack"; }

  absl::StatusOr<Placement> Place(const RequestInfo& request,
                                  const ClusterView& cluster,
                                  absl::Time now) override {
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

// The factory reads the policy's own knob and refuses any other.
absl::StatusOr<std::unique_ptr<flowkv::Scheduler>> MakePreferSameRack(
    const flowkv::SchedulerOptions& options) {
  uint32_t rack_size = 4;
  for (const auto& [name, value] : options.params) {
    if (name != "rack_size") {
      return absl::InvalidArgumentError(fmt::format(
          "prefer_same_rack: unknown param '{}'; known: rack_size", name));
    }
    if (!(value >= 1) || value != std::floor(value)) {
      return absl::InvalidArgumentError(fmt::format(
          "prefer_same_rack: rack_size = {} must be a whole number >= 1",
          value));
    }
    rack_size = static_cast<uint32_t>(value);
  }
  return std::make_unique<PreferSameRack>(rack_size);
}

}  // namespace

int main() {
  if (absl::Status s =
          flowkv::RegisterScheduler("prefer_same_rack", MakePreferSameRack);
      !s.ok()) {
    fmt::print(stderr, "register: {}\n", s.ToString());
    return 1;
  }
  fmt::print("registered policies:");
  for (const std::string& name : flowkv::RegisteredSchedulers()) {
    fmt::print(" {}", name);
  }
  fmt::print("\n\n");

  // Two racks of four nodes: two prefill and two decode nodes each. KV sent
  // between racks crosses a slower link.
  const absl::Time now = absl::Now();
  ClusterView::Options options;
  options.smoothing = 1.0;  // take each report as is
  ClusterView cluster(options);
  for (flowkv::NodeId id = 0; id < 8; ++id) {
    NodeInfo node;
    node.id = id;
    node.role = id % 4 < 2 ? NodeRole::kPrefill : NodeRole::kDecode;
    if (absl::Status s = cluster.AddNode(node); !s.ok()) {
      fmt::print(stderr, "{}\n", s.ToString());
      return 1;
    }
    if (absl::Status s =
            cluster.ReportLoad(id, {.kv_blocks_total = 20'000}, now);
        !s.ok()) {
      fmt::print(stderr, "{}\n", s.ToString());
      return 1;
    }
  }
  for (flowkv::NodeId from = 0; from < 8; ++from) {
    for (flowkv::NodeId to = 0; to < 8; ++to) {
      if (from / 4 != to / 4) {
        cluster.SetLink(from, to,
                        {.bandwidth_bytes_per_s = 3e9,
                         .call_overhead_ms = 0.045,
                         .fixed_ms = 3.0});
      }
    }
  }

  const RequestInfo requests[] = {
      {.id = 1, .input_tokens = 8000, .expected_output_tokens = 512},
      {.id = 2, .input_tokens = 2000, .expected_output_tokens = 128},
      {.id = 3, .input_tokens = 12000, .expected_output_tokens = 32},
      {.id = 4, .input_tokens = 500, .expected_output_tokens = 512},
      {.id = 5, .input_tokens = 4000, .expected_output_tokens = 256},
      {.id = 6, .input_tokens = 9000, .expected_output_tokens = 64},
  };

  for (const char* policy : {"prefer_same_rack", "load_aware"}) {
    auto scheduler = flowkv::CreateScheduler(
        policy, policy == std::string_view("prefer_same_rack")
                    ? flowkv::SchedulerOptions{.params = {{"rack_size", 4}}}
                    : flowkv::SchedulerOptions{});
    if (!scheduler.ok()) {
      fmt::print(stderr, "create {}: {}\n", policy,
                 scheduler.status().ToString());
      return 1;
    }
    ClusterView view = cluster;  // each policy starts from the same state
    fmt::print("policy {}\n", (*scheduler)->name());
    fmt::print("  {:>7} {:>6} {:>7} {:>7} {:>10} {:>12}\n", "request", "input",
               "prefill", "decode", "same rack", "transfer ms");
    for (const RequestInfo& request : requests) {
      absl::StatusOr<Placement> where = (*scheduler)->Place(request, view, now);
      if (!where.ok()) {
        fmt::print("  {:>7} rejected: {}\n", request.id,
                   where.status().ToString());
        continue;
      }
      const double transfer_ms =
          where->colocated()
              ? 0.0
              : view.Link(where->prefill_node, where->decode_node)
                    .TransferMs(request.input_tokens * 128.0 * 1024, 1);
      fmt::print(
          "  {:>7} {:>6} {:>7} {:>7} {:>10} {:>12.1f}\n", request.id,
          request.input_tokens, where->prefill_node, where->decode_node,
          where->prefill_node / 4 == where->decode_node / 4 ? "yes" : "no",
          transfer_ms);
      // What the nodes would report next: the prompt is queued on P, the
      // request will run on D.
      const NodeInfo* p = view.Find(where->prefill_node);
      const NodeInfo* d = view.Find(where->decode_node);
      flowkv::NodeLoad p_load = p->load;
      p_load.queued_prefill_tokens += request.input_tokens;
      flowkv::NodeLoad d_load = d->load;
      d_load.running_decode += 1;
      d_load.decode_context_tokens += request.input_tokens;
      d_load.kv_blocks_used += std::ceil(
          (request.input_tokens + request.expected_output_tokens) / 16.0);
      if (!view.ReportLoad(p->id, p_load, now).ok() ||
          !view.ReportLoad(d->id, d_load, now).ok()) {
        return 1;
      }
    }
    fmt::print("\n");
  }
  return 0;
}
