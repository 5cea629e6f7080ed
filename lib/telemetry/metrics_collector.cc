// SPDX-License-Identifier: Apache-2.0
// MetricsCollector (include/flowkv/telemetry/prometheus.h): the sources a
// collector reads, their label checks, and Collect, which takes each
// source's snapshot through its public API and hands it to FamilySet
// (metric_families.h).

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "flowkv/telemetry/prometheus.h"
#include "lib/common/tsan_lock.h"
#include "lib/telemetry/metric_families.h"

namespace flowkv::telemetry {
namespace {

// The labels this component sets itself.
constexpr const char* kOwnLabels[] = {"status",    "kind",      "size_class",
                                      "peer",      "peer_name", "outcome",
                                      "direction", "runs",      "le"};

absl::Status CheckLabelName(const std::string& name) {
  const bool valid = !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
                     name.rfind("__", 0) != 0 &&
                     std::all_of(name.begin(), name.end(), [](char c) {
                       return (c >= 'a' && c <= 'z') ||
                              (c >= 'A' && c <= 'Z') ||
                              (c >= '0' && c <= '9') || c == '_';
                     });
  if (!valid) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "MetricsCollector: label name '%s' is not [a-zA-Z_][a-zA-Z0-9_]* or "
        "starts with '__'",
        name));
  }
  for (const char* own : kOwnLabels) {
    if (name == own) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "MetricsCollector: label name '%s' is one this component sets",
          name));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::shared_ptr<MetricsCollector> MetricsCollector::Create() {
  return std::shared_ptr<MetricsCollector>(new MetricsCollector());
}

absl::Status MetricsCollector::AddEngine(const TransferEngine* engine,
                                         Labels labels) {
  if (engine != nullptr && !labels.contains("engine")) {
    labels["engine"] = engine->name();
  }
  return Add(Kind::kEngine, engine, std::move(labels));
}

absl::Status MetricsCollector::AddKvTransfer(const KvTransfer* kv_transfer,
                                             Labels labels) {
  return Add(Kind::kKvTransfer, kv_transfer, std::move(labels));
}

absl::Status MetricsCollector::AddAllocator(const BlockAllocator* allocator,
                                            Labels labels) {
  return Add(Kind::kAllocator, allocator, std::move(labels));
}

absl::Status MetricsCollector::Add(Kind kind, const void* object,
                                   Labels labels) {
  if (object == nullptr) {
    return absl::InvalidArgumentError("MetricsCollector: null source");
  }
  for (const auto& [name, value] : labels) {
    if (absl::Status s = CheckLabelName(name); !s.ok()) return s;
  }
  flowkv::internal::TsanMutexLock lock(&mu_);
  for (const Source& source : sources_) {
    if (source.object == object) {
      return absl::InvalidArgumentError(
          "MetricsCollector: this source was already added");
    }
    if (source.kind == kind && source.labels == labels) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "MetricsCollector: another source of this kind has the labels {%s}; "
          "add a label that tells them apart",
          absl::StrJoin(labels, ",", absl::PairFormatter("="))));
    }
  }
  sources_.push_back({kind, object, std::move(labels)});
  return absl::OkStatus();
}

absl::Status MetricsCollector::Remove(const void* source) {
  flowkv::internal::TsanMutexLock lock(&mu_);
  auto it = std::find_if(sources_.begin(), sources_.end(),
                         [&](const Source& s) { return s.object == source; });
  if (it == sources_.end()) {
    return absl::NotFoundError(
        "MetricsCollector: Remove of a source never added");
  }
  sources_.erase(it);
  return absl::OkStatus();
}

std::vector<prometheus::MetricFamily> MetricsCollector::Collect() const {
  internal::FamilySet families;
  // Held while reading: Remove waits for a scrape in progress.
  flowkv::internal::TsanMutexLock lock(&mu_);
  for (Kind kind : {Kind::kEngine, Kind::kKvTransfer, Kind::kAllocator}) {
    for (const Source& source : sources_) {
      if (source.kind != kind) continue;
      switch (kind) {
        case Kind::kEngine: {
          const auto* engine =
              static_cast<const TransferEngine*>(source.object);
          families.AddEngine(source.labels, engine->Metrics(), engine->Stats());
          break;
        }
        case Kind::kKvTransfer:
          families.AddKvTransfer(
              source.labels,
              static_cast<const KvTransfer*>(source.object)->Stats());
          break;
        case Kind::kAllocator:
          families.AddAllocator(
              source.labels,
              static_cast<const BlockAllocator*>(source.object)->Stats());
          break;
      }
    }
  }
  return families.Take();
}

}  // namespace flowkv::telemetry
