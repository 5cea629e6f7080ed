// SPDX-License-Identifier: Apache-2.0
// An outside user of the installed flowkv::prometheus: one allocator's
// figures collected as Prometheus families.
#include <cstdio>

#include "flowkv/block_allocator.h"
#include "flowkv/telemetry/prometheus.h"

int main() {
  auto allocator = flowkv::BlockAllocator::Create({.num_blocks = 64});
  if (!allocator.ok()) return 1;
  auto collector = flowkv::telemetry::MetricsCollector::Create();
  if (!collector->AddAllocator(allocator->get(), {{"pool", "p"}}).ok()) {
    return 1;
  }
  std::printf("families=%zu\n", collector->Collect().size());
  return 0;
}
