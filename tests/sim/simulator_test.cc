// SPDX-License-Identifier: Apache-2.0
// Tests for the cluster simulator: invariants of a run, determinism, the
// transfer model and the application of role directives.

#include "flowkv/sim/simulator.h"

#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/scheduler.h"
#include "flowkv/sim/cluster.h"
#include "flowkv/sim/workload.h"

namespace flowkv {
namespace {

std::vector<SimNodeSpec> Cluster(const std::string& spec) {
  absl::StatusOr<std::vector<SimNodeSpec>> nodes = ParseClusterSpec(spec);
  REQUIRE(nodes.ok());
  return *nodes;
}

std::vector<SimRequest> Workload(const std::string& spec, double rate,
                                 uint64_t n, uint64_t seed = 1) {
  absl::StatusOr<std::vector<SimRequest>> w = MakeWorkload(
      {.spec = spec, .rate = rate, .num_requests = n, .seed = seed});
  REQUIRE(w.ok());
  return *w;
}

SimOptions Opts(const std::string& policy,
                TransferMode transfer = TransferMode::kFlowKv) {
  SimOptions o;
  o.policy = policy;
  o.transfer = transfer;
  return o;
}

SimResult Run(const std::string& cluster, const std::vector<SimRequest>& reqs,
              SimOptions options = {}) {
  absl::StatusOr<SimResult> r = Simulate(Cluster(cluster), reqs, options);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *std::move(r);
}

// Places prefill on the first node whose current role serves prefill and
// decode on the last node whose current role serves decode; Rebalance
// switches node 1 to prefill for 2 cycles, once.
class SwitcherPolicy : public Scheduler {
 public:
  std::string_view name() const override { return "test_switcher"; }
  absl::StatusOr<Placement> Place(const RequestInfo&, const ClusterView& view,
                                  absl::Time) override {
    Placement p;
    bool have_p = false, have_d = false;
    for (const NodeInfo& n : view.nodes()) {
      if (!have_p && ServesPrefill(n.current_role)) {
        p.prefill_node = n.id;
        have_p = true;
      }
      if (ServesDecode(n.current_role)) {
        p.decode_node = n.id;
        have_d = true;
      }
    }
    if (!have_p || !have_d) return absl::UnavailableError("no node");
    return p;
  }
  RebalancePlan Rebalance(const ClusterView&, absl::Time) override {
    RebalancePlan plan;
    if (!switched_) {
      plan.directives.push_back(
          {.node = 1, .role = NodeRole::kPrefill, .cycles = 2});
      switched_ = true;
    }
    return plan;
  }

 private:
  bool switched_ = false;
};

// Refuses every request.
class RefusePolicy : public Scheduler {
 public:
  std::string_view name() const override { return "test_refuse"; }
  absl::StatusOr<Placement> Place(const RequestInfo&, const ClusterView&,
                                  absl::Time) override {
    return absl::UnavailableError("refused");
  }
};

void RegisterTestPolicies() {
  static const bool once = [] {
    (void)RegisterScheduler("test_switcher", [](const SchedulerOptions&) {
      return absl::StatusOr<std::unique_ptr<Scheduler>>(
          std::make_unique<SwitcherPolicy>());
    });
    (void)RegisterScheduler("test_refuse", [](const SchedulerOptions&) {
      return absl::StatusOr<std::unique_ptr<Scheduler>>(
          std::make_unique<RefusePolicy>());
    });
    return true;
  }();
  (void)once;
}

TEST_CASE("cluster specs parse and reject bad groups", "[sim]") {
  std::vector<SimNodeSpec> n = Cluster("p:l20x4,d:h20x4");
  REQUIRE(n.size() == 8);
  CHECK(n[0].role == NodeRole::kPrefill);
  CHECK(n[0].type.name == "l20");
  CHECK(n[7].role == NodeRole::kDecode);
  CHECK(n[7].type.name == "h20");
  CHECK(ClusterSpecString(n) == "p:l20x4,d:h20x4");
  CHECK(Cluster("hybrid:a100x2").size() == 2);
  CHECK(Cluster("p:h100").size() == 1);
  // Faster types are faster; H20 decodes faster than A100, prefills slower.
  const NodeType a100 = *FindNodeType("a100");
  const NodeType h20 = *FindNodeType("h20");
  const NodeType l20 = *FindNodeType("l20");
  CHECK(h20.cost.DecodeStepMs(32, 32000) < a100.cost.DecodeStepMs(32, 32000));
  CHECK(h20.cost.PrefillMs(8000) > a100.cost.PrefillMs(8000));
  CHECK(l20.cost.DecodeStepMs(32, 32000) > h20.cost.DecodeStepMs(32, 32000));
  CHECK(h20.kv_capacity_bytes > a100.kv_capacity_bytes);
  CHECK(l20.kv_capacity_bytes < a100.kv_capacity_bytes);
  for (const char* bad : {"", "p", "x:a100", "p:a100x0", "p:a100xz",
                          "p:a100x5000", "p:a100,", "p::a100"}) {
    INFO(bad);
    CHECK(ParseClusterSpec(bad).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  CHECK(ParseClusterSpec("p:v100").status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("every request completes once and tokens are conserved", "[sim]") {
  const std::vector<SimRequest> reqs = Workload("gov_report", 1.0, 120);
  for (const char* policy :
       {"round_robin", "least_loaded", "kv_cost", "load_aware"}) {
    for (const char* cluster : {"p:a100x1,d:a100x1", "p:a100x2,d:a100x2",
                                "hybrid:a100x2", "p:l20x2,d:h20x2"}) {
      INFO(policy << " on " << cluster);
      SimResult r = Run(cluster, reqs, Opts(policy));
      CHECK(r.completed == reqs.size());
      CHECK(r.rejected == 0);
      REQUIRE(r.requests_detail.size() == reqs.size());
      uint64_t in = 0, out = 0, prefill = 0, decode = 0;
      for (size_t i = 0; i < reqs.size(); ++i) {
        const RequestRecord& q = r.requests_detail[i];
        CHECK(q.completed);
        CHECK(q.id == reqs[i].id);
        CHECK(q.first_token_ms >= q.prefill_start_ms);
        CHECK(q.prefill_start_ms >= q.arrival_ms);
        CHECK(q.finish_ms >= q.first_token_ms);
        in += reqs[i].input_tokens;
        out += reqs[i].output_tokens;
      }
      for (const NodeRecord& n : r.nodes) {
        prefill += n.prefill_tokens;
        decode += n.decode_tokens;
        CHECK(n.final_kv_blocks_used == 0);
      }
      CHECK(r.input_tokens == in);
      CHECK(r.output_tokens == out);
      CHECK(prefill == in);
      // The prefill makes the first token; decode steps make the rest.
      CHECK(decode == out - reqs.size());
      // Exactly the requests placed on two nodes move their KV.
      const uint64_t split =
          std::count_if(r.requests_detail.begin(), r.requests_detail.end(),
                        [](const RequestRecord& q) {
                          return q.prefill_node != q.decode_node;
                        });
      CHECK(r.transfers == split);
      if (std::string(cluster) == "hybrid:a100x2") CHECK(r.transfers == 0);
      if (std::string(policy) != "load_aware" &&
          std::string(cluster) != "hybrid:a100x2") {
        CHECK(r.transfers == reqs.size());
      }
    }
  }
}

TEST_CASE("chunked prefill completes every request and conserves tokens",
          "[sim]") {
  const std::vector<SimRequest> reqs = Workload("qmsum", 0.8, 100, 4);
  uint64_t in = 0, out = 0;
  for (const SimRequest& q : reqs) {
    in += q.input_tokens;
    out += q.output_tokens;
  }
  for (const char* cluster : {"hybrid:a100x2", "p:a100x1,d:a100x1"}) {
    INFO(cluster);
    SimOptions o = Opts("least_loaded");
    o.batching = NodeBatching::kChunkedPrefill;
    const SimResult r = Run(cluster, reqs, o);
    CHECK(r.completed == reqs.size());
    uint64_t prefill = 0, decode = 0, prefill_steps = 0;
    for (const NodeRecord& n : r.nodes) {
      prefill += n.prefill_tokens;
      decode += n.decode_tokens;
      prefill_steps += n.prefill_steps;
      CHECK(n.final_kv_blocks_used == 0);
    }
    CHECK(prefill == in);
    CHECK(decode == out - reqs.size());
    // ~14k-token prompts in 2048-token chunks: several steps each.
    CHECK(prefill_steps > 5 * reqs.size());
    // Chunking lowers TPOT against prefill-first on colocated nodes.
    if (std::string(cluster) == "hybrid:a100x2") {
      const SimResult pf = Run(cluster, reqs, Opts("least_loaded"));
      CHECK(r.tpot_ms.mean < pf.tpot_ms.mean);
    }
  }
  SimOptions bad;
  bad.batching = NodeBatching::kChunkedPrefill;
  bad.chunk_tokens = 100;
  CHECK(Simulate(Cluster("hybrid:a100x1"), reqs, bad).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(ParseNodeBatching("chunked").value() == NodeBatching::kChunkedPrefill);
  CHECK(!ParseNodeBatching("eager").ok());
}

TEST_CASE("the same seed gives the same result", "[sim]") {
  const std::vector<SimRequest> a = Workload("shift:5", 4.0, 150, 42);
  const std::vector<SimRequest> b = Workload("shift:5", 4.0, 150, 42);
  REQUIRE(a == b);
  const SimResult ra = Run("p:a100x2,d:a100x2", a);
  const SimResult rb = Run("p:a100x2,d:a100x2", b);
  CHECK(SimResultJson(ra) == SimResultJson(rb));
  CHECK(RequestsCsv(ra) == RequestsCsv(rb));
  const SimResult rc =
      Run("p:a100x2,d:a100x2", Workload("shift:5", 4.0, 150, 43));
  CHECK(SimResultJson(ra) != SimResultJson(rc));
}

TEST_CASE("a higher rate gives no lower latency", "[sim]") {
  for (const char* cluster : {"p:a100x1,d:a100x1", "hybrid:a100x2"}) {
    double previous = 0;
    for (double rate : {0.25, 0.5, 1.0, 2.0}) {
      INFO(cluster << " rate " << rate);
      const SimResult r = Run(cluster, Workload("multi_news", rate, 150, 3),
                              Opts("least_loaded"));
      CHECK(r.completed == 150);
      CHECK(r.e2e_ms.mean >= previous * 0.99);
      previous = r.e2e_ms.mean;
    }
  }
}

TEST_CASE("Little's law holds: in-system = throughput x latency", "[sim]") {
  for (double rate : {0.5, 2.0}) {
    INFO("rate " << rate);
    const SimResult r =
        Run("p:a100x2,d:a100x2", Workload("gov_report", rate, 200, 5));
    REQUIRE(r.completed == 200);
    CHECK(r.mean_in_system ==
          Approx(r.request_rate * r.e2e_ms.mean / 1000).epsilon(0.02));
    CHECK(r.mean_in_system > 0);
  }
}

TEST_CASE("blockwise transfer makes more calls and takes longer", "[sim]") {
  const std::vector<SimRequest> one = {
      {.id = 0, .arrival_ms = 0, .input_tokens = 8000, .output_tokens = 4}};
  const SimResult f =
      Run("p:a100x1,d:a100x1", one, Opts("round_robin", TransferMode::kFlowKv));
  const SimResult b = Run("p:a100x1,d:a100x1", one,
                          Opts("round_robin", TransferMode::kBlockwise));
  const SimResult l = Run("p:a100x1,d:a100x1", one,
                          Opts("round_robin", TransferMode::kLayerMajor));
  CHECK(f.transfer_calls == 1);
  // 2 x 32 layers x 500 blocks.
  CHECK(b.transfer_calls == 32000);
  CHECK(l.transfer_calls == 64);
  CHECK(b.transfer_calls > f.transfer_calls);
  CHECK(b.transfer_ms.mean > f.transfer_ms.mean);
  CHECK(f.transfer_bytes == 500ull * 16 * 128 * 1024);
  // docs/design.md's calibration: 8000 tokens in about 0.0447 s.
  CHECK(f.transfer_ms.mean == Approx(44.7).epsilon(0.05));

  absl::StatusOr<TransferEstimate> e =
      EstimateTransfer(8000, TransferMode::kFlowKv, SimOptions{}.model, {});
  REQUIRE(e.ok());
  CHECK(e->calls == 1);
  CHECK(e->ms == Approx(f.transfer_ms.mean));
  CHECK(ParseTransferMode("blockwise").value() == TransferMode::kBlockwise);
  CHECK(ParseTransferMode("bogus").status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("fragmented KV lists cost more flowkv calls", "[sim]") {
  // Two P nodes feed one small L20 decode node: prompts wait on the P nodes
  // for decode memory and are freed out of order, so later prompts get
  // split lists and need more than one call.
  const std::vector<SimRequest> reqs = Workload("synthetic:6000:1000", 4, 200);
  const SimResult f = Run("p:a100x2,d:l20x1", reqs, Opts("round_robin"));
  REQUIRE(f.completed == 200);
  CHECK(f.mean_src_runs > 1.0);
  CHECK(f.transfer_calls > f.transfers);
  // Block-wise calls do not depend on runs: 2 x 32 x 375 blocks each.
  const SimResult b = Run("p:a100x2,d:l20x1", reqs,
                          Opts("round_robin", TransferMode::kBlockwise));
  CHECK(b.transfer_calls == 200ull * 64 * 375);
  CHECK(b.transfer_ms.mean > f.transfer_ms.mean);
}

TEST_CASE("role directives are applied and counted", "[sim]") {
  RegisterTestPolicies();
  // Node 0 prefill, node 1 decode; at t=1 s node 1 becomes a prefill node
  // for 2 cycles, so for a while nothing serves decode: placements wait.
  const SimResult r =
      Run("p:a100x1,d:a100x1", Workload("synthetic:500:20", 5.0, 60, 2),
          Opts("test_switcher"));
  CHECK(r.completed == 60);
  // Switched to prefill, then back to decode after 2 cycles.
  CHECK(r.role_switches == 2);
  CHECK(r.nodes[1].role_switches == 2);
  CHECK(r.place_retries > 0);
  CHECK(r.role_violations == 0);
}

TEST_CASE("requests nobody places are rejected, not waited on forever",
          "[sim]") {
  RegisterTestPolicies();
  const SimResult r =
      Run("p:a100x1,d:a100x1", Workload("synthetic:100:10", 1.0, 10),
          Opts("test_refuse"));
  CHECK(r.completed == 0);
  CHECK(r.rejected == 10);
  // A prompt larger than the node's KV capacity is rejected too.
  const SimResult big = Run(
      "p:l20x1,d:l20x1",
      {{.id = 0, .arrival_ms = 0, .input_tokens = 4000000, .output_tokens = 2}},
      Opts("round_robin"));
  CHECK(big.rejected == 1);
}

TEST_CASE("bad simulator inputs are errors", "[sim]") {
  const std::vector<SimRequest> unsorted = {
      {.id = 0, .arrival_ms = 5, .input_tokens = 10, .output_tokens = 2},
      {.id = 1, .arrival_ms = 1, .input_tokens = 10, .output_tokens = 2}};
  CHECK(Simulate(Cluster("p:a100x1,d:a100x1"), unsorted, {}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(Simulate({}, Workload("synthetic:10:2", 1, 2), {}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(Simulate(Cluster("p:a100x1,d:a100x1"), Workload("synthetic:10:2", 1, 2),
                 Opts("no_such_policy"))
            .status()
            .code() == absl::StatusCode::kNotFound);
  const std::vector<SimRequest> empty_req = {
      {.id = 0, .arrival_ms = 0, .input_tokens = 0, .output_tokens = 2}};
  CHECK(Simulate(Cluster("p:a100x1,d:a100x1"), empty_req, {}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flowkv
