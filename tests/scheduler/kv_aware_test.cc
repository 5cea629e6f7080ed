// SPDX-License-Identifier: Apache-2.0
// The prefix-aware policies on constructed clusters: kv_aware (prefill
// saved by a cached prefix against queueing, transfer avoided on the decode
// side, load_aware's rebalancing) and prefix_cost (Dynamo's published cost
// function: overlap credit, argmin or softmax sampling).
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/time/time.h"
#include "flowkv/scheduler.h"
#include "tests/support/scheduler_test_util.h"

namespace flowkv {
namespace {

using test::kT0;
using test::Make;
using test::MakeCluster;
using test::Report;

// A prompt of `blocks` 16-token blocks with hashes 1000, 1001, ...
std::vector<uint64_t> Chain(uint32_t blocks) {
  std::vector<uint64_t> chain;
  for (uint32_t i = 0; i < blocks; ++i) chain.push_back(1000 + i);
  return chain;
}

void Cache(ClusterView& cluster, NodeId node, const std::vector<uint64_t>& all,
           size_t blocks) {
  const uint64_t seq = cluster.prefix_index().State(node).last_seq + 1;
  REQUIRE(
      cluster.prefix_index()
          .ApplyStored(node, seq, absl::MakeConstSpan(all).subspan(0, blocks))
          .ok());
}

TEST_CASE("kv_aware sends a request to the node holding its prefix",
          "[scheduler][kv_aware]") {
  ClusterView cluster = MakeCluster(3, 1);
  const std::vector<uint64_t> chain = Chain(500);  // 8000 tokens
  Cache(cluster, 1, chain, 400);
  auto kv = Make("kv_aware");
  auto where =
      kv->Place({.input_tokens = 8000, .block_hashes = chain}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
  // Predicted TTFT: only the 1600 uncached tokens, attending to 6400.
  const NodeCostModel c;
  CHECK(where->predicted_ttft_ms ==
        Approx(c.a + c.b * 1600 + c.c * (8000.0 * 8000 - 6400.0 * 6400)));
  // Without hashes the request is not matched: node 1 is not special.
  auto plain = Make("kv_aware")->Place({.input_tokens = 8000}, cluster, kT0);
  REQUIRE(plain.ok());
  CHECK(plain->predicted_ttft_ms == Approx(c.PrefillMs(8000)));
}

TEST_CASE("kv_aware weighs the prefill a hit saves against the queue",
          "[scheduler][kv_aware]") {
  ClusterView cluster = MakeCluster(2, 1);
  const std::vector<uint64_t> chain = Chain(500);  // 8000 tokens
  Cache(cluster, 0, chain, 250);                   // 4000 tokens cached
  const RequestInfo request{.input_tokens = 8000, .block_hashes = chain};
  // Node 0's queue (6000 tokens) costs more than the 4000 tokens the hit
  // saves; node 1 is idle.
  Report(cluster, 0, {.queued_prefill_tokens = 6000});
  auto where = Make("kv_aware")->Place(request, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
  // A short queue: the hit is worth the wait.
  Report(cluster, 0, {.queued_prefill_tokens = 1000});
  where = Make("kv_aware")->Place(request, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 0);
  // The same 1000 tokens, but node 0 says its queue takes 1 s (a long
  // prompt in progress): kv_aware goes to the idle node. Dynamo's block
  // cost subtracts the overlap from the queued blocks and still picks the
  // hit: max(62.5 + 500 - 250, 0) + 500 = 812.5 < 0 + 500 + 500.
  Report(cluster, 0,
         {.queued_prefill_tokens = 1000, .queued_prefill_ms = 1000});
  where = Make("kv_aware")->Place(request, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
  auto dyn = Make("prefix_cost")->Place(request, cluster, kT0);
  REQUIRE(dyn.ok());
  CHECK(dyn->prefill_node == 0);
}

TEST_CASE("kv_aware uses the node's own queue-time estimate",
          "[scheduler][kv_aware]") {
  ClusterView cluster = MakeCluster(2, 1);
  // Equal queued tokens; node 0 reports that its queue (one long prompt)
  // takes 30 s, node 1 that its queue (many short prompts) takes 3 s.
  Report(cluster, 0,
         {.queued_prefill_tokens = 40000, .queued_prefill_ms = 30000});
  Report(cluster, 1,
         {.queued_prefill_tokens = 40000, .queued_prefill_ms = 3000});
  for (int i = 0; i < 2; ++i) {
    auto where = Make("kv_aware")->Place({.input_tokens = 100}, cluster, kT0);
    REQUIRE(where.ok());
    CHECK(where->prefill_node == 1);
    CHECK(where->predicted_ttft_ms ==
          Approx(3000 + NodeCostModel{}.PrefillMs(100)));
  }
}

TEST_CASE("kv_aware prefers the decode node that already holds the prefix",
          "[scheduler][kv_aware]") {
  ClusterView cluster = MakeCluster(1, 2);
  const std::vector<uint64_t> chain = Chain(500);
  Cache(cluster, 2, chain, 500);
  for (int i = 0; i < 3; ++i) {  // the tie-break cursor does not matter
    auto where = Make("kv_aware")
                     ->Place({.input_tokens = 8000, .block_hashes = chain},
                             cluster, kT0);
    REQUIRE(where.ok());
    CHECK(where->decode_node == 2);
    // Only the last (uncached) token's block crosses the link.
    CHECK(where->predicted_transfer_ms ==
          Approx(LinkModel{}.TransferMs(1 * 128 * 1024, 1)));
  }
}

TEST_CASE("kv_aware and prefix_cost ignore a stale node's cache",
          "[scheduler][kv_aware]") {
  ClusterView cluster = MakeCluster(2, 1);
  const std::vector<uint64_t> chain = Chain(100);
  Cache(cluster, 1, chain, 100);
  // Node 1's events were lost: its cache is unknown until a snapshot.
  cluster.prefix_index().MarkStale(1);
  Report(cluster, 1, {.queued_prefill_tokens = 10});
  for (const char* policy : {"kv_aware", "prefix_cost"}) {
    INFO(policy);
    auto where = Make(policy)->Place(
        {.input_tokens = 1600, .block_hashes = chain}, cluster, kT0);
    REQUIRE(where.ok());
    CHECK(where->prefill_node == 0);
  }
}

TEST_CASE("prefix_cost computes Dynamo's cost", "[scheduler][prefix_cost]") {
  ClusterView cluster = MakeCluster(2, 2);
  const std::vector<uint64_t> chain = Chain(100);  // 1600 tokens
  // Node 0: 60 blocks cached, 80 queued blocks, 10 active blocks:
  //   max(80 + 100 - 60, 0) + 10 + 100 = 230.
  // Node 1: nothing cached, 20 queued, 100 active: 120 + 200 = 320.
  Cache(cluster, 0, chain, 60);
  Report(cluster, 0,
         {.queued_prefill_tokens = 1280,
          .kv_blocks_used = 10,
          .kv_blocks_total = 1000});
  Report(cluster, 1,
         {.queued_prefill_tokens = 320,
          .kv_blocks_used = 100,
          .kv_blocks_total = 1000});
  // Decode: node 3 has fewer active blocks; the overlap does not count.
  Cache(cluster, 2, chain, 100);
  Report(cluster, 2, {.kv_blocks_used = 300, .kv_blocks_total = 1000});
  Report(cluster, 3, {.kv_blocks_used = 200, .kv_blocks_total = 1000});
  auto dyn = Make("prefix_cost");
  auto where =
      dyn->Place({.input_tokens = 1600, .block_hashes = chain}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 0);
  CHECK(where->decode_node == 3);
  // prefill_load_scale 3 without overlap credit: node 0 = 3*180 + 110 =
  // 650 > node 1 = 3*120 + 200 = 560.
  auto no_credit =
      Make("prefix_cost",
           {.params = {{"prefill_load_scale", 3}, {"overlap_credit", 0}}});
  where = no_credit->Place({.input_tokens = 1600, .block_hashes = chain},
                           cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
}

TEST_CASE("prefix_cost with a temperature samples, reproducibly",
          "[scheduler][prefix_cost]") {
  ClusterView cluster = MakeCluster(4, 1);
  for (NodeId n = 0; n < 4; ++n) {
    Report(cluster, n, {.queued_prefill_tokens = 1600.0 * n});
  }
  auto count = [&](double temperature, uint32_t seed) {
    auto s =
        Make("prefix_cost", {.params = {{"temperature", temperature},
                                        {"seed", static_cast<double>(seed)}}});
    std::map<NodeId, int> picks;
    for (int i = 0; i < 400; ++i) {
      auto where = s->Place({.input_tokens = 160}, cluster, kT0);
      REQUIRE(where.ok());
      ++picks[where->prefill_node];
    }
    return picks;
  };
  // Temperature 0: always the cheapest.
  CHECK(count(0, 1) == std::map<NodeId, int>{{0, 400}});
  // A temperature spreads the choices, the cheapest most often; the same
  // seed gives the same choices.
  const std::map<NodeId, int> warm = count(0.5, 7);
  CHECK(warm.size() == 4);
  CHECK(warm.at(0) > warm.at(3));
  CHECK(count(0.5, 7) == warm);
}

TEST_CASE("prefix-aware policies reject bad options", "[scheduler][kv_aware]") {
  for (const auto& [policy, key, value] :
       std::vector<std::tuple<std::string, std::string, double>>{
           {"kv_aware", "cache_credit", 2},
           {"kv_aware", "no_such_option", 1},
           {"kv_aware", "overload_cycles", 0},
           {"prefix_cost", "temperature", -1},
           {"prefix_cost", "overlap_credit", 1.5},
           {"prefix_cost", "prefill_weight", 1}}) {
    INFO(policy << " " << key);
    auto s = CreateScheduler(policy, {.params = {{key, value}}});
    REQUIRE_FALSE(s.ok());
    CHECK(s.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(s.status().message().find(key) != std::string::npos);
  }
  // kv_aware takes load_aware's rebalancing options.
  CHECK(CreateScheduler("kv_aware", {.params = {{"overload_cycles", 5},
                                                {"cache_credit", 0.5}}})
            .ok());
}

TEST_CASE("kv_aware rebalances as load_aware does", "[scheduler][kv_aware]") {
  ClusterView cluster = MakeCluster(2, 2);
  test::OverloadPrefill(cluster, kT0);
  auto kv = Make("kv_aware", {.params = {{"overload_cycles", 1}}});
  auto la = Make("load_aware", {.params = {{"overload_cycles", 1}}});
  const RebalancePlan a = kv->Rebalance(cluster, kT0);
  const RebalancePlan b = la->Rebalance(cluster, kT0);
  CHECK(a.reason == b.reason);
  CHECK(a.directives.size() == b.directives.size());
  CHECK_FALSE(a.directives.empty());
}

}  // namespace
}  // namespace flowkv
