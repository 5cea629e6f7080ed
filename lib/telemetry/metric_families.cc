// SPDX-License-Identifier: Apache-2.0
// FamilySet (metric_families.h): every metric this component exports, its
// name, type, help and labels. docs/telemetry.md documents the same list;
// change both together.

#include "lib/telemetry/metric_families.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace flowkv::telemetry::internal {

Labels With(Labels labels, const std::string& name, std::string value) {
  labels[name] = std::move(value);
  return labels;
}

prometheus::ClientMetric& FamilySet::Add(const std::string& name,
                                         const std::string& help,
                                         prometheus::MetricType type,
                                         const Labels& labels) {
  auto [it, inserted] = index_.try_emplace(name, families_.size());
  if (inserted) {
    prometheus::MetricFamily family;
    family.name = name;
    family.help = help;
    family.type = type;
    families_.push_back(std::move(family));
  }
  prometheus::ClientMetric& metric =
      families_[it->second].metric.emplace_back();
  for (const auto& [label, value] : labels) {
    metric.label.push_back({label, value});
  }
  return metric;
}

void FamilySet::Counter(const std::string& name, const std::string& help,
                        const Labels& labels, double value) {
  Add(name, help, prometheus::MetricType::Counter, labels).counter.value =
      value;
}

void FamilySet::Gauge(const std::string& name, const std::string& help,
                      const Labels& labels, double value) {
  Add(name, help, prometheus::MetricType::Gauge, labels).gauge.value = value;
}

void FamilySet::Histogram(const std::string& name, const std::string& help,
                          const Labels& labels,
                          const LatencyHistogram& histogram) {
  prometheus::ClientMetric& metric =
      Add(name, help, prometheus::MetricType::Histogram, labels);
  metric.histogram.sample_count = histogram.count;
  metric.histogram.sample_sum = histogram.sum_seconds;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kTransferLatencyBounds.size(); ++i) {
    cumulative += histogram.buckets[i];
    metric.histogram.bucket.push_back({cumulative, kTransferLatencyBounds[i]});
  }
  // The +Inf bucket is the sample count (prometheus-cpp writes it).
}

void FamilySet::AddEngine(const Labels& labels, const TransferEngineMetrics& m,
                          const TransferEngineStats& stats) {
  Counter("flowkv_engine_transfers_started_total",
          "Write, Read and Send calls that returned a handle.", labels,
          m.transfers_started);
  for (const auto& [code, count] : m.transfers_finished) {
    Counter("flowkv_engine_transfers_total",
            "Transfers done, by their final status code.",
            With(labels, "status", absl::StatusCodeToString(code)), count);
  }
  const std::pair<const char*, uint64_t> bytes[] = {{"write", m.bytes_written},
                                                    {"read", m.bytes_read},
                                                    {"send", m.bytes_sent}};
  for (const auto& [kind, value] : bytes) {
    Counter("flowkv_engine_bytes_total",
            "Payload bytes of the transfers that finished OK, by kind.",
            With(labels, "kind", kind), value);
  }
  for (size_t c = 0; c < kNumTransferSizeClasses; ++c) {
    Histogram("flowkv_engine_transfer_duration_seconds",
              "Submit-to-done time of the transfers that finished OK, by "
              "payload size class (upper bound of the class).",
              With(labels, "size_class", TransferSizeClassName(c)),
              m.latency[c]);
  }
  Counter("flowkv_engine_windows_posted_total",
          "Posting windows posted (each closed by a flush).", labels,
          m.windows_posted);
  Counter("flowkv_engine_heartbeats_missed_total",
          "Peers declared dead because their heartbeats stopped.", labels,
          m.heartbeats_missed);
  Counter("flowkv_engine_peer_failures_total",
          "Peers and connections that failed (not local disconnects).", labels,
          m.peer_failures);
  Counter("flowkv_engine_messages_dropped_total",
          "Messages dropped because the notification queue was full.", labels,
          stats.messages_dropped);
  Gauge("flowkv_engine_transfers_queued",
        "Transfers waiting for the progress thread to post their next "
        "window.",
        labels, m.transfers_queued);
  Gauge("flowkv_engine_transfers_active", "Transfers accepted and not done.",
        labels, stats.transfers_active);
  Gauge("flowkv_engine_peers_connected",
        "Peers whose handshake completed and whose endpoint is open.", labels,
        stats.peers_connected);
  Gauge("flowkv_engine_registered_bytes",
        "Bytes registered or allocated in all regions.", labels,
        stats.registered_bytes);
  for (const PeerTransferMetrics& peer : m.peers) {
    const Labels peer_labels = With(
        With(labels, "peer", absl::StrCat(peer.peer)), "peer_name", peer.name);
    Counter("flowkv_engine_peer_transfers_total",
            "Accepted transfers to or from one peer, by outcome.",
            With(peer_labels, "outcome", "ok"), peer.transfers_ok);
    Counter("flowkv_engine_peer_transfers_total",
            "Accepted transfers to or from one peer, by outcome.",
            With(peer_labels, "outcome", "failed"), peer.transfers_failed);
    Counter("flowkv_engine_peer_bytes_total",
            "Payload bytes of one peer's transfers that finished OK.",
            peer_labels, peer.bytes);
  }
}

void FamilySet::AddKvTransfer(const Labels& labels, const KvTransferStats& s) {
  const std::pair<const char*, uint64_t> outcomes[] = {
      {"finished", s.requests_finished},
      {"failed", s.requests_failed},
      {"timed_out", s.requests_timed_out}};
  for (const auto& [outcome, value] : outcomes) {
    Counter("flowkv_kv_requests_total",
            "Requests Poll returned, by outcome (timed_out: failed with "
            "DeadlineExceeded).",
            With(labels, "outcome", outcome), value);
  }
  Gauge("flowkv_kv_requests_active",
        "Requests expected or arriving (not finished, failed or forgotten).",
        labels, s.requests_active);
  Gauge("flowkv_kv_results_pending",
        "Finished or failed requests not yet taken by Poll.", labels,
        s.results_pending);
  const std::pair<const char*, std::pair<uint64_t, uint64_t>> staged[] = {
      {"sent", {s.staged_slots_sent, s.staged_bytes_sent}},
      {"received", {s.staged_slots_received, s.staged_bytes_received}}};
  for (const auto& [direction, value] : staged) {
    Counter("flowkv_kv_staged_chunks_total",
            "Staging-ring slots gathered and sent, or received and "
            "scattered.",
            With(labels, "direction", direction), value.first);
    Counter("flowkv_kv_staged_bytes_total", "Bytes of those slots.",
            With(labels, "direction", direction), value.second);
  }
  Counter("flowkv_kv_ipc_copies_total",
          "Runs copied straight into or out of peers' pools over IPC.", labels,
          s.ipc_copies);
  Counter("flowkv_kv_notices_malformed_total",
          "Notices with KvTransfer's magic that did not parse.", labels,
          s.malformed_notices);
  Counter("flowkv_kv_notices_late_total",
          "Notices for finished, failed or forgotten requests.", labels,
          s.late_notices);
  Counter("flowkv_kv_slots_refused_total",
          "Slot notices refused (out-of-pool runs, unknown slots).", labels,
          s.slots_refused);
  Gauge("flowkv_kv_ring_slots", "Slots of the staging ring (0: no ring).",
        labels, s.ring_slots);
  Gauge("flowkv_kv_ring_slots_in_use", "Slots of the staging ring in use now.",
        labels, s.ring_slots - s.ring_slots_free);
  Gauge("flowkv_kv_ring_slots_max_in_use",
        "The most slots ever in use at once.", labels, s.ring_slots_max_in_use);
}

void FamilySet::AddAllocator(const Labels& labels,
                             const BlockAllocatorStats& s) {
  Gauge("flowkv_allocator_blocks", "Blocks in the pool.", labels, s.num_blocks);
  Gauge("flowkv_allocator_free_blocks", "Free blocks.", labels, s.free_blocks);
  Gauge("flowkv_allocator_free_runs", "Maximal runs of free blocks.", labels,
        s.free_runs);
  Gauge("flowkv_allocator_largest_free_run_blocks",
        "Blocks in the largest free run.", labels, s.largest_free_run);
  Gauge("flowkv_allocator_live_lists", "Block lists handed out, not freed.",
        labels, s.live_lists);
  Gauge("flowkv_allocator_runs_per_list",
        "Mean runs per live block list (1: every list contiguous).", labels,
        s.MeanRunsPerList());
  for (const auto& [runs, lists] : s.runs_histogram) {
    Gauge("flowkv_allocator_lists_by_runs",
          "Live block lists made of `runs` runs.",
          With(labels, "runs", absl::StrCat(runs)), lists);
  }
}

}  // namespace flowkv::telemetry::internal
