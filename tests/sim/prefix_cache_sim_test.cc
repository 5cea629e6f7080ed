// SPDX-License-Identifier: Apache-2.0
// The simulator's prefix cache: hits from hand-made hash_ids on the prefill
// and the decode side, the prefill time and transfer they save, the KV
// events that reach the router's index, and runs without hashes or without
// the cache.
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/sim/cluster.h"
#include "flowkv/sim/simulator.h"
#include "flowkv/sim/workload.h"

namespace flowkv {
namespace {

// Four 1024-token prompts, 10 s apart (each finishes before the next):
// the second repeats the first, the third shares its first 512 tokens, the
// fourth has no hash ids.
std::vector<SimRequest> HandMadeTrace() {
  return {
      {.id = 0,
       .arrival_ms = 0,
       .input_tokens = 1024,
       .output_tokens = 2,
       .hash_ids = {1, 2}},
      {.id = 1,
       .arrival_ms = 10000,
       .input_tokens = 1024,
       .output_tokens = 2,
       .hash_ids = {1, 2}},
      {.id = 2,
       .arrival_ms = 20000,
       .input_tokens = 1024,
       .output_tokens = 2,
       .hash_ids = {1, 3}},
      {.id = 3, .arrival_ms = 30000, .input_tokens = 1024, .output_tokens = 2},
  };
}

SimResult Run(const std::vector<SimRequest>& reqs, bool prefix_cache,
              const std::string& policy = "kv_aware") {
  absl::StatusOr<std::vector<SimNodeSpec>> nodes =
      ParseClusterSpec("p:a100x1,d:a100x1");
  REQUIRE(nodes.ok());
  SimOptions o;
  o.policy = policy;
  o.prefix_cache = prefix_cache;
  absl::StatusOr<SimResult> r = Simulate(*nodes, reqs, o);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *std::move(r);
}

TEST_CASE("simulator: prefix hits on a hand-made trace", "[sim][prefix]") {
  const SimResult r = Run(HandMadeTrace(), true);
  REQUIRE(r.completed == 4);
  const std::vector<RequestRecord>& q = r.requests_detail;
  // Prefill side: the last token is always computed.
  CHECK(q[0].cached_tokens == 0);
  CHECK(q[1].cached_tokens == 1023);
  CHECK(q[2].cached_tokens == 512);
  CHECK(q[3].cached_tokens == 0);
  CHECK(r.prefix_hit_rate == Approx((1023.0 + 512) / 4096));
  // Decode side: the decode node kept the prompts it received.
  CHECK(q[1].decode_cached_tokens == 1024);
  CHECK(q[2].decode_cached_tokens == 512);
  CHECK(r.decode_prefix_hit_rate == Approx((1024.0 + 512) / 4096));
  CHECK(q[1].transfer_bytes == 0);
  CHECK(q[2].transfer_bytes == q[0].transfer_bytes / 2);
  // Hits shorten the prefill: TTFT of the repeat is far below the first's.
  CHECK(q[1].ttft_ms() < q[0].ttft_ms() / 5);
  CHECK(q[2].ttft_ms() < q[0].ttft_ms());
  CHECK(q[3].ttft_ms() == Approx(q[0].ttft_ms()));
  // The nodes' events reached the router's index without a gap; no leak.
  CHECK(r.kv_event_batches > 0);
  CHECK(r.index_resyncs == 0);
  for (const NodeRecord& n : r.nodes) CHECK(n.final_kv_blocks_used == 0);
}

TEST_CASE("simulator: without the cache nothing hits, the same trace runs",
          "[sim][prefix]") {
  const SimResult off = Run(HandMadeTrace(), false);
  REQUIRE(off.completed == 4);
  CHECK(off.prefix_hit_rate == 0);
  CHECK(off.decode_prefix_hit_rate == 0);
  CHECK(off.kv_event_batches == 0);
  for (const RequestRecord& q : off.requests_detail) {
    CHECK(q.cached_tokens == 0);
    CHECK(q.ttft_ms() == Approx(off.requests_detail[0].ttft_ms()));
  }
  // Requests without hash ids never hit, with the cache on.
  std::vector<SimRequest> plain = HandMadeTrace();
  for (SimRequest& q : plain) q.hash_ids.clear();
  const SimResult r = Run(plain, true);
  CHECK(r.prefix_hit_rate == 0);
}

TEST_CASE("simulator: prefix-aware policies see the events, bad options fail",
          "[sim][prefix]") {
  // Every policy runs the trace with the cache; the hits do not depend on
  // the policy on one P node.
  for (const char* policy : {"prefix_cost", "load_aware", "round_robin"}) {
    INFO(policy);
    const SimResult r = Run(HandMadeTrace(), true, policy);
    CHECK(r.prefix_hit_rate == Approx((1023.0 + 512) / 4096));
  }
  absl::StatusOr<std::vector<SimNodeSpec>> nodes =
      ParseClusterSpec("p:a100x1,d:a100x1");
  REQUIRE(nodes.ok());
  SimOptions o;
  o.prefix_cache = true;
  o.kv_event_delay_ms = -1;
  CHECK(Simulate(*nodes, HandMadeTrace(), o).status().code() ==
        absl::StatusCode::kInvalidArgument);
  o.kv_event_delay_ms = 0;
  o.hash_block_tokens = 0;
  CHECK(Simulate(*nodes, HandMadeTrace(), o).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flowkv
