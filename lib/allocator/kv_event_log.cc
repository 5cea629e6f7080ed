// SPDX-License-Identifier: Apache-2.0
// KvEventLog (kv_event_log.h): the bounded event buffer.
#include "lib/allocator/kv_event_log.h"

#include <algorithm>
#include <utility>

namespace flowkv::internal {

void KvEventLog::Publish(KvEvent event) {
  event.seq = ++latest_seq_;
  if (capacity_ == 0) return;
  if (events_.size() == capacity_) events_.pop_front();
  events_.push_back(std::move(event));
}

KvEventBatch KvEventLog::Read(uint64_t after_seq, size_t max_events) const {
  KvEventBatch batch;
  batch.latest_seq = latest_seq_;
  if (after_seq > latest_seq_) {
    batch.fell_behind = true;  // A seq this allocator never published.
    return batch;
  }
  // The oldest seq still held (latest + 1 when none is).
  const uint64_t oldest = latest_seq_ - events_.size() + 1;
  if (after_seq + 1 < oldest) {
    batch.fell_behind = true;
    return batch;
  }
  const size_t from = static_cast<size_t>(after_seq + 1 - oldest);
  const size_t n = std::min(max_events, events_.size() - from);
  batch.events.assign(events_.begin() + static_cast<ptrdiff_t>(from),
                      events_.begin() + static_cast<ptrdiff_t>(from + n));
  return batch;
}

}  // namespace flowkv::internal
