// SPDX-License-Identifier: Apache-2.0
// A user's own placement policy, registered by name next to the built-in
// ones and created the same way a router creates "load_aware". The policy
// itself, "prefer_same_rack", is in prefer_same_rack.h.
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
#include "prefer_same_rack.h"

namespace {

using flowkv::ClusterView;
using flowkv::NodeInfo;
using flowkv::NodeRole;
using flowkv::Placement;
using flowkv::RequestInfo;

absl::StatusOr<std::unique_ptr<flowkv::Scheduler>> MakePreferSameRack(
    const flowkv::SchedulerOptions& options) {
  return flowkv_examples::MakePreferSameRack("prefer_same_rack", options);
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
