// SPDX-License-Identifier: Apache-2.0
// FamilySet: builds Prometheus metric families from flowkv's snapshot
// structs (TransferEngineMetrics and TransferEngineStats, KvTransferStats,
// BlockAllocatorStats), one family per metric name whatever the number of
// sources, in the order names first appear. The names, types and help
// texts are docs/telemetry.md's.
//
// Thread safety: externally synchronized.

#ifndef FLOWKV_LIB_TELEMETRY_METRIC_FAMILIES_H_
#define FLOWKV_LIB_TELEMETRY_METRIC_FAMILIES_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "flowkv/block_allocator.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/telemetry/prometheus.h"
#include "flowkv/transfer_engine.h"
#include "flowkv/transfer_metrics.h"
#include "prometheus/metric_family.h"

namespace flowkv::telemetry::internal {

class FamilySet {
 public:
  void Counter(const std::string& name, const std::string& help,
               const Labels& labels, double value);
  void Gauge(const std::string& name, const std::string& help,
             const Labels& labels, double value);
  void Histogram(const std::string& name, const std::string& help,
                 const Labels& labels, const LatencyHistogram& histogram);

  // One source's families; `labels` are the source's own.
  void AddEngine(const Labels& labels, const TransferEngineMetrics& metrics,
                 const TransferEngineStats& stats);
  void AddKvTransfer(const Labels& labels, const KvTransferStats& stats);
  void AddAllocator(const Labels& labels, const BlockAllocatorStats& stats);

  std::vector<prometheus::MetricFamily> Take() { return std::move(families_); }

 private:
  prometheus::ClientMetric& Add(const std::string& name,
                                const std::string& help,
                                prometheus::MetricType type,
                                const Labels& labels);
  std::vector<prometheus::MetricFamily> families_;
  std::map<std::string, size_t> index_;
};

// Labels plus one more.
Labels With(Labels labels, const std::string& name, std::string value);

}  // namespace flowkv::telemetry::internal

#endif  // FLOWKV_LIB_TELEMETRY_METRIC_FAMILIES_H_
