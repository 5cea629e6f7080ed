// SPDX-License-Identifier: Apache-2.0
// The scheduler API: ClusterView (smoothing, staleness, directives, links),
// the policy registry (built-in and user policies), the fixed-role policies
// round_robin, least_loaded and kv_cost, what every policy skips, and Place
// not allocating. load_aware is load_aware_test.cc's.
#include "flowkv/scheduler.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/time/time.h"
#include "tests/support/scheduler_test_util.h"

// Counts heap allocations made by this thread while counting is on, to check
// that Place does not allocate.
namespace {
thread_local bool counting_allocations = false;
thread_local int64_t allocations = 0;
}  // namespace

void* operator new(std::size_t size) {
  if (counting_allocations) ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  if (counting_allocations) ++allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace flowkv {
namespace {
using test::kT0;
using test::Make;
using test::MakeCluster;
using test::Node;
using test::Options;
using test::OverloadPrefill;
using test::Report;

// --- ClusterView -------------------------------------------------------------

TEST_CASE("ClusterView smooths reports with an EWMA", "[scheduler]") {
  ClusterView cluster(Options(0.25));
  REQUIRE(cluster.AddNode(Node(1, NodeRole::kPrefill)).ok());
  Report(cluster, 1, {.queued_prefill_tokens = 1000, .kv_blocks_total = 100});
  CHECK(cluster.Find(1)->load.queued_prefill_tokens == 1000);  // first: as is
  Report(cluster, 1,
         {.queued_prefill_tokens = 0,
          .kv_blocks_used = 40,
          .kv_blocks_total = 200},
         kT0 + absl::Seconds(1));
  const NodeLoad& l = cluster.Find(1)->load;
  CHECK(l.queued_prefill_tokens == Approx(750));
  CHECK(l.kv_blocks_used == Approx(10));
  CHECK(l.kv_blocks_total == 200);  // capacity taken as reported
  CHECK(cluster.Find(1)->last_report == kT0 + absl::Seconds(1));
}

TEST_CASE("ClusterView takes the first report after staleness as is",
          "[scheduler]") {
  ClusterView cluster(Options(0.5, absl::Seconds(5)));
  REQUIRE(cluster.AddNode(Node(1, NodeRole::kPrefill)).ok());
  Report(cluster, 1, {.queued_prefill_tokens = 1000});
  Report(cluster, 1, {.queued_prefill_tokens = 10}, kT0 + absl::Seconds(60));
  CHECK(cluster.Find(1)->load.queued_prefill_tokens == 10);
}

TEST_CASE("ClusterView refuses unknown nodes and bad reports", "[scheduler]") {
  ClusterView cluster;
  REQUIRE(cluster.AddNode(Node(1, NodeRole::kPrefill)).ok());
  CHECK(cluster.ReportLoad(99, {}, kT0).code() == absl::StatusCode::kNotFound);
  CHECK(cluster.RemoveNode(99).code() == absl::StatusCode::kNotFound);
  CHECK(cluster.SetRole(99, NodeRole::kDecode, 3).code() ==
        absl::StatusCode::kNotFound);
  CHECK(cluster.Find(99) == nullptr);
  CHECK(cluster.AddNode(Node(1, NodeRole::kDecode)).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(cluster.ReportLoad(1, {.queued_prefill_tokens = -1}, kT0).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(cluster.ReportLoad(1, {.utilization = 1.5}, kT0).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(
      cluster.ReportLoad(1, {.kv_blocks_used = 11, .kv_blocks_total = 10}, kT0)
          .code() == absl::StatusCode::kInvalidArgument);
  NodeInfo bad = Node(2, NodeRole::kDecode);
  bad.block_tokens = 0;
  CHECK(cluster.AddNode(bad).code() == absl::StatusCode::kInvalidArgument);
  // A refused report changes nothing.
  CHECK(cluster.Find(1)->last_report == absl::InfinitePast());
}

TEST_CASE("ClusterView staleness and removal", "[scheduler]") {
  ClusterView cluster(Options(0.5, absl::Seconds(5)));
  REQUIRE(cluster.AddNode(Node(1, NodeRole::kPrefill)).ok());
  const NodeInfo& node = *cluster.Find(1);
  CHECK(cluster.IsUsable(node, kT0));  // never reported: fresh
  Report(cluster, 1, {});
  CHECK(cluster.IsUsable(node, kT0 + absl::Seconds(5)));
  CHECK_FALSE(cluster.IsUsable(node, kT0 + absl::Seconds(6)));
  REQUIRE(cluster.RemoveNode(1).ok());
  CHECK_FALSE(cluster.IsUsable(*cluster.Find(1), kT0));
  // Re-adding a removed node revives it.
  REQUIRE(cluster.AddNode(Node(1, NodeRole::kDecode)).ok());
  CHECK(cluster.Find(1)->available);
  CHECK(cluster.Find(1)->current_role == NodeRole::kDecode);
  CHECK(cluster.nodes().size() == 1);
}

TEST_CASE("ClusterView role directives count down", "[scheduler]") {
  ClusterView cluster;
  NodeInfo n = Node(1, NodeRole::kDecode);
  n.current_role = NodeRole::kHybrid;  // ignored: starts in its role
  REQUIRE(cluster.AddNode(n).ok());
  CHECK(cluster.Find(1)->current_role == NodeRole::kDecode);
  CHECK(cluster.SetRole(1, NodeRole::kPrefill, 0).code() ==
        absl::StatusCode::kInvalidArgument);
  REQUIRE(cluster.SetRole(1, NodeRole::kPrefill, 2).ok());
  CHECK(cluster.Find(1)->current_role == NodeRole::kPrefill);
  cluster.TickRoleCycles();
  CHECK(cluster.Find(1)->current_role == NodeRole::kPrefill);
  CHECK(cluster.Find(1)->role_cycles_left == 1);
  cluster.TickRoleCycles();
  CHECK(cluster.Find(1)->current_role == NodeRole::kDecode);
  CHECK(cluster.Find(1)->role_cycles_left == 0);
  cluster.TickRoleCycles();
  CHECK(cluster.Find(1)->current_role == NodeRole::kDecode);
  // The deployed role ends a directive at once.
  REQUIRE(cluster.SetRole(1, NodeRole::kHybrid, 5).ok());
  REQUIRE(cluster.SetRole(1, NodeRole::kDecode, 0).ok());
  CHECK(cluster.Find(1)->current_role == NodeRole::kDecode);
  CHECK(cluster.Find(1)->role_cycles_left == 0);
}

TEST_CASE("ClusterView links default and per pair", "[scheduler]") {
  LinkModel slow{
      .bandwidth_bytes_per_s = 1e9, .call_overhead_ms = 1, .fixed_ms = 10};
  ClusterView cluster;
  CHECK(cluster.Link(0, 1).bandwidth_bytes_per_s ==
        LinkModel{}.bandwidth_bytes_per_s);
  cluster.SetLink(0, 1, slow);
  CHECK(cluster.Link(0, 1).fixed_ms == 10);
  CHECK(cluster.Link(1, 0).fixed_ms == LinkModel{}.fixed_ms);  // directional
  CHECK(slow.TransferMs(1e9, 2) == Approx(10 + 2 + 1000));
}

// --- registry
// ------------------------------------------------------------------

TEST_CASE("Registry lists and creates the built-in policies", "[scheduler]") {
  std::vector<std::string> names = RegisteredSchedulers();
  for (const char* name :
       {"kv_cost", "least_loaded", "load_aware", "round_robin"}) {
    CHECK(std::count(names.begin(), names.end(), name) == 1);
    CHECK(Make(name)->name() == name);
  }
  CHECK(std::is_sorted(names.begin(), names.end()));
}

TEST_CASE("Registry: unknown name is NotFound listing the names",
          "[scheduler]") {
  auto s = CreateScheduler("no_such_policy", {});
  REQUIRE(s.status().code() == absl::StatusCode::kNotFound);
  CHECK(s.status().message().find("no_such_policy") != std::string::npos);
  CHECK(s.status().message().find("load_aware") != std::string::npos);
  CHECK(s.status().message().find("round_robin") != std::string::npos);
}

TEST_CASE("Registry: bad params are InvalidArgument", "[scheduler]") {
  auto unknown = CreateScheduler("load_aware", {.params = {{"bogus", 1}}});
  REQUIRE(unknown.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(unknown.status().message().find("bogus") != std::string::npos);
  CHECK(unknown.status().message().find("overload_score") != std::string::npos);
  CHECK(CreateScheduler("round_robin", {.params = {{"prefill_weight", 2}}})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(CreateScheduler("kv_cost", {.params = {{"prefill_weight", -1}}})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(CreateScheduler("load_aware", {.params = {{"overload_cycles", 1.5}}})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(CreateScheduler("load_aware",
                        {.params = {{"idle_score", 2}, {"overload_score", 1}}})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(CreateScheduler("kv_cost", {.params = {{"prefill_weight", 4}}}).ok());
}

// A user's policy: every request on the first usable hybrid node.
class FirstHybrid final : public Scheduler {
 public:
  std::string_view name() const override { return "test_first_hybrid"; }
  absl::StatusOr<Placement> Place(const RequestInfo&,
                                  const ClusterView& cluster,
                                  absl::Time now) override {
    for (const NodeInfo& node : cluster.nodes()) {
      if (node.current_role == NodeRole::kHybrid &&
          cluster.IsUsable(node, now)) {
        return Placement{.prefill_node = node.id, .decode_node = node.id};
      }
    }
    return absl::UnavailableError("no hybrid node");
  }
};

TEST_CASE("Registry: custom policy, duplicates, concurrency", "[scheduler]") {
  auto factory = [](const SchedulerOptions& options)
      -> absl::StatusOr<std::unique_ptr<Scheduler>> {
    if (!options.params.empty()) {
      return absl::InvalidArgumentError("test_first_hybrid takes no params");
    }
    return std::make_unique<FirstHybrid>();
  };
  REQUIRE(RegisterScheduler("test_first_hybrid", factory).ok());
  CHECK(RegisterScheduler("test_first_hybrid", factory).code() ==
        absl::StatusCode::kAlreadyExists);
  CHECK(RegisterScheduler("load_aware", factory).code() ==
        absl::StatusCode::kAlreadyExists);
  CHECK(RegisterScheduler("", factory).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(RegisterScheduler("test_null", nullptr).code() ==
        absl::StatusCode::kInvalidArgument);

  auto names = RegisteredSchedulers();
  CHECK(std::count(names.begin(), names.end(), "test_first_hybrid") == 1);
  auto mine = Make("test_first_hybrid");
  ClusterView cluster;
  REQUIRE(cluster.AddNode(Node(4, NodeRole::kPrefill)).ok());
  REQUIRE(cluster.AddNode(Node(5, NodeRole::kHybrid)).ok());
  auto where = mine->Place({.id = 1, .input_tokens = 10}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 5);
  CHECK(where->colocated());
  CHECK(CreateScheduler("test_first_hybrid", {.params = {{"x", 1}}})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);

  // Concurrent registration and creation: each name registers exactly once.
  std::atomic<int> registered{0};
  std::atomic<int> create_failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        if (RegisterScheduler("test_concurrent_" + std::to_string(i), factory)
                .ok()) {
          ++registered;
        }
        if (!CreateScheduler(t % 2 ? "load_aware" : "round_robin", {}).ok()) {
          ++create_failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(registered == 50);
  CHECK(create_failures == 0);
}

// --- round_robin
// -----------------------------------------------------------------

TEST_CASE("round_robin cycles prefill and decode nodes", "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 3);
  auto rr = Make("round_robin");
  std::vector<NodeId> ps, ds;
  for (int i = 0; i < 6; ++i) {
    auto where =
        rr->Place({.id = uint64_t(i), .input_tokens = 100}, cluster, kT0);
    REQUIRE(where.ok());
    ps.push_back(where->prefill_node);
    ds.push_back(where->decode_node);
  }
  CHECK(ps == std::vector<NodeId>{0, 1, 0, 1, 0, 1});
  CHECK(ds == std::vector<NodeId>{2, 3, 4, 2, 3, 4});
}

TEST_CASE("round_robin: hybrid nodes serve both phases, colocated",
          "[scheduler]") {
  ClusterView cluster;
  REQUIRE(cluster.AddNode(Node(0, NodeRole::kHybrid)).ok());
  REQUIRE(cluster.AddNode(Node(1, NodeRole::kHybrid)).ok());
  auto rr = Make("round_robin");
  for (NodeId expected : {0, 1, 0}) {
    auto where = rr->Place({.input_tokens = 100}, cluster, kT0);
    REQUIRE(where.ok());
    CHECK(where->prefill_node == expected);
    CHECK(where->colocated());
  }
  auto split = Make("round_robin", {.params = {{"colocate_hybrid", 0}}});
  REQUIRE(cluster.AddNode(Node(2, NodeRole::kDecode)).ok());
  std::set<NodeId> decode_nodes;
  for (int i = 0; i < 3; ++i) {
    auto where = split->Place({.input_tokens = 100}, cluster, kT0);
    REQUIRE(where.ok());
    decode_nodes.insert(where->decode_node);
  }
  CHECK(decode_nodes == std::set<NodeId>{0, 1, 2});
}

TEST_CASE("round_robin skips stale and removed nodes", "[scheduler]") {
  ClusterView cluster = MakeCluster(3, 1);
  const absl::Time later = kT0 + absl::Seconds(10);
  Report(cluster, 1, {}, later);  // only node 1 and 3 are fresh at `later`
  Report(cluster, 3, {}, later);
  auto rr = Make("round_robin");
  for (int i = 0; i < 3; ++i) {
    auto where = rr->Place({.input_tokens = 100}, cluster, later);
    REQUIRE(where.ok());
    CHECK(where->prefill_node == 1);
    CHECK(where->decode_node == 3);
  }
  REQUIRE(cluster.RemoveNode(3).ok());
  auto none = rr->Place({.id = 42, .input_tokens = 100}, cluster, later);
  REQUIRE(none.status().code() == absl::StatusCode::kUnavailable);
  CHECK(none.status().message().find("decode") != std::string::npos);
}

// --- least_loaded
// ----------------------------------------------------------------

TEST_CASE(
    "least_loaded picks the P with fewest queued tokens and the D "
    "with fewest requests",
    "[scheduler]") {
  ClusterView cluster = MakeCluster(3, 3);
  Report(cluster, 0, {.queued_prefill_tokens = 5000});
  Report(cluster, 1, {.queued_prefill_tokens = 200});
  Report(cluster, 2, {.queued_prefill_tokens = 3000});
  Report(cluster, 3, {.running_decode = 10, .waiting_decode = 0});
  Report(cluster, 4, {.running_decode = 4, .waiting_decode = 5});
  Report(cluster, 5, {.running_decode = 6, .waiting_decode = 0});
  auto ll = Make("least_loaded");
  auto where = ll->Place({.input_tokens = 100}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
  CHECK(where->decode_node == 5);
}

TEST_CASE("least_loaded rotates among equally loaded nodes", "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 2);
  auto ll = Make("least_loaded");
  std::set<NodeId> ps, ds;
  for (int i = 0; i < 4; ++i) {
    auto where = ll->Place({.input_tokens = 100}, cluster, kT0);
    REQUIRE(where.ok());
    ps.insert(where->prefill_node);
    ds.insert(where->decode_node);
  }
  CHECK(ps == std::set<NodeId>{0, 1});
  CHECK(ds == std::set<NodeId>{2, 3});
  // Ties alternate like round robin.
  NodeId last_p = 99, last_d = 99;
  for (int i = 0; i < 4; ++i) {
    auto where = ll->Place({.input_tokens = 100}, cluster, kT0);
    REQUIRE(where.ok());
    CHECK(where->prefill_node != last_p);
    CHECK(where->decode_node != last_d);
    last_p = where->prefill_node;
    last_d = where->decode_node;
  }
}

TEST_CASE("least_loaded skips stale nodes even when least loaded",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 1);
  const absl::Time later = kT0 + absl::Seconds(4);
  // Node 0 reported empty long ago; node 1 is busy but fresh.
  Report(cluster, 1, {.queued_prefill_tokens = 9000}, later);
  Report(cluster, 2, {}, later);
  auto where =
      Make("least_loaded")
          ->Place({.input_tokens = 10}, cluster, kT0 + absl::Seconds(7));
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
}

// --- kv_cost
// -----------------------------------------------------------------------

TEST_CASE("kv_cost weighs prefill blocks against decode blocks",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 2);
  // Node 0: 1600 queued tokens = 100 blocks, 0 used.
  // Node 1: 0 queued, 150 blocks used.
  Report(cluster, 0,
         {.queued_prefill_tokens = 1600, .kv_blocks_total = 10'000});
  Report(cluster, 1, {.kv_blocks_used = 150, .kv_blocks_total = 10'000});
  Report(cluster, 2, {.kv_blocks_used = 900, .kv_blocks_total = 10'000});
  Report(cluster, 3, {.kv_blocks_used = 300, .kv_blocks_total = 10'000});
  // w = 1: node 0 costs 100 + 1, node 1 costs 150 + 1 -> node 0.
  auto where = Make("kv_cost")->Place({.input_tokens = 16}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 0);
  CHECK(where->decode_node == 3);
  // w = 2: node 0 costs 202, node 1 costs 152 -> node 1.
  where = Make("kv_cost", {.params = {{"prefill_weight", 2}}})
              ->Place({.input_tokens = 16}, cluster, kT0);
  REQUIRE(where.ok());
  CHECK(where->prefill_node == 1);
}

TEST_CASE("kv_cost: ResourceExhausted when no decode node fits",
          "[scheduler]") {
  ClusterView cluster = MakeCluster(1, 2);
  Report(cluster, 1, {.kv_blocks_used = 9'990, .kv_blocks_total = 10'000});
  Report(cluster, 2, {.kv_blocks_used = 9'995, .kv_blocks_total = 10'000});
  auto where = Make("kv_cost")->Place(
      {.id = 3, .input_tokens = 1600, .expected_output_tokens = 16}, cluster,
      kT0);
  REQUIRE(where.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(where.status().message().find("node 1") != std::string::npos);
}

TEST_CASE("Fixed-role policies return empty rebalance plans", "[scheduler]") {
  ClusterView cluster = MakeCluster(2, 2);
  OverloadPrefill(cluster, kT0);
  for (const char* name : {"round_robin", "least_loaded", "kv_cost"}) {
    auto s = Make(name);
    for (int i = 0; i < 5; ++i) {
      RebalancePlan plan = s->Rebalance(cluster, kT0);
      CHECK(plan.directives.empty());
      CHECK(plan.scale == ScaleAdvice::kNone);
    }
  }
}

TEST_CASE("Every built-in policy skips stale and unavailable nodes",
          "[scheduler]") {
  for (const char* name :
       {"round_robin", "least_loaded", "kv_cost", "load_aware"}) {
    INFO(name);
    ClusterView cluster = MakeCluster(3, 3);
    const absl::Time later = kT0 + absl::Seconds(10);
    // Fresh: nodes 1 (P) and 5 (D), 4 is fresh but removed.
    Report(cluster, 1, {.queued_prefill_tokens = 50'000}, later);
    Report(cluster, 4, {}, later);
    Report(cluster, 5, {.running_decode = 100, .kv_blocks_total = 10'000},
           later);
    REQUIRE(cluster.RemoveNode(4).ok());
    auto s = Make(name);
    for (int i = 0; i < 4; ++i) {
      auto where = s->Place({.input_tokens = 500}, cluster, later);
      REQUIRE(where.ok());
      CHECK(where->prefill_node == 1);
      CHECK(where->decode_node == 5);
    }
  }
}

TEST_CASE("Place does not allocate on success", "[scheduler]") {
  // The counter sees allocations (the error path builds a message).
  {
    ClusterView empty;
    auto s = Make("load_aware");
    counting_allocations = true;
    allocations = 0;
    absl::StatusOr<Placement> where = s->Place({}, empty, kT0);
    counting_allocations = false;
    REQUIRE_FALSE(where.ok());
    REQUIRE(allocations > 0);
  }
  for (const char* name :
       {"round_robin", "least_loaded", "kv_cost", "load_aware"}) {
    INFO(name);
    ClusterView cluster = MakeCluster(8, 8);
    REQUIRE(cluster.AddNode(Node(16, NodeRole::kHybrid)).ok());
    cluster.SetLink(0, 9, {.bandwidth_bytes_per_s = 1e9});
    for (NodeId id = 0; id < 16; ++id) {
      Report(cluster, id,
             {.queued_prefill_tokens = 1000.0 * id,
              .running_decode = 16.0 - id,
              .kv_blocks_used = 100.0 * id,
              .kv_blocks_total = 10'000});
    }
    auto s = Make(name);
    int64_t counted = 0;
    bool all_ok = true;
    for (int i = 0; i < 100; ++i) {
      const RequestInfo request{.id = uint64_t(i),
                                .input_tokens = 100u + 97u * i,
                                .expected_output_tokens = 64};
      counting_allocations = true;
      allocations = 0;
      absl::StatusOr<Placement> where = s->Place(request, cluster, kT0);
      counted += allocations;
      counting_allocations = false;
      all_ok = all_ok && where.ok();
    }
    CHECK(all_ok);
    CHECK(counted == 0);
  }
}

}  // namespace
}  // namespace flowkv
