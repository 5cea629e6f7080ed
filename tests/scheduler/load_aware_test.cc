// SPDX-License-Identifier: Apache-2.0
// The load_aware policy: placement by predicted TTFT, KV capacity and
// links, and Rebalance (role switches after N overloaded cycles, scale-out
// and scale-in advice, directive renewal). The other policies and the
// ClusterView are scheduler_test.cc's.
#include <memory>
#include <string>

#include <catch2/catch.hpp>

#include "absl/time/time.h"
#include "flowkv/scheduler.h"
#include "tests/support/scheduler_test_util.h"

namespace flowkv {
namespace {

using test::kT0;
using test::Make;
using test::MakeCluster;
using test::Node;
using test::Options;
using test::OverloadPrefill;
using test::Report;

// --- load_aware
// --------------------------------------------------------------------

TEST_CASE("load_aware picks P by predicted TTFT", "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 1);
  Report(cluster, 0, {.queued_prefill_tokens = 4000});
  Report(cluster, 1, {.queued_prefill_tokens = 1000});
  auto la = Make("load_aware");
  auto where = la->Place({.input_tokens = 2000}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
  const NodeCostModel cost;
  CHECK(where->predicted_ttft_ms ==
        Approx(cost.PrefillMs(1000) + cost.PrefillMs(2000)));
  CHECK(where->predicted_transfer_ms ==
        Approx(LinkModel{}.TransferMs(2000 * 128 * 1024, 1)));
}

TEST_CASE("load_aware prefers a faster prefill node over a shorter queue",
          "[scheduler]") {
  ClusterView cluster;
  NodeInfo slow = Node(0, NodeRole::kPrefill);
  NodeInfo fast = Node(1, NodeRole::kPrefill);
  fast.cost.a /= 2.5;
  fast.cost.b /= 2.5;
  fast.cost.c /= 2.5;
  REQUIRE(cluster.AddNode(slow).ok());
  REQUIRE(cluster.AddNode(fast).ok());
  REQUIRE(cluster.AddNode(Node(2, NodeRole::kDecode)).ok());
  Report(cluster, 0, {.queued_prefill_tokens = 0});
  Report(cluster, 1, {.queued_prefill_tokens = 3000});
  // slow: prefill(8000); fast: (prefill(3000) + prefill(8000)) / 2.5.
  auto where = Make("load_aware")->Place({.input_tokens = 8000}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
  // Least-loaded would pick the empty slow node.
  auto ll = Make("least_loaded")->Place({.input_tokens = 8000}, cluster, kT0);
  REQUIRE(ll.ok());
  CHECK(ll->prefill_node == 0);
}

TEST_CASE("load_aware avoids a decode node without KV capacity",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(1, 2);
  // Node 1 is idle but nearly full; node 2 is busier with room.
  Report(cluster, 1, {.kv_blocks_used = 9'900, .kv_blocks_total = 10'000});
  Report(cluster, 2,
         {.running_decode = 30,
          .decode_context_tokens = 60'000,
          .kv_blocks_used = 4'000,
          .kv_blocks_total = 10'000});
  auto la = Make("load_aware");
  auto where = la->Place({.input_tokens = 4000, .expected_output_tokens = 256},
                         cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->decode_node == 2);
  // A small request fits on the idle node and goes there.
  where = la->Place({.input_tokens = 100, .expected_output_tokens = 100},
                    cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->decode_node == 1);
}

TEST_CASE("load_aware: ResourceExhausted when no decode node fits",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(1, 2);
  Report(cluster, 1, {.kv_blocks_used = 9'900, .kv_blocks_total = 10'000});
  Report(cluster, 2, {.kv_blocks_used = 9'950, .kv_blocks_total = 10'000});
  auto where =
      Make("load_aware")->Place({.id = 9, .input_tokens = 8000}, cluster, kT0);
  REQUIRE(where.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(where.status().message().find("request 9") != std::string::npos);
  CHECK(where.status().message().find("100 blocks") != std::string::npos);
}

TEST_CASE("load_aware: Unavailable when no usable prefill node",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 1);
  REQUIRE(cluster.RemoveNode(0).ok());
  const absl::Time later = kT0 + absl::Seconds(30);
  Report(cluster, 2, {}, later);  // node 1 is stale at `later`
  auto where = Make("load_aware")->Place({.input_tokens = 10}, cluster, later);
  REQUIRE(where.status().code() == absl::StatusCode::kUnavailable);
  const std::string msg(where.status().message());
  CHECK(msg.find("prefill") != std::string::npos);
  CHECK(msg.find("1 unavailable") != std::string::npos);
  CHECK(msg.find("1 stale") != std::string::npos);
  // An empty cluster is Unavailable too.
  ClusterView empty;
  CHECK(Make("load_aware")->Place({}, empty, kT0).status().code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE("load_aware weighs the link: avoids a slow link", "[scheduler]") {
  ClusterView cluster = MakeCluster(1, 2);
  cluster.SetLink(0, 1, {.bandwidth_bytes_per_s = 1e9});
  auto where = Make("load_aware")->Place({.input_tokens = 8000}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->decode_node == 2);
}

TEST_CASE("load_aware counts transfer calls per block when asked",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(1, 1);
  auto blockwise =
      Make("load_aware", {.params = {{"transfer_calls_per_request", 0},
                                     {"transfer_calls_per_block", 64}}});
  auto where = blockwise->Place({.input_tokens = 8000}, cluster, kT0);
  REQUIRE(where.ok());
  // 500 blocks x 64 calls.
  CHECK(where->predicted_transfer_ms ==
        Approx(LinkModel{}.TransferMs(8000.0 * 128 * 1024, 32'000)));
}

TEST_CASE("load_aware colocates on a hybrid node when it is cheapest",
          "[scheduler]") {
  ClusterView cluster;
  REQUIRE(cluster.AddNode(Node(0, NodeRole::kHybrid)).ok());
  REQUIRE(cluster.AddNode(Node(1, NodeRole::kHybrid)).ok());
  Report(cluster, 0, {.queued_prefill_tokens = 5000});
  auto where = Make("load_aware")->Place({.input_tokens = 1000}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
  CHECK(where->colocated());
  CHECK(where->predicted_transfer_ms == 0);
}

// --- Rebalance
// -------------------------------------------------------------------

TEST_CASE("load_aware switches an idle decode node after N overloaded cycles",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 2);
  auto la = Make("load_aware",
                 {.params = {{"overload_cycles", 3}, {"switch_cycles", 4}}});
  absl::Time now = kT0;
  // Node 3 is the idler decode node.
  Report(cluster, 2, {.running_decode = 20, .kv_blocks_total = 10'000});
  for (int cycle = 1; cycle <= 2; ++cycle) {
    OverloadPrefill(cluster, now);
    Report(cluster, 2, {.running_decode = 20, .kv_blocks_total = 10'000}, now);
    RebalancePlan plan = la->Rebalance(cluster, now);
    CHECK(plan.directives.empty());
    CHECK(plan.prefill_score > 1);
    CHECK(plan.decode_score < 0.2);
    now += absl::Seconds(1);
  }
  OverloadPrefill(cluster, now);
  Report(cluster, 2, {.running_decode = 20, .kv_blocks_total = 10'000}, now);
  RebalancePlan plan = la->Rebalance(cluster, now);
  REQUIRE(plan.directives.size() == 1);
  CHECK(plan.directives[0].node == 3);
  CHECK(plan.directives[0].role == NodeRole::kPrefill);
  CHECK(plan.directives[0].cycles == 4);
  CHECK(plan.scale == ScaleAdvice::kNone);
  CHECK(plan.reason.find("prefill side overloaded for 3 cycles") !=
        std::string::npos);

  // Applied, the node takes prefill work.
  REQUIRE(cluster.SetRole(3, NodeRole::kPrefill, 4).ok());
  auto where = la->Place({.input_tokens = 1000}, cluster, now);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 3);
  CHECK(where->decode_node == 2);  // the only decode node left

  // TickRoleCycles returns it to decode once the directive runs out.
  for (int i = 0; i < 4; ++i) {
    CHECK(cluster.Find(3)->current_role == NodeRole::kPrefill);
    cluster.TickRoleCycles();
  }
  CHECK(cluster.Find(3)->current_role == NodeRole::kDecode);
}

TEST_CASE(
    "load_aware switches to hybrid when asked, and keeps a side's last "
    "node",
    "[scheduler]") {
  SECTION("switch_to_hybrid") {
    ClusterView cluster = MakeCluster(2, 2);
    auto la =
        Make("load_aware",
             {.params = {{"overload_cycles", 1}, {"switch_to_hybrid", 1}}});
    OverloadPrefill(cluster, kT0);
    RebalancePlan plan = la->Rebalance(cluster, kT0);
    REQUIRE(plan.directives.size() == 1);
    CHECK(plan.directives[0].role == NodeRole::kHybrid);
  }
  SECTION("last decode node: no switch by default") {
    ClusterView cluster = MakeCluster(2, 1);
    auto la = Make("load_aware", {.params = {{"overload_cycles", 1}}});
    for (NodeId id : {0, 1}) {
      Report(cluster, id, {.queued_prefill_tokens = 40'000});
    }
    CHECK(la->Rebalance(cluster, kT0).directives.empty());
  }
  SECTION("last decode node: hybrid with hybrid_fallback") {
    ClusterView cluster = MakeCluster(2, 1);
    auto la =
        Make("load_aware",
             {.params = {{"overload_cycles", 1}, {"hybrid_fallback", 1}}});
    for (NodeId id : {0, 1}) {
      Report(cluster, id, {.queued_prefill_tokens = 40'000});
    }
    RebalancePlan plan = la->Rebalance(cluster, kT0);
    REQUIRE(plan.directives.size() == 1);
    CHECK(plan.directives[0].node == 2);
    CHECK(plan.directives[0].role == NodeRole::kHybrid);
  }
}

TEST_CASE("load_aware does not switch while the other side is busy",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 2);
  auto la = Make("load_aware", {.params = {{"overload_cycles", 1}}});
  absl::Time now = kT0;
  for (int cycle = 0; cycle < 5; ++cycle) {
    OverloadPrefill(cluster, now);
    for (NodeId id : {2, 3}) {  // decode moderately loaded, not idle
      Report(cluster, id,
             {.running_decode = 128,
              .kv_blocks_used = 5000,
              .kv_blocks_total = 10'000},
             now);
    }
    RebalancePlan plan = la->Rebalance(cluster, now);
    CHECK(plan.directives.empty());
    CHECK(plan.scale == ScaleAdvice::kNone);
    now += absl::Seconds(1);
  }
}

TEST_CASE("load_aware advises scale-out when both sides stay overloaded",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 2);
  auto la = Make("load_aware", {.params = {{"scale_cycles", 2}}});
  absl::Time now = kT0;
  auto overload_all = [&] {
    for (NodeId id : {0, 1}) {
      Report(cluster, id, {.queued_prefill_tokens = 50'000}, now);
    }
    for (NodeId id : {2, 3}) {
      Report(cluster, id,
             {.running_decode = 300,
              .waiting_decode = 50,
              .kv_blocks_used = 10'000,
              .kv_blocks_total = 10'000},
             now);
    }
  };
  overload_all();
  CHECK(la->Rebalance(cluster, now).scale == ScaleAdvice::kNone);
  now += absl::Seconds(1);
  overload_all();
  RebalancePlan plan = la->Rebalance(cluster, now);
  CHECK(plan.scale == ScaleAdvice::kScaleOut);
  CHECK(plan.directives.empty());
  CHECK(plan.reason.find("scale out") != std::string::npos);
  CHECK(plan.reason.find("2 cycles") != std::string::npos);
}

TEST_CASE("load_aware advises scale-in when everything idles", "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 2);
  auto la = Make("load_aware", {.params = {{"scale_cycles", 3}}});
  RebalancePlan plan;
  for (int cycle = 0; cycle < 3; ++cycle) {
    plan = la->Rebalance(cluster, kT0);
  }
  CHECK(plan.scale == ScaleAdvice::kScaleIn);
  CHECK(plan.reason.find("idle for 3 cycles") != std::string::npos);
}

TEST_CASE("load_aware renews a directive while the overload lasts",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 2);
  auto la = Make("load_aware", {.params = {{"overload_cycles", 100}}});
  REQUIRE(cluster.SetRole(3, NodeRole::kPrefill, 1).ok());
  OverloadPrefill(cluster, kT0);
  RebalancePlan plan = la->Rebalance(cluster, kT0);
  REQUIRE(plan.directives.size() == 1);
  CHECK(plan.directives[0].node == 3);
  CHECK(plan.directives[0].role == NodeRole::kPrefill);
  CHECK(plan.directives[0].cycles == 20);
}

}  // namespace
}  // namespace flowkv
