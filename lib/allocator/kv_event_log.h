// SPDX-License-Identifier: Apache-2.0
// KvEventLog: the bounded buffer of one allocator's KV events
// (flowkv/kv_events.h). Numbers events 1, 2, 3, ... as they are published,
// keeps the newest `capacity`, and answers "everything after seq s" or
// "you fell behind".
//
// Thread safety: externally synchronized (the allocator's mutex).

#ifndef FLOWKV_LIB_ALLOCATOR_KV_EVENT_LOG_H_
#define FLOWKV_LIB_ALLOCATOR_KV_EVENT_LOG_H_

#include <cstddef>
#include <cstdint>
#include <deque>

#include "flowkv/kv_events.h"

namespace flowkv::internal {

class KvEventLog {
 public:
  explicit KvEventLog(size_t capacity) : capacity_(capacity) {}

  // Assigns the next seq to `event` and keeps it, dropping the oldest event
  // when the buffer is full.
  void Publish(KvEvent event);

  // Events with seq > after_seq, at most max_events; fell_behind when one of
  // them was dropped or after_seq is ahead of latest_seq().
  KvEventBatch Read(uint64_t after_seq, size_t max_events) const;

  uint64_t latest_seq() const { return latest_seq_; }
  size_t size() const { return events_.size(); }

 private:
  const size_t capacity_;
  uint64_t latest_seq_ = 0;
  std::deque<KvEvent> events_;  // seqs latest_seq_ - size + 1 .. latest_seq_
};

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_ALLOCATOR_KV_EVENT_LOG_H_
