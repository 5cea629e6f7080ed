// SPDX-License-Identifier: Apache-2.0
// A known transfer workload for the metrics tests (tests/engine/
// transfer_metrics_test.cc without Prometheus, tests/telemetry/ with it):
// a fixed mix of Writes, a Read, a Send and two refused Writes over a
// PoolPair, and the engine counters it must leave on the sending engine.
// Catch2 assertions: use from a test's main thread only.
#ifndef FLOWKV_TESTS_SUPPORT_METRICS_WORKLOAD_H_
#define FLOWKV_TESTS_SUPPORT_METRICS_WORKLOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/transfer_engine.h"
#include "tests/support/engine_pair.h"

namespace flowkv::testing {

// Pool size and window of the workload's sending engine ("a").
inline constexpr uint64_t kWorkloadPoolBytes = uint64_t{8} << 20;
inline constexpr uint64_t kWorkloadWindowBytes = uint64_t{1} << 20;

// What RunKnownWorkload does, and so what engine a's Metrics() must say.
struct WorkloadExpectation {
  static constexpr uint64_t kSmallWrites = 3;  // 4 KiB each, acknowledged
  static constexpr uint64_t kSmallBytes = 4096;
  static constexpr uint64_t kLargeWrites = 2;  // 2 MiB each: two windows
  static constexpr uint64_t kLargeBytes = uint64_t{2} << 20;
  static constexpr uint64_t kReadBytes = 8192;    // one Read
  static constexpr uint64_t kMessageBytes = 100;  // one Send

  static constexpr uint64_t kOk = kSmallWrites + kLargeWrites + 2;
  static constexpr uint64_t kStarted = kOk + 2;  // + OutOfRange, NotFound
  static constexpr uint64_t kBytesWritten =
      kSmallWrites * kSmallBytes + kLargeWrites * kLargeBytes;
  // Size class 0 (<= 64 KiB): the small writes, the Read, the Send;
  // class 2 (<= 16 MiB): the large writes.
  static constexpr uint64_t kClass0 = kSmallWrites + 2;
  static constexpr uint64_t kClass2 = kLargeWrites;
  // One per small Write, two per large one, one for the Read.
  static constexpr uint64_t kWindows =
      kSmallWrites + kLargeWrites * (kLargeBytes / kWorkloadWindowBytes) + 1;
};

// Options of the workload's sending engine: the test's, with the window.
inline TransferEngineOptions WorkloadSenderOptions(
    const std::string& name = "a") {
  TransferEngineOptions options = TestEngineOptions(name, "cluster-secret");
  options.max_window_bytes = kWorkloadWindowBytes;
  return options;
}

// Runs the workload from pair->a to pair->b; every accepted transfer is
// waited for.
inline void RunKnownWorkload(PoolPair* pair) {
  using W = WorkloadExpectation;
  TransferEngine& a = *pair->a;
  const PeerId peer = pair->a_to_b;
  for (uint64_t i = 0; i < W::kSmallWrites; ++i) {
    TransferOptions options;
    options.notification = "small-" + std::to_string(i);
    options.acknowledged = true;
    const TransferOp op{pair->src.id, i * W::kSmallBytes, pair->dst.id,
                        i * W::kSmallBytes, W::kSmallBytes};
    REQUIRE(a.Write(peer, {&op, 1}, options).Wait().ok());
  }
  for (uint64_t i = 0; i < W::kLargeWrites; ++i) {
    const TransferOp op{pair->src.id, i * W::kLargeBytes, pair->dst.id,
                        i * W::kLargeBytes, W::kLargeBytes};
    REQUIRE(a.Write(peer, {&op, 1}).Wait().ok());
  }
  const TransferOp read{pair->dst.id, 0, pair->src.id, 0, W::kReadBytes};
  REQUIRE(a.Read(peer, {&read, 1}).Wait().ok());
  REQUIRE(a.Send(peer, std::string(W::kMessageBytes, 'm')).Wait().ok());
  // Refused before posting: past the remote region, and an unknown peer.
  const TransferOp too_far{pair->src.id, 0, pair->dst.id,
                           kWorkloadPoolBytes - 1, 2};
  REQUIRE(a.Write(peer, {&too_far, 1}).Wait().code() ==
          absl::StatusCode::kOutOfRange);
  const TransferOp op{pair->src.id, 0, pair->dst.id, 0, 1};
  REQUIRE(a.Write(peer + 1000, {&op, 1}).Wait().code() ==
          absl::StatusCode::kNotFound);
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_METRICS_WORKLOAD_H_
