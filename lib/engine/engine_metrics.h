// SPDX-License-Identifier: Apache-2.0
// EngineMetrics: the counters behind TransferEngine::Metrics() and the
// per-transfer timestamps behind TransferEngineOptions::on_transfer_timing.
// The engine calls the On* hooks where a transfer starts, posts a window,
// finishes, and where a peer fails; Snapshot() reads them. It owns no
// other engine state and calls nothing of the engine.
//
// Thread safety: thread-safe. Counters are relaxed atomics (a snapshot may
// see one transfer's counters half updated, never torn values); the
// per-peer table has its own mutex.

#ifndef FLOWKV_LIB_ENGINE_ENGINE_METRICS_H_
#define FLOWKV_LIB_ENGINE_ENGINE_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flowkv/transfer_engine.h"
#include "flowkv/transfer_metrics.h"

namespace flowkv::internal {

// The timestamps of one unfinished transfer (kept in its Active).
struct TransferTimes {
  absl::Time first_op_posted = absl::InfinitePast();
  absl::Time last_op_completed = absl::InfinitePast();
  absl::Time notification_sent = absl::InfinitePast();
  absl::Time acknowledged = absl::InfinitePast();

  // Sets `t` to now once (later calls keep the first time).
  static void Stamp(absl::Time* t) {
    if (*t == absl::InfinitePast()) *t = absl::Now();
  }
};

// What kind of payload a finished transfer moved (bytes_written/read/sent).
enum class MetricsKind { kWrite, kRead, kSend };

class EngineMetrics {
 public:
  EngineMetrics() = default;
  EngineMetrics(const EngineMetrics&) = delete;
  EngineMetrics& operator=(const EngineMetrics&) = delete;

  // Write/Read/Send returned a handle.
  void OnStarted() { Add(&started_, 1); }
  // A transfer is done with `code`. `accepted`: it reached the progress
  // thread (refusals do not count per peer). `latency` is submit to done.
  void OnFinished(MetricsKind kind, PeerId peer, bool accepted,
                  absl::StatusCode code, uint64_t bytes,
                  absl::Duration latency);
  void OnWindowPosted() { Add(&windows_posted_, 1); }
  void OnHeartbeatMissed() { Add(&heartbeats_missed_, 1); }
  void OnPeerFailed() { Add(&peer_failures_, 1); }

  // Counters now; `listed` are the peers Peers() lists: each gets a row
  // (named from its PeerInfo), and rows of peers no longer listed are
  // dropped here, so the table stays bounded;
  // `transfers_queued` the posting queue's length.
  TransferEngineMetrics Snapshot(const std::vector<PeerInfo>& listed,
                                 uint64_t transfers_queued) const;

 private:
  static void Add(std::atomic<uint64_t>* counter, uint64_t n) {
    counter->fetch_add(n, std::memory_order_relaxed);
  }
  struct Histogram {
    std::array<std::atomic<uint64_t>, kTransferLatencyBounds.size() + 1>
        buckets{};
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_nanos{0};
  };
  // absl::StatusCode values are 0..16.
  static constexpr size_t kCodes = 17;

  std::atomic<uint64_t> started_{0};
  std::array<std::atomic<uint64_t>, kCodes> finished_{};
  std::atomic<uint64_t> bytes_written_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<uint64_t> bytes_sent_{0};
  std::array<Histogram, kNumTransferSizeClasses> latency_;
  std::atomic<uint64_t> windows_posted_{0};
  std::atomic<uint64_t> heartbeats_missed_{0};
  std::atomic<uint64_t> peer_failures_{0};
  mutable absl::Mutex peers_mu_;
  mutable absl::flat_hash_map<PeerId, PeerTransferMetrics> peers_
      ABSL_GUARDED_BY(peers_mu_);
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ENGINE_ENGINE_METRICS_H_
