// SPDX-License-Identifier: Apache-2.0
// What a TransferEngine has done since it was created (TransferEngine::
// Metrics()), and the timing of one transfer (TransferEngineOptions::
// on_transfer_timing). Plain counters kept by the engine with relaxed
// atomics; the optional Prometheus component (flowkv::prometheus,
// include/flowkv/telemetry/prometheus.h) exports them, and
// docs/telemetry.md names every figure.
//
//   flowkv::TransferEngineMetrics m = engine->Metrics();
//   uint64_t ok = m.transfers_finished[absl::StatusCode::kOk];
//   const flowkv::LatencyHistogram& small = m.latency[0];  // <= 64 KiB
//
// Thread safety: value types.

#ifndef FLOWKV_TRANSFER_METRICS_H_
#define FLOWKV_TRANSFER_METRICS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "flowkv/transfer_types.h"

namespace flowkv {

// Transfers are grouped by payload size for their latency histograms:
// class i holds the transfers of at most kTransferSizeClassBytes[i] bytes
// (and more than the class before); the last class holds the rest.
inline constexpr std::array<uint64_t, 4> kTransferSizeClassBytes = {
    uint64_t{64} << 10, uint64_t{1} << 20, uint64_t{16} << 20,
    uint64_t{256} << 20};
inline constexpr size_t kNumTransferSizeClasses =
    kTransferSizeClassBytes.size() + 1;
// The class of a transfer of `bytes` bytes, in [0, kNumTransferSizeClasses).
constexpr size_t TransferSizeClass(uint64_t bytes) {
  size_t i = 0;
  while (i < kTransferSizeClassBytes.size() &&
         bytes > kTransferSizeClassBytes[i]) {
    ++i;
  }
  return i;
}
// Its label: "64KiB", "1MiB", "16MiB", "256MiB" (at most that), "inf".
constexpr const char* TransferSizeClassName(size_t size_class) {
  constexpr const char* kNames[kNumTransferSizeClasses] = {
      "64KiB", "1MiB", "16MiB", "256MiB", "inf"};
  return size_class < kNumTransferSizeClasses ? kNames[size_class] : "?";
}

// Upper bounds (seconds) of the latency histograms' buckets; a last bucket
// (+Inf) holds the rest. From 10 us to 10 s.
inline constexpr std::array<double, 16> kTransferLatencyBounds = {
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3,
    5e-3,  10e-3, 25e-3, 50e-3,  100e-3, 250e-3, 1.0,  10.0};

// Transfer latencies (submit to done) of one size class, successful
// transfers only.
struct LatencyHistogram {
  // buckets[i]: transfers with latency <= kTransferLatencyBounds[i] and
  // above the bound before (not cumulative); the last entry is above every
  // bound.
  std::array<uint64_t, kTransferLatencyBounds.size() + 1> buckets{};
  uint64_t count = 0;
  double sum_seconds = 0;
};

// One peer's share of the engine's transfers (Write, Read, Send).
struct PeerTransferMetrics {
  PeerId peer = 0;
  std::string name;  // PeerInfo::name
  uint64_t transfers_ok = 0;
  uint64_t transfers_failed = 0;  // accepted, then failed (any code)
  uint64_t bytes = 0;             // payload bytes of the OK ones
};

// Counters since the engine was created, and its gauges now (what it
// holds, peers connected and transfers active, is TransferEngine::Stats()).
struct TransferEngineMetrics {
  // Write, Read and Send calls that returned a handle (refused ones too).
  uint64_t transfers_started = 0;
  // Done transfers by their status code (kOk, and each failure code:
  // refusals before posting, DeadlineExceeded, Cancelled, Unavailable...).
  std::map<absl::StatusCode, uint64_t> transfers_finished;
  // Payload bytes of the transfers that finished OK, by kind.
  uint64_t bytes_written = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_sent = 0;  // Send (messages)
  // Latency of the transfers that finished OK, by size class
  // (TransferSizeClass of their payload bytes).
  std::array<LatencyHistogram, kNumTransferSizeClasses> latency{};
  // Posting windows (each closed by a flush, or over active messages a
  // Read's replies) posted.
  uint64_t windows_posted = 0;
  // Peers declared dead because their heartbeats stopped (heartbeat mode,
  // TransferEngineOptions::ucx_peer_error_handling false).
  uint64_t heartbeats_missed = 0;
  // Peers failed for any reason (endpoint error, heartbeat, a failed post).
  uint64_t peer_failures = 0;
  // Accepted transfers not yet posted, or between windows, waiting for the
  // progress thread to post their next window (the posting queue).
  uint64_t transfers_queued = 0;
  // Per peer, for the peers Peers() lists now, by peer id.
  std::vector<PeerTransferMetrics> peers;
};

// The timing of one transfer the engine accepted, handed to
// TransferEngineOptions::on_transfer_timing. Each time is absl::
// InfinitePast() when that step did not happen (a Send has no ops, a
// transfer without notification sends none, one that failed stops early).
// When set, they are in this order: submitted <= first_op_posted <=
// last_op_completed <= notification_sent <= acknowledged <= done.
struct TransferTiming {
  uint64_t transfer_id = 0;  // in submission order, from 1, per engine
  PeerId peer = 0;
  uint64_t ops = 0;
  uint64_t bytes = 0;
  absl::StatusCode code = absl::StatusCode::kOk;
  // Write/Read/Send accepted it.
  absl::Time submitted = absl::InfinitePast();
  // Its first window's first op was handed to UCX.
  absl::Time first_op_posted = absl::InfinitePast();
  // The flush (or, over active messages, the last reply) of its last
  // window completed: every op is done locally and at the peer.
  absl::Time last_op_completed = absl::InfinitePast();
  // UCX reported the notification (or Send's message) sent; when the
  // peer's acknowledgement arrived first, the acknowledgement's time.
  absl::Time notification_sent = absl::InfinitePast();
  // The peer acknowledged the notification (TransferOptions::acknowledged).
  absl::Time acknowledged = absl::InfinitePast();
  // The transfer is done (the status is final).
  absl::Time done = absl::InfinitePast();
};

}  // namespace flowkv

#endif  // FLOWKV_TRANSFER_METRICS_H_
