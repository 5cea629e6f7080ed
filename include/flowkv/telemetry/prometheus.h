// SPDX-License-Identifier: Apache-2.0
// flowkv::prometheus: the engine's, KvTransfers' and allocators' figures as
// Prometheus metrics (docs/telemetry.md lists every one). An optional
// component, built when prometheus-cpp is found (FLOWKV_WITH_PROMETHEUS);
// the core library does not depend on it. Link flowkv::prometheus.
//
// MetricsCollector is a prometheus::Collectable that reads each source's
// snapshot (TransferEngine::Metrics() and Stats(), KvTransfer::Stats(),
// BlockAllocator::Stats()) when scraped. Register it with an Exposer (or a
// Gateway) of your own, next to your prometheus::Registry, or let
// StartMetricsExposer serve it:
//
//   auto collector = flowkv::telemetry::MetricsCollector::Create();
//   absl::Status s = collector->AddEngine(engine.get(), {{"node", "p0"}});
//   // Your exposer:  exposer.RegisterCollectable(collector);
//   // Or ours:
//   auto exposer = flowkv::telemetry::StartMetricsExposer("127.0.0.1:9464",
//                                                         {collector});
//
// Thread safety: thread-safe.

#ifndef FLOWKV_TELEMETRY_PROMETHEUS_H_
#define FLOWKV_TELEMETRY_PROMETHEUS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "flowkv/block_allocator.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"

namespace flowkv::telemetry {

// Extra labels of one source's metrics, e.g. {{"node", "prefill-0"}}.
using Labels = std::map<std::string, std::string>;

// Reads its sources at every scrape. Sources are borrowed: Remove a source
// (or drop every reference to the collector and any exposer serving it)
// before destroying the source.
// Thread safety: thread-safe.
class MetricsCollector final : public prometheus::Collectable {
 public:
  static std::shared_ptr<MetricsCollector> Create();

  // Adds a source. An engine's metrics carry the label engine=<its name>
  // unless `labels` names "engine". InvalidArgument for a null source, one
  // already added, a label name Prometheus does not allow or that this
  // component uses itself (status, kind, size_class, peer, peer_name,
  // outcome, direction, runs, le), or labels (with the engine name) equal to
  // another source's of the same kind (their series would collide).
  absl::Status AddEngine(const TransferEngine* engine, Labels labels = {});
  absl::Status AddKvTransfer(const KvTransfer* kv_transfer, Labels labels = {});
  absl::Status AddAllocator(const BlockAllocator* allocator,
                            Labels labels = {});
  // Removes a source; returns once no scrape reads it. NotFound when it was
  // not added. Must not be called from an engine callback (a scrape may be
  // waiting for that engine's progress thread).
  absl::Status Remove(const void* source);

  // prometheus::Collectable: the families of every source, in a fixed
  // order (engines, KvTransfers, allocators).
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  enum class Kind { kEngine, kKvTransfer, kAllocator };
  struct Source {
    Kind kind;
    const void* object;
    Labels labels;
  };
  MetricsCollector() = default;
  absl::Status Add(Kind kind, const void* object, Labels labels);

  mutable absl::Mutex mu_;
  std::vector<Source> sources_ ABSL_GUARDED_BY(mu_);
};

// Serves `collectables` at http://<address>/metrics from a prometheus-cpp
// Exposer (its own two threads). `address` is "host:port"; port 0 picks a
// free one (ExposerPort tells which). InvalidArgument for an address
// without a port or a null collectable; Unavailable when the address cannot
// be bound. The collectables are held weakly, as Exposer holds them.
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsExposer(
    const std::string& address,
    const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables);

// The port an exposer listens on (its first), or 0 when none.
int ExposerPort(const prometheus::Exposer& exposer);

}  // namespace flowkv::telemetry

#endif  // FLOWKV_TELEMETRY_PROMETHEUS_H_
