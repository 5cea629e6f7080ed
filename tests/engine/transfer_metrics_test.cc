// SPDX-License-Identifier: Apache-2.0
// TransferEngine::Metrics() and TransferEngineOptions::on_transfer_timing,
// without Prometheus (the core's counters are tested where the optional
// component is not built): two engines in one process run a known workload
// (tests/support/metrics_workload.h) and the counters must say exactly
// what it did; every transfer's timing must be complete and in order.

#include "flowkv/transfer_metrics.h"

#include <algorithm>
#include <mutex>
#include <numeric>
#include <signal.h>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/transfer_engine.h"
#include "tests/support/engine_pair.h"
#include "tests/support/metrics_workload.h"
#include "tests/support/peer_process.h"
#include "tests/support/wait_until.h"

namespace flowkv {
namespace {

using flowkv::testing::MakePoolPair;
using flowkv::testing::PoolPair;
using flowkv::testing::RunKnownWorkload;
using flowkv::testing::TestEngineOptions;
using flowkv::testing::WorkloadSenderOptions;
using W = flowkv::testing::WorkloadExpectation;

uint64_t Sum(const LatencyHistogram& h) {
  return std::accumulate(h.buckets.begin(), h.buckets.end(), uint64_t{0});
}

TEST_CASE("size classes cut at their bounds", "[transfer_metrics]") {
  CHECK(TransferSizeClass(0) == 0);
  CHECK(TransferSizeClass(64 << 10) == 0);
  CHECK(TransferSizeClass((64 << 10) + 1) == 1);
  CHECK(TransferSizeClass(1 << 20) == 1);
  CHECK(TransferSizeClass(uint64_t{256} << 20) == 3);
  CHECK(TransferSizeClass((uint64_t{256} << 20) + 1) == 4);
  CHECK(TransferSizeClass(UINT64_MAX) == kNumTransferSizeClasses - 1);
  CHECK(std::string(TransferSizeClassName(4)) == "inf");
  CHECK(std::string(TransferSizeClassName(99)) == "?");
}

TEST_CASE("a fresh engine's metrics are zero", "[transfer_metrics]") {
  auto engine = flowkv::testing::MakeEngine("fresh");
  const TransferEngineMetrics m = engine->Metrics();
  CHECK(m.transfers_started == 0);
  CHECK(m.transfers_finished.empty());
  CHECK(m.windows_posted == 0);
  CHECK(m.peers.empty());
  for (const LatencyHistogram& h : m.latency) CHECK(h.count == 0);
}

TEST_CASE("metrics count a known workload exactly", "[transfer_metrics]") {
  PoolPair pair;
  MakePoolPair(flowkv::testing::kWorkloadPoolBytes, WorkloadSenderOptions(),
               TestEngineOptions("b", "cluster-secret"), &pair);
  RunKnownWorkload(&pair);

  const TransferEngineMetrics m = pair.a->Metrics();
  CHECK(m.transfers_started == W::kStarted);
  CHECK(m.transfers_finished.size() == 3);
  CHECK(m.transfers_finished.at(absl::StatusCode::kOk) == W::kOk);
  CHECK(m.transfers_finished.at(absl::StatusCode::kOutOfRange) == 1);
  CHECK(m.transfers_finished.at(absl::StatusCode::kNotFound) == 1);
  CHECK(m.bytes_written == W::kBytesWritten);
  CHECK(m.bytes_read == W::kReadBytes);
  CHECK(m.bytes_sent == W::kMessageBytes);
  CHECK(m.windows_posted == W::kWindows);
  CHECK(m.latency[0].count == W::kClass0);
  CHECK(m.latency[2].count == W::kClass2);
  CHECK(m.latency[1].count == 0);
  CHECK(m.latency[3].count == 0);
  CHECK(m.latency[4].count == 0);
  for (const LatencyHistogram& h : m.latency) {
    CHECK(Sum(h) == h.count);
    CHECK(h.sum_seconds >= 0);
  }
  CHECK(m.latency[0].sum_seconds > 0);
  CHECK(m.heartbeats_missed == 0);
  CHECK(m.peer_failures == 0);
  CHECK(m.transfers_queued == 0);
  REQUIRE(m.peers.size() == 1);
  CHECK(m.peers[0].peer == pair.a_to_b);
  CHECK(m.peers[0].name == "b");
  // Refusals are not the peer's: neither was accepted.
  CHECK(m.peers[0].transfers_ok == W::kOk);
  CHECK(m.peers[0].transfers_failed == 0);
  CHECK(m.peers[0].bytes ==
        W::kBytesWritten + W::kReadBytes + W::kMessageBytes);

  // The receiving engine started nothing.
  const TransferEngineMetrics b = pair.b->Metrics();
  CHECK(b.transfers_started == 0);
  CHECK(b.windows_posted == 0);
  REQUIRE(b.peers.size() == 1);
  CHECK(b.peers[0].transfers_ok == 0);
}

TEST_CASE("a cancelled transfer counts as Cancelled, for its peer too",
          "[transfer_metrics]") {
  PoolPair pair;
  TransferEngineOptions a_options = WorkloadSenderOptions();
  MakePoolPair(flowkv::testing::kWorkloadPoolBytes, a_options,
               TestEngineOptions("b", "cluster-secret"), &pair);
  // Cancel may come before or after the 8 MiB finished: either outcome is
  // counted once, under its code.
  const TransferOp op{pair.src.id, 0, pair.dst.id, 0,
                      flowkv::testing::kWorkloadPoolBytes};
  TransferHandle handle = pair.a->Write(pair.a_to_b, {&op, 1});
  handle.Cancel();
  const absl::Status status = handle.Wait();
  const TransferEngineMetrics m = pair.a->Metrics();
  CHECK(m.transfers_started == 1);
  REQUIRE(m.transfers_finished.size() == 1);
  CHECK(m.transfers_finished.begin()->first == status.code());
  REQUIRE(m.peers.size() == 1);
  CHECK(m.peers[0].transfers_ok + m.peers[0].transfers_failed == 1);
  CHECK(m.peers[0].transfers_failed == (status.ok() ? 0 : 1));
  CHECK(m.bytes_written == (status.ok() ? op.length : 0));
}

TEST_CASE("per-peer rows end with the peer", "[transfer_metrics]") {
  PoolPair pair;
  MakePoolPair(1 << 20, &pair);
  const TransferOp op{pair.src.id, 0, pair.dst.id, 0, 4096};
  REQUIRE(pair.a->Write(pair.a_to_b, {&op, 1}).Wait().ok());
  REQUIRE(pair.a->Metrics().peers.size() == 1);
  REQUIRE(pair.a->Disconnect(pair.a_to_b).ok());
  // A row exists exactly for the peers Peers() lists (a disconnected peer
  // stays listed with its failure).
  const size_t listed = pair.a->Peers().size();
  CHECK(pair.a->Metrics().peers.size() == listed);
  // Counted before: the transfer stays in the engine-wide counters.
  CHECK(pair.a->Metrics().transfers_finished.at(absl::StatusCode::kOk) == 1);
}

TEST_CASE("a killed peer process counts as one peer failure",
          "[transfer_metrics][process]") {
  flowkv::testing::PeerProcess process("secret", 4096);
  auto engine =
      flowkv::testing::MakeEngine(TestEngineOptions("metrics", "secret"));
  auto peer = engine->Connect(process.address());
  REQUIRE(peer.ok());
  REQUIRE(engine->Metrics().peer_failures == 0);
  process.Kill(SIGKILL);
  // Detected within peer_failure_timeout: by UCX (error-handling mode) or
  // by the heartbeats (shared-memory mode), with some slack for a loaded
  // machine.
  REQUIRE(flowkv::testing::WaitUntil(
      [&] { return !engine->GetPeer(*peer)->connected; },
      3 * flowkv::testing::kPeerFailureTimeout));
  const TransferEngineMetrics m = engine->Metrics();
  CHECK(m.peer_failures == 1);
  // A missed heartbeat is counted exactly when it is what failed the peer.
  const std::string why(engine->GetPeer(*peer)->failure.message());
  INFO(why);
  CHECK(m.heartbeats_missed ==
        (why.find("no heartbeat") != std::string::npos ? 1 : 0));
  if (!flowkv::testing::SharedMemoryMode()) CHECK(m.heartbeats_missed == 0);
  // The peer stays listed (failed), with its row.
  REQUIRE(m.peers.size() == 1);
  CHECK(m.peers[0].peer == *peer);
}

TEST_CASE("a stalled peer's missed heartbeats are counted",
          "[transfer_metrics][process]") {
  if (!flowkv::testing::SharedMemoryMode()) {
    // Over tcp UCX's error handling detects peers; a stopped process's
    // kernel still answers its keepalive (peer_lifecycle_test.cc).
    SUCCEED("heartbeats run in shared-memory mode only");
    return;
  }
  flowkv::testing::PeerProcess process("secret", 4096);
  auto engine =
      flowkv::testing::MakeEngine(TestEngineOptions("metrics", "secret"));
  auto peer = engine->Connect(process.address());
  REQUIRE(peer.ok());
  process.Kill(SIGSTOP);
  REQUIRE(flowkv::testing::WaitUntil(
      [&] { return !engine->GetPeer(*peer)->connected; },
      3 * flowkv::testing::kPeerFailureTimeout));
  const TransferEngineMetrics m = engine->Metrics();
  INFO(engine->GetPeer(*peer)->failure.message());
  CHECK(m.heartbeats_missed == 1);
  CHECK(m.peer_failures == 1);
  process.Kill(SIGCONT);
}

struct TimingLog {
  std::mutex mu;
  std::vector<TransferTiming> timings;
};

TEST_CASE("the timing callback sees every accepted transfer, in order",
          "[transfer_metrics]") {
  TimingLog log;
  TransferEngineOptions a_options = WorkloadSenderOptions();
  a_options.on_transfer_timing = [&log](const TransferTiming& t) {
    std::lock_guard<std::mutex> lock(log.mu);
    log.timings.push_back(t);
  };
  PoolPair pair;
  MakePoolPair(flowkv::testing::kWorkloadPoolBytes, a_options,
               TestEngineOptions("b", "cluster-secret"), &pair);
  const absl::Time before = absl::Now();
  RunKnownWorkload(&pair);
  const absl::Time after = absl::Now();

  // The callback runs before Wait() returns: every accepted transfer is
  // here once the workload returned, and no refused one.
  std::lock_guard<std::mutex> lock(log.mu);
  REQUIRE(log.timings.size() == W::kOk);
  const absl::Time kNever = absl::InfinitePast();
  for (size_t i = 0; i < log.timings.size(); ++i) {
    const TransferTiming& t = log.timings[i];
    INFO("transfer " << i << " id " << t.transfer_id);
    CHECK(t.transfer_id == i + 1);  // in submission order
    CHECK(t.peer == pair.a_to_b);
    CHECK(t.code == absl::StatusCode::kOk);
    CHECK(before <= t.submitted);
    CHECK(t.done <= after);
    const bool send = i == W::kOk - 1;
    const bool acknowledged = i < W::kSmallWrites;
    if (send) {
      CHECK(t.ops == 0);
      CHECK(t.bytes == W::kMessageBytes);
      CHECK(t.first_op_posted == kNever);
      CHECK(t.last_op_completed == kNever);
      CHECK(t.notification_sent != kNever);
      CHECK(t.submitted <= t.notification_sent);
      CHECK(t.notification_sent <= t.done);
      continue;
    }
    CHECK(t.ops == 1);
    REQUIRE(t.first_op_posted != kNever);
    REQUIRE(t.last_op_completed != kNever);
    CHECK(t.submitted <= t.first_op_posted);
    CHECK(t.first_op_posted <= t.last_op_completed);
    if (acknowledged) {
      CHECK(t.bytes == W::kSmallBytes);
      REQUIRE(t.notification_sent != kNever);
      REQUIRE(t.acknowledged != kNever);
      CHECK(t.last_op_completed <= t.notification_sent);
      CHECK(t.notification_sent <= t.acknowledged);
      CHECK(t.acknowledged <= t.done);
    } else {
      CHECK(t.notification_sent == kNever);
      CHECK(t.acknowledged == kNever);
      CHECK(t.last_op_completed <= t.done);
    }
  }
}

TEST_CASE("a refused transfer has no timing", "[transfer_metrics]") {
  TimingLog log;
  TransferEngineOptions a_options = WorkloadSenderOptions();
  a_options.on_transfer_timing = [&log](const TransferTiming& t) {
    std::lock_guard<std::mutex> lock(log.mu);
    log.timings.push_back(t);
  };
  PoolPair pair;
  MakePoolPair(flowkv::testing::kWorkloadPoolBytes, a_options,
               TestEngineOptions("b", "cluster-secret"), &pair);
  // Refused by Write itself (the peer is disconnected): never accepted.
  REQUIRE(pair.a->Disconnect(pair.a_to_b).ok());
  const TransferOp op{pair.src.id, 0, pair.dst.id, 0, 4096};
  CHECK(pair.a->Write(pair.a_to_b, {&op, 1}).Wait().code() ==
        absl::StatusCode::kUnavailable);
  std::lock_guard<std::mutex> lock(log.mu);
  CHECK(log.timings.empty());
}

}  // namespace
}  // namespace flowkv
