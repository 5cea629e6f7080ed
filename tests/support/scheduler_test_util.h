// SPDX-License-Identifier: Apache-2.0
// Shared setup of the scheduler tests (scheduler_test.cc,
// load_aware_test.cc): a time origin, ClusterView options, nodes, a cluster
// of p prefill and d decode nodes, policy creation, load reports and an
// overloaded prefill side.

#ifndef FLOWKV_TESTS_SUPPORT_SCHEDULER_TEST_UTIL_H_
#define FLOWKV_TESTS_SUPPORT_SCHEDULER_TEST_UTIL_H_

#include <memory>
#include <string>

#include <catch2/catch.hpp>

#include "absl/time/time.h"
#include "flowkv/scheduler.h"

namespace flowkv::test {

inline const absl::Time kT0 = absl::FromUnixSeconds(1'000'000);

inline ClusterView::Options Options(
    double smoothing, absl::Duration stale_after = absl::Seconds(5)) {
  ClusterView::Options options;
  options.smoothing = smoothing;
  options.stale_after = stale_after;
  return options;
}

inline NodeInfo Node(NodeId id, NodeRole role) {
  NodeInfo node;
  node.id = id;
  node.role = role;
  return node;
}

// p prefill nodes (ids 0..p-1) then d decode nodes (ids p..p+d-1), all
// reported idle at kT0 with 10,000 KV blocks. No smoothing, so each report
// sets the load.
inline ClusterView MakeCluster(int p, int d) {
  ClusterView cluster(Options(1.0));
  for (int i = 0; i < p + d; ++i) {
    REQUIRE(
        cluster.AddNode(Node(i, i < p ? NodeRole::kPrefill : NodeRole::kDecode))
            .ok());
    REQUIRE(cluster.ReportLoad(i, {.kv_blocks_total = 10'000}, kT0).ok());
  }
  return cluster;
}

inline std::unique_ptr<Scheduler> Make(const std::string& name,
                                       SchedulerOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Scheduler>> s = CreateScheduler(name, options);
  REQUIRE(s.ok());
  REQUIRE((*s)->name() == name);
  return std::move(*s);
}

inline void Report(ClusterView& cluster, NodeId id, const NodeLoad& load,
                   absl::Time now = kT0) {
  REQUIRE(cluster.ReportLoad(id, load, now).ok());
}

// Loads the prefill side (nodes 0, 1) far beyond its target, leaves decode
// idle.
inline void OverloadPrefill(ClusterView& cluster, absl::Time now) {
  for (NodeId id : {0, 1}) {
    Report(cluster, id, {.queued_prefill_tokens = 40'000}, now);
  }
  for (NodeId id : {2, 3}) {
    Report(cluster, id, {.running_decode = 1, .kv_blocks_total = 10'000}, now);
  }
}

}  // namespace flowkv::test

#endif  // FLOWKV_TESTS_SUPPORT_SCHEDULER_TEST_UTIL_H_
