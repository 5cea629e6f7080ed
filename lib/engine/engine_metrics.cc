// SPDX-License-Identifier: Apache-2.0
// EngineMetrics (engine_metrics.h): counting finished transfers into their
// status, byte and latency counters, and the snapshot.

#include "lib/engine/engine_metrics.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "lib/common/tsan_lock.h"

namespace flowkv::internal {

void EngineMetrics::OnFinished(MetricsKind kind, PeerId peer, bool accepted,
                               absl::StatusCode code, uint64_t bytes,
                               absl::Duration latency) {
  const auto index = static_cast<size_t>(code);
  Add(&finished_[index < kCodes
                     ? index
                     : static_cast<size_t>(absl::StatusCode::kUnknown)],
      1);
  const bool ok = code == absl::StatusCode::kOk;
  if (ok) {
    Add(kind == MetricsKind::kWrite  ? &bytes_written_
        : kind == MetricsKind::kRead ? &bytes_read_
                                     : &bytes_sent_,
        bytes);
    Histogram& h = latency_[TransferSizeClass(bytes)];
    const double seconds = absl::ToDoubleSeconds(latency);
    const size_t bucket = static_cast<size_t>(
        std::lower_bound(kTransferLatencyBounds.begin(),
                         kTransferLatencyBounds.end(), seconds) -
        kTransferLatencyBounds.begin());
    Add(&h.buckets[bucket], 1);
    Add(&h.count, 1);
    Add(&h.sum_nanos, static_cast<uint64_t>(std::max<int64_t>(
                          0, absl::ToInt64Nanoseconds(latency))));
  }
  if (!accepted) return;
  TsanMutexLock lock(&peers_mu_);
  PeerTransferMetrics& row = peers_[peer];
  row.peer = peer;
  if (ok) {
    ++row.transfers_ok;
    row.bytes += bytes;
  } else {
    ++row.transfers_failed;
  }
}

TransferEngineMetrics EngineMetrics::Snapshot(
    const std::vector<PeerInfo>& listed, uint64_t transfers_queued) const {
  auto load = [](const std::atomic<uint64_t>& c) {
    return c.load(std::memory_order_relaxed);
  };
  TransferEngineMetrics m;
  m.transfers_started = load(started_);
  for (size_t i = 0; i < kCodes; ++i) {
    if (const uint64_t n = load(finished_[i]); n != 0) {
      m.transfers_finished[static_cast<absl::StatusCode>(i)] = n;
    }
  }
  m.bytes_written = load(bytes_written_);
  m.bytes_read = load(bytes_read_);
  m.bytes_sent = load(bytes_sent_);
  for (size_t c = 0; c < kNumTransferSizeClasses; ++c) {
    for (size_t b = 0; b < latency_[c].buckets.size(); ++b) {
      m.latency[c].buckets[b] = load(latency_[c].buckets[b]);
    }
    m.latency[c].count = load(latency_[c].count);
    m.latency[c].sum_seconds =
        static_cast<double>(load(latency_[c].sum_nanos)) * 1e-9;
  }
  m.windows_posted = load(windows_posted_);
  m.heartbeats_missed = load(heartbeats_missed_);
  m.peer_failures = load(peer_failures_);
  m.transfers_queued = transfers_queued;

  absl::flat_hash_set<PeerId> ids;
  TsanMutexLock lock(&peers_mu_);
  for (const PeerInfo& info : listed) {
    ids.insert(info.id);
    PeerTransferMetrics& row = peers_[info.id];
    row.peer = info.id;
    row.name = info.name;
    m.peers.push_back(row);
  }
  absl::erase_if(peers_,
                 [&](const auto& entry) { return !ids.contains(entry.first); });
  std::sort(m.peers.begin(), m.peers.end(),
            [](const auto& a, const auto& b) { return a.peer < b.peer; });
  return m;
}

}  // namespace flowkv::internal
