// SPDX-License-Identifier: Apache-2.0
// flowkv-cluster --etcd end to end: the real executable, a router and four
// node processes on loopback, and a real etcd (Debian etcd-server) on a free
// loopback port with a temporary data directory, stopped after each case.
// Each node registers its role and engine address with a lease; the router
// joins only registered nodes. A small cluster serves every request exactly
// and its entries are gone after it exits; a SIGKILLed node's entry
// disappears when its lease expires (the router reports it); a cluster name
// that has live members, an unreachable etcd and a bad name are refused
// before any node starts. Cases print SKIP_NO_ETCD without /usr/bin/etcd.
//
// The tool bounds its own waits (node start-up 60 s, a killed node's lease
// 2 x ttl + 5 s); the test waits for the process to exit, and on etcd with
// bounds derived from the lease ttl it sets (no sleeps).

#include <cstdio>
#include <iostream>
#include <string>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/cluster_run.h"
#include "tests/support/etcd_process.h"
#include "tests/support/wait_until.h"
#include "tools/cluster/etcd/etcd_client.h"
#include "tools/cluster/etcd/etcd_membership.h"
#include "tools/cluster/etcd/etcd_registration.h"

namespace flowkv::cluster {
namespace {

using flowkv::testing::EtcdInstalled;
using flowkv::testing::EtcdProcess;
using flowkv::testing::WaitUntil;

constexpr int kTtlMs = 2000;  // etcd's smallest lease (1.5 election timeouts)

bool SkipWithoutEtcd() {
  if (EtcdInstalled()) return false;
  std::cout << "SKIP_NO_ETCD: " << flowkv::testing::kEtcdBinary
            << " not installed\n";
  return true;
}

using Run = flowkv::testing::ClusterRun;
using flowkv::testing::JsonField;

// The small model and workload of cluster_run_test, with --etcd.
Run RunCluster(const std::string& name, const std::string& endpoint,
               const std::string& cluster, std::vector<std::string> extra) {
  const std::string json_path = "/tmp/flowkv_cluster_etcd_test_" +
                                std::to_string(getpid()) + "_" + name + ".json";
  std::vector<std::string> args = {FLOWKV_CLUSTER_BIN,
                                   "--prefill=2",
                                   "--decode=2",
                                   "--requests=30",
                                   "--rate=15",
                                   "--workload=synthetic:120:12",
                                   "--layers=2",
                                   "--d_model=64",
                                   "--heads=4",
                                   "--kv_heads=2",
                                   "--max_context=256",
                                   "--blocks_per_node=256",
                                   "--calibrate=false",
                                   "--etcd=" + endpoint,
                                   "--cluster_name=" + cluster,
                                   "--etcd_ttl_ms=" + std::to_string(kTtlMs),
                                   "--json=" + json_path};
  args.insert(args.end(), extra.begin(), extra.end());
  return flowkv::testing::RunClusterProcess(std::move(args), json_path);
}

std::unique_ptr<EtcdClient> Connect(const std::string& endpoint) {
  auto client = EtcdClient::Create({.endpoint = endpoint});
  REQUIRE(client.ok());
  return std::move(*client);
}

// Whether the cluster has no entries left in etcd.
bool Empty(EtcdClient& etcd, const std::string& cluster) {
  auto members = ListMembers(etcd, "/flowkv/" + cluster);
  return members.ok() && members->empty();
}

// A lease etcd may have granted longer than asked, plus its expiry sweep.
const absl::Duration kExpiryBound = absl::Milliseconds(2 * kTtlMs + 5000);

TEST_CASE(
    "etcd membership: a small cluster registers in etcd and serves exactly",
    "[cluster][etcd]") {
  if (SkipWithoutEtcd()) return;
  EtcdProcess etcd_server;
  const Run run = RunCluster("exact", etcd_server.endpoint(), "exact",
                             {"--policy=least_loaded"});
  REQUIRE(run.exit_code == 0);
  CHECK(JsonField(run.json, "etcd_members") == "4");
  CHECK(JsonField(run.json, "etcd_lost_nodes") == "[]");
  CHECK(JsonField(run.json, "requests_finished") == "30");
  CHECK(JsonField(run.json, "requests_failed") == "0");
  CHECK(JsonField(run.json, "exact") == "true");
  CHECK(std::stoull(JsonField(run.json, "bytes_moved")) > 0);
  // The nodes revoked their leases on the way out (or they expire).
  auto etcd = Connect(etcd_server.endpoint());
  CHECK(WaitUntil([&] { return Empty(*etcd, "exact"); }, kExpiryBound));
}

TEST_CASE(
    "etcd membership: a SIGKILLed node's entry disappears when its lease "
    "expires",
    "[cluster][etcd]") {
  if (SkipWithoutEtcd()) return;
  EtcdProcess etcd_server;
  // Nodes 0, 1 prefill; 2, 3 decode. The router waits (bounded) until the
  // killed node's entry is gone and reports it.
  const Run run =
      RunCluster("kill", etcd_server.endpoint(), "kill",
                 {"--policy=round_robin", "--kill_node=2", "--kill_after=6"});
  REQUIRE(run.exit_code == 0);
  CHECK(JsonField(run.json, "killed_nodes") == "[2]");
  CHECK(JsonField(run.json, "etcd_members") == "4");
  CHECK(JsonField(run.json, "etcd_lost_nodes") == "[2]");
  CHECK(JsonField(run.json, "requests_finished") == "30");
  CHECK(JsonField(run.json, "exact") == "true");
  auto etcd = Connect(etcd_server.endpoint());
  CHECK(WaitUntil([&] { return Empty(*etcd, "kill"); }, kExpiryBound));
}

TEST_CASE(
    "etcd membership: a cluster name with live members is refused untouched",
    "[cluster][etcd]") {
  if (SkipWithoutEtcd()) return;
  EtcdProcess etcd_server;
  auto etcd = Connect(etcd_server.endpoint());
  // Another router's node.
  auto other = EtcdRegistration::Create(
      etcd.get(), "/flowkv/busy", NodeMemberName(0),
      EncodeNodeMetadata({.role = "prefill", .address = "127.0.0.1:9"}),
      absl::Milliseconds(kTtlMs));
  REQUIRE(other.ok());
  const Run run = RunCluster("busy", etcd_server.endpoint(), "busy", {});
  CHECK(run.exit_code == 1);
  CHECK(run.json.empty());
  auto members = ListMembers(*etcd, "/flowkv/busy");
  REQUIRE(members.ok());
  REQUIRE(members->size() == 1);
  CHECK(members->begin()->first == NodeMemberName(0));
  CHECK((*other)->lost().ok());
}

TEST_CASE(
    "etcd membership: an unreachable etcd or a bad cluster name fails cleanly",
    "[cluster][etcd]") {
  if (SkipWithoutEtcd()) return;
  const std::string nobody =
      "http://127.0.0.1:" + std::to_string(flowkv::testing::FreeLoopbackPort());
  CHECK(RunCluster("unreachable", nobody, "x", {}).exit_code == 1);
  EtcdProcess etcd_server;
  for (const std::string& name : {std::string("a/b"), std::string("")}) {
    CHECK(RunCluster("badname", etcd_server.endpoint(), name, {}).exit_code ==
          1);
  }
  CHECK(RunCluster("badurl", "ftp://127.0.0.1:1", "x", {}).exit_code == 1);
  CHECK(RunCluster("badttl", etcd_server.endpoint(), "x", {"--etcd_ttl_ms=0"})
            .exit_code == 1);
}

TEST_CASE("node metadata and names: round trips and malformed input",
          "[cluster][etcd]") {
  const NodeMetadata m{.role = "decode", .address = "127.0.0.1:4242"};
  auto back = DecodeNodeMetadata(EncodeNodeMetadata(m));
  REQUIRE(back.ok());
  CHECK(back->role == "decode");
  CHECK(back->address == "127.0.0.1:4242");
  for (const std::string& bad : std::vector<std::string>{
           "", "decode", "\n127.0.0.1:1", "decode\n",
           std::string("de\0c\nx", 6), "decode\n127.0.0.1:1\nextra"}) {
    CHECK_FALSE(DecodeNodeMetadata(bad).ok());
  }
  CHECK(*ClusterPrefix("c1") == "/flowkv/c1");
  CHECK_FALSE(ClusterPrefix("").ok());
  CHECK_FALSE(ClusterPrefix("a/b").ok());
  CHECK_FALSE(ClusterPrefix("a\nb").ok());
  CHECK_FALSE(ClusterPrefix(std::string(129, 'a')).ok());
  CHECK(NodeMemberName(7) == "node-7");
}

}  // namespace
}  // namespace flowkv::cluster
