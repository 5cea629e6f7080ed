// SPDX-License-Identifier: Apache-2.0
// Two hosts on one machine: network namespaces joined by a veth pair, each
// with its own address (10.213.0.1/30 and 10.213.0.2/30, visible only in
// those namespaces). An engine runs in the first (this test binary again,
// running a hidden test case, through `ip netns exec`: UCX finds its
// devices in /sys, which only `ip netns exec` remounts for the namespace),
// a transfer_peer in the second, both on UCX tcp over their veth end. Checked:
// byte-exact transfers; the same under netem delay and loss where the
// kernel has netem; the link taken down mid-transfer fails the peer within
// its bound, and once the link is back a new connection moves bytes
// byte-exact again.
//
// Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): otherwise, or when
// namespaces cannot be created, it prints SKIP_NETNS and its reason (CTest
// reports the test as skipped). The namespaces are deleted at the end, also
// when a check fails.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/engine_pair.h"
#include "tests/support/kv_test_util.h"
#include "tests/support/peer_process.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv {
namespace {

using testing::kPeerFailureTimeout;
using testing::PeerProcess;
using testing::PeerProcessOptions;
using testing::Replies;
using testing::WriteByteExact;

constexpr uint64_t kBytes = 32 << 20;

// Runs a shell command; returns its exit status and, in `*output`, what it
// wrote to stdout and stderr.
int Shell(const std::string& command, std::string* output = nullptr) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string text;
  char buffer[512];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) text += buffer;
  const int status = pclose(pipe);
  if (output != nullptr) *output = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Two namespaces joined by a veth pair, names unique to this process;
// deleted (with the veth pair) on destruction.
class TwoHosts {
 public:
  TwoHosts()
      : ns_a_(absl::StrCat("flowkv-a-", getpid())),
        ns_b_(absl::StrCat("flowkv-b-", getpid())),
        dev_a_(absl::StrCat("fkva", getpid() % 100000)),
        dev_b_(absl::StrCat("fkvb", getpid() % 100000)) {}
  ~TwoHosts() {
    Shell("ip netns del " + ns_a_);
    Shell("ip netns del " + ns_b_);
  }

  // Creates everything; on failure returns why.
  std::string SetUp() {
    std::string out;
    if (Shell("ip netns add " + ns_a_, &out) != 0) return out;
    if (Shell("ip netns add " + ns_b_, &out) != 0) return out;
    const std::vector<std::string> steps = {
        "ip link add " + dev_a_ + " type veth peer name " + dev_b_,
        "ip link set " + dev_a_ + " netns " + ns_a_,
        "ip link set " + dev_b_ + " netns " + ns_b_,
        "ip -n " + ns_a_ + " addr add 10.213.0.1/30 dev " + dev_a_,
        "ip -n " + ns_b_ + " addr add 10.213.0.2/30 dev " + dev_b_,
        "ip -n " + ns_a_ + " link set lo up",
        "ip -n " + ns_b_ + " link set lo up",
        "ip -n " + ns_a_ + " link set " + dev_a_ + " up",
        "ip -n " + ns_b_ + " link set " + dev_b_ + " up",
    };
    for (const std::string& step : steps) {
      if (Shell(step, &out) != 0) return step + ": " + out;
    }
    return "";
  }

  // In namespace a, on its veth end.
  std::string InA(const std::string& command) const {
    return "ip netns exec " + ns_a_ + " " + command;
  }
  const std::string& ns_a() const { return ns_a_; }
  const std::string& ns_b() const { return ns_b_; }
  const std::string& dev_a() const { return dev_a_; }
  const std::string& dev_b() const { return dev_b_; }

 private:
  std::string ns_a_;
  std::string ns_b_;
  std::string dev_a_;
  std::string dev_b_;
};

// The engine side, in namespace a: FLOWKV_NETNS_PEER is the peer's
// address, FLOWKV_NETNS_DEVICE the veth end. Writes "done" to the parent
// when it got to the end.
TEST_CASE("netns engine child", "[.netns_child]") {
  const char* address = std::getenv("FLOWKV_NETNS_PEER");
  const char* device = std::getenv("FLOWKV_NETNS_DEVICE");
  if (address == nullptr || device == nullptr) return;
  TransferEngineOptions options;
  options.name = "netns_test";
  options.cluster_token = "secret";
  options.peer_failure_timeout = kPeerFailureTimeout;
  options.connect_timeout = 2 * kPeerFailureTimeout;
  options.max_window_bytes = 256 << 10;
  options.ucx_config = {{"TLS", "tcp"}, {"NET_DEVICES", device}};
  auto engine = testing::MakeEngine(options);
  auto local = engine->AllocateMemory(kBytes);
  REQUIRE(local.ok());
  Replies replies(engine.get());
  auto peer = engine->Connect(address);
  INFO(peer.status().ToString());
  REQUIRE(peer.ok());
  WriteByteExact(*engine, replies, *peer, *local, 1);

  // Delay and loss, where the kernel has netem.
  std::string netem;
  if (Shell(absl::StrCat("tc qdisc add dev ", device,
                         " root netem delay 5ms 1ms loss 1%"),
            &netem) == 0) {
    WriteByteExact(*engine, replies, *peer, *local, 2);
    WriteByteExact(*engine, replies, *peer, *local, 3);
    CHECK(Shell(absl::StrCat("tc qdisc del dev ", device, " root")) == 0);
    std::printf("netns_test: 2 transfers byte-exact under netem\n");
  } else {
    std::printf(
        "netns_test: netem is not available here (%s); the delay and loss "
        "part is skipped\n",
        netem.c_str());
  }

  // The link goes down under a transfer: the transfer misses its deadline,
  // its fence cannot complete, and the peer is failed within the bound.
  const TransferOp whole{local->id, 0, engine->GetPeer(*peer)->regions[0].id, 0,
                         kBytes};
  TransferOptions bounded;
  bounded.timeout = kPeerFailureTimeout;
  bounded.notification = "across the cut";
  bounded.acknowledged = true;
  TransferHandle cut = engine->Write(*peer, {&whole, 1}, bounded);
  while (cut.state() == TransferState::kPending) std::this_thread::yield();
  REQUIRE(Shell(absl::StrCat("ip link set ", device, " down")) == 0);
  const absl::Time down = absl::Now();
  const absl::Duration bound =
      bounded.timeout.value() + 2 * kPeerFailureTimeout;
  REQUIRE(cut.Wait(bound));
  INFO(cut.status().ToString());
  // Unless it won the race with the cut, it failed.
  const bool won = cut.status().ok();
  if (!won) {
    CHECK((cut.status().code() == absl::StatusCode::kDeadlineExceeded ||
           cut.status().code() == absl::StatusCode::kUnavailable));
    const absl::Time deadline = down + bound;
    while (engine->GetPeer(*peer)->connected && absl::Now() < deadline) {
      std::this_thread::yield();
    }
    CHECK(!engine->GetPeer(*peer)->connected);
    std::printf("netns_test: link down -> transfer %s, peer failed after %s\n",
                cut.status().ToString().c_str(),
                absl::FormatDuration(absl::Now() - down).c_str());
  }

  // Back up: a new connection, byte-exact again.
  REQUIRE(Shell(absl::StrCat("ip link set ", device, " up")) == 0);
  if (won) CHECK(engine->Disconnect(*peer).ok());
  auto again = engine->Connect(address);
  INFO(again.status().ToString());
  REQUIRE(again.ok());
  CHECK(*again != *peer);
  WriteByteExact(*engine, replies, *again, *local, 4);
  WriteByteExact(*engine, replies, *again, *local, 5);
  std::printf("netns_test: reconnected after the link came back, byte-exact\n");
  testing::WriteParentLine("done");
}

TEST_CASE("Two hosts in network namespaces: transfers, netem, link down",
          "[netns][process]") {
  if (geteuid() != 0) {
    std::printf("SKIP_NETNS: needs root for network namespaces\n");
    return;
  }
  TwoHosts hosts;
  const std::string failed = hosts.SetUp();
  if (!failed.empty()) {
    std::printf("SKIP_NETNS: cannot create network namespaces: %s\n",
                failed.c_str());
    return;
  }
  PeerProcessOptions peer_options;
  peer_options.token = "secret";
  peer_options.pool_bytes = kBytes;
  peer_options.listen = "10.213.0.2:0";
  peer_options.net_devices = hosts.dev_b();
  peer_options.prefix = {"ip", "netns", "exec", hosts.ns_b()};
  PeerProcess process(peer_options);
  INFO("peer listens on " << process.address());
  testing::ChildProcess engine_side(
      "netns engine child",
      {"FLOWKV_NETNS_PEER=" + process.address(),
       "FLOWKV_NETNS_DEVICE=" + hosts.dev_a(), "UCX_TLS=tcp"},
      {"ip", "netns", "exec", hosts.ns_a()});
  // Its steps: 5 transfers and 2 connections (each well inside the
  // failure timeout on a veth), the cut (within its bound).
  const absl::Duration bound = 10 * kPeerFailureTimeout;
  CHECK(engine_side.ReadLine(bound) == "done");
  CHECK(engine_side.WaitForExit() == 0);
}

}  // namespace
}  // namespace flowkv
