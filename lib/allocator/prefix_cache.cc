// SPDX-License-Identifier: Apache-2.0
// BlockAllocator::Impl (block_allocator_impl.h): the prefix cache. Owns the
// hash maps (hash -> block, block -> hash), the cached runs and their LRU
// order, eviction, and the KV events published when hashes come and go.
// Calls into allocator_space.cc only to free blocks (ReleaseRun) and to
// check and pin allocated ones.
//
// A cached run is a stretch of blocks whose last references went in one
// Free (one run of the freed list); it keeps that Free's stamp and is
// evicted as a whole. Lookup pins blocks out of cached runs, splitting them.
#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/allocator/block_allocator_impl.h"
#include "lib/common/tsan_lock.h"

namespace flowkv {
namespace {

// Eviction looks at this many of the least recently used cached runs and
// evicts the one that leaves the largest free hole (the oldest on ties).
constexpr int kEvictionWindow = 8;

absl::Status NoCache(const char* op) {
  return absl::FailedPreconditionError(absl::StrFormat(
      "%s: the allocator has no prefix cache (enable_prefix_cache)", op));
}

}  // namespace

absl::Status BlockAllocator::Impl::CacheBlocks(
    const BlockList& list, absl::Span<const BlockHash> hashes) {
  if (!cache_enabled_) return NoCache("CacheBlocks");
  internal::TsanMutexLock lock(&mu_);
  if (absl::Status s = CheckAllocated(list, "CacheBlocks"); !s.ok()) return s;
  if (absl::Status s = CheckHashes(list, hashes, "CacheBlocks"); !s.ok()) {
    return s;
  }
  RecordHashes(list, hashes);
  return absl::OkStatus();
}

absl::StatusOr<BlockList> BlockAllocator::Impl::Lookup(
    absl::Span<const BlockHash> hashes) {
  if (!cache_enabled_) return NoCache("Lookup");
  internal::TsanMutexLock lock(&mu_);
  ++lookups_;
  lookup_blocks_ += hashes.size();
  // A hit must be the same chain: hashes[i]'s block was recorded after
  // hashes[i - 1] (and hashes[0]'s as a chain's first block). This also
  // means no block is found twice.
  BlockList hit;
  for (size_t i = 0; i < hashes.size(); ++i) {
    auto it = index_.find(hashes[i]);
    if (it == index_.end()) break;
    const HashEntry& entry = hashes_.at(it->second);
    if (i == 0 ? entry.has_parent
               : !entry.has_parent || entry.parent != hashes[i - 1]) {
      break;
    }
    hit.Append(it->second, 1);
  }
  if (hit.empty()) return hit;
  for (const BlockRun& run : hit.runs()) Pin(run);
  lookup_hit_blocks_ += hit.num_blocks();
  CountList(hit.num_runs(), +1);
  return hit;
}

absl::Status BlockAllocator::Impl::ClearCache() {
  if (!cache_enabled_) return NoCache("ClearCache");
  internal::TsanMutexLock lock(&mu_);
  for (const auto& [first, run] : cached_) ReleaseRun(first, run.count);
  cached_.clear();
  lru_.clear();
  cached_blocks_ = 0;
  index_.clear();
  hashes_.clear();
  KvEvent event;
  event.kind = KvEvent::Kind::kAllCleared;
  events_.Publish(std::move(event));
  return absl::OkStatus();
}

KvEventBatch BlockAllocator::Impl::ReadEvents(uint64_t after_seq,
                                              size_t max_events) const {
  internal::TsanMutexLock lock(&mu_);
  return events_.Read(after_seq, max_events);
}

KvCacheSnapshot BlockAllocator::Impl::Snapshot() const {
  internal::TsanMutexLock lock(&mu_);
  KvCacheSnapshot snap;
  snap.seq = events_.latest_seq();
  snap.blocks.reserve(hashes_.size());
  for (const auto& [block, entry] : hashes_) {
    snap.blocks.push_back({.hash = entry.hash,
                           .has_parent = entry.has_parent,
                           .parent = entry.parent,
                           .block = block,
                           .in_use = !IsCached(block)});
  }
  std::sort(snap.blocks.begin(), snap.blocks.end(),
            [](const KvCachedBlock& a, const KvCachedBlock& b) {
              return a.block < b.block;
            });
  return snap;
}

void BlockAllocator::Impl::ReleaseHashed(BlockId first, uint32_t count,
                                         uint64_t stamp) {
  const uint64_t end = uint64_t{first} + count;
  uint64_t pos = first;
  while (pos < end) {
    const bool hashed = hashes_.contains(static_cast<BlockId>(pos));
    uint64_t stop = pos + 1;
    while (stop < end && hashes_.contains(static_cast<BlockId>(stop)) == hashed)
      ++stop;
    const auto piece = static_cast<uint32_t>(stop - pos);
    if (hashed) {
      InsertCached(static_cast<BlockId>(pos), piece, stamp);
    } else {
      ReleaseRun(static_cast<BlockId>(pos), piece);
    }
    pos = stop;
  }
}

absl::Status BlockAllocator::Impl::CheckHashes(
    const BlockList& list, absl::Span<const BlockHash> hashes,
    const char* op) const {
  if (hashes.size() > list.num_blocks()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %u hashes for a list of %u blocks (one hash per full block)", op,
        hashes.size(), list.num_blocks()));
  }
  size_t i = 0;
  for (const BlockRun& run : list.runs()) {
    for (uint64_t b = run.first; b < run.end() && i < hashes.size(); ++b, ++i) {
      auto it = hashes_.find(static_cast<BlockId>(b));
      if (it != hashes_.end() && it->second.hash != hashes[i]) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: block %u already holds hash %#x, not hashes[%u] = %#x", op, b,
            it->second.hash, i, hashes[i]));
      }
    }
  }
  return absl::OkStatus();
}

void BlockAllocator::Impl::RecordHashes(const BlockList& list,
                                        absl::Span<const BlockHash> hashes) {
  // One kBlockStored per stretch of newly recorded hashes.
  KvEvent event;
  BlockList stored;
  auto publish = [&] {
    if (event.hashes.empty()) return;
    event.kind = KvEvent::Kind::kBlockStored;
    event.runs.assign(stored.runs().begin(), stored.runs().end());
    events_.Publish(std::move(event));
    event = KvEvent();
    stored.Clear();
  };
  size_t i = 0;
  for (const BlockRun& run : list.runs()) {
    for (uint64_t pos = run.first; pos < run.end() && i < hashes.size();
         ++pos, ++i) {
      const auto block = static_cast<BlockId>(pos);
      const BlockHash hash = hashes[i];
      if (hashes_.contains(block) || index_.contains(hash)) {
        publish();  // Already this block's hash, or another block's.
        continue;
      }
      const bool has_parent = i > 0;
      const BlockHash parent = has_parent ? hashes[i - 1] : 0;
      if (event.hashes.empty()) {
        event.has_parent = has_parent;
        event.parent = parent;
      }
      event.hashes.push_back(hash);
      stored.Append(block, 1);
      index_.emplace(hash, block);
      hashes_.emplace(block, HashEntry{hash, parent, has_parent});
    }
  }
  publish();
}

void BlockAllocator::Impl::InsertCached(BlockId first, uint32_t count,
                                        uint64_t stamp) {
  cached_blocks_ += count;
  uint64_t end = uint64_t{first} + count;
  // Merge with the runs on either side released by the same Free.
  auto next = cached_.lower_bound(first);
  if (next != cached_.end() && next->first == end &&
      next->second.stamp == stamp) {
    end += next->second.count;
    lru_.erase({stamp, next->first});
    next = cached_.erase(next);
  }
  if (next != cached_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + uint64_t{prev->second.count} == first &&
        prev->second.stamp == stamp) {
      prev->second.count = static_cast<uint32_t>(end - prev->first);
      return;
    }
  }
  cached_.emplace(first, CachedRun{static_cast<uint32_t>(end - first), stamp});
  lru_.insert({stamp, first});
}

void BlockAllocator::Impl::TakeCached(BlockId first, uint32_t count) {
  cached_blocks_ -= count;
  const uint64_t end = uint64_t{first} + count;
  uint64_t pos = first;
  while (pos < end) {
    auto it = std::prev(cached_.upper_bound(static_cast<BlockId>(pos)));
    const BlockId run_first = it->first;
    const CachedRun run = it->second;
    const uint64_t run_end = uint64_t{run_first} + run.count;
    lru_.erase({run.stamp, run_first});
    cached_.erase(it);
    if (run_first < pos) {  // The head stays cached.
      cached_.emplace(
          run_first,
          CachedRun{static_cast<uint32_t>(pos - run_first), run.stamp});
      lru_.insert({run.stamp, run_first});
    }
    const uint64_t stop = std::min(run_end, end);
    if (stop < run_end) {  // So does the tail.
      cached_.emplace(
          static_cast<BlockId>(stop),
          CachedRun{static_cast<uint32_t>(run_end - stop), run.stamp});
      lru_.insert({run.stamp, static_cast<BlockId>(stop)});
    }
    pos = stop;
  }
}

void BlockAllocator::Impl::Pin(const BlockRun& run) {
  uint64_t pos = run.first;
  while (pos < run.end()) {
    const auto block = static_cast<BlockId>(pos);
    auto it = allocated_.upper_bound(block);
    if (it != allocated_.begin() &&
        std::prev(it)->first + uint64_t{std::prev(it)->second.count} > pos) {
      // Allocated up to the interval's end.
      --it;
      const uint64_t stop =
          std::min(run.end(), it->first + uint64_t{it->second.count});
      ForEachInterval({block, static_cast<uint32_t>(stop - pos)},
                      [](BlockId, Interval& interval) { ++interval.refs; });
      pos = stop;
      continue;
    }
    // Cached up to the cached run's end (or the next allocated interval).
    auto cached = std::prev(cached_.upper_bound(block));
    uint64_t stop =
        std::min(run.end(), cached->first + uint64_t{cached->second.count});
    if (it != allocated_.end()) stop = std::min<uint64_t>(stop, it->first);
    const auto n = static_cast<uint32_t>(stop - pos);
    TakeCached(block, n);
    allocated_.emplace(block, Interval{n, 1});
    pos = stop;
  }
}

void BlockAllocator::Impl::EvictFor(uint64_t n) {
  while (free_blocks_ < n && !lru_.empty()) {
    auto best = lru_.begin();
    uint64_t best_hole = 0;
    int looked = 0;
    for (auto it = lru_.begin(); it != lru_.end() && looked < kEvictionWindow;
         ++it, ++looked) {
      const BlockId first = it->second;
      const uint64_t end = first + uint64_t{cached_.at(first).count};
      uint64_t hole = end - first;
      auto next = free_by_start_.lower_bound(first);
      if (next != free_by_start_.end() && next->first == end) {
        hole += next->second;
      }
      if (next != free_by_start_.begin()) {
        auto prev = std::prev(next);
        if (prev->first + uint64_t{prev->second} == first) {
          hole += prev->second;
        }
      }
      if (hole > best_hole) {
        best = it;
        best_hole = hole;
      }
    }
    EvictRun(best->second);
  }
}

void BlockAllocator::Impl::EvictRun(BlockId first) {
  auto it = cached_.find(first);
  const CachedRun run = it->second;
  lru_.erase({run.stamp, first});
  cached_.erase(it);
  cached_blocks_ -= run.count;
  KvEvent event;
  event.kind = KvEvent::Kind::kBlockRemoved;
  event.hashes.reserve(run.count);
  DropHashes(first, run.count, &event.hashes);
  event.runs.push_back({first, run.count});
  ReleaseRun(first, run.count);
  ++evictions_;
  evicted_blocks_ += run.count;
  events_.Publish(std::move(event));
}

void BlockAllocator::Impl::DropHashes(BlockId first, uint32_t count,
                                      std::vector<BlockHash>* removed) {
  for (uint64_t pos = first; pos < uint64_t{first} + count; ++pos) {
    auto it = hashes_.find(static_cast<BlockId>(pos));
    removed->push_back(it->second.hash);
    index_.erase(it->second.hash);
    hashes_.erase(it);
  }
}

bool BlockAllocator::Impl::IsCached(BlockId block) const {
  auto it = cached_.upper_bound(block);
  if (it == cached_.begin()) return false;
  --it;
  return block < it->first + uint64_t{it->second.count};
}

}  // namespace flowkv
