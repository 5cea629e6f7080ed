// SPDX-License-Identifier: Apache-2.0
// BlockAllocator::Impl: the state of one allocator and the class its files
// implement:
//
//   block_allocator.cc  the public class, Create, Stats, PlanCompaction
//   allocator_space.cc  the free-run index and the allocated intervals:
//                       Allocate, Extend, Free, Share
//   prefix_cache.cc     cached blocks: hashes, Lookup, CacheBlocks,
//                       eviction, ClearCache, Snapshot (publishes to
//                       kv_event_log.h)
//
// Every block is in exactly one state: free (in a free run), allocated (in
// an allocated interval, with a reference count > 0) or cached (in a cached
// run: it has a hash, no reference, and counts as allocatable). A block with
// a hash is either allocated or cached.

#ifndef FLOWKV_LIB_ALLOCATOR_BLOCK_ALLOCATOR_IMPL_H_
#define FLOWKV_LIB_ALLOCATOR_BLOCK_ALLOCATOR_IMPL_H_

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "flowkv/block_allocator.h"
#include "lib/allocator/kv_event_log.h"

namespace flowkv {

class BlockAllocator::Impl {
 public:
  explicit Impl(const BlockAllocatorOptions& options);

  // allocator_space.cc
  absl::StatusOr<BlockList> Allocate(uint32_t n, const BlockRun* after);
  absl::Status Extend(BlockList* list, uint32_t n);
  absl::Status Free(const BlockList& list, absl::Span<const BlockHash> hashes);
  absl::Status Share(const BlockList& list);
  uint32_t RefCount(BlockId block) const;
  uint64_t free_blocks() const;
  uint64_t available_blocks() const;

  // block_allocator.cc
  BlockAllocatorStats Stats() const;
  std::vector<BlockMove> PlanCompaction() const;

  // prefix_cache.cc
  absl::Status CacheBlocks(const BlockList& list,
                           absl::Span<const BlockHash> hashes);
  absl::StatusOr<BlockList> Lookup(absl::Span<const BlockHash> hashes);
  absl::Status ClearCache();
  KvEventBatch ReadEvents(uint64_t after_seq, size_t max_events) const;
  KvCacheSnapshot Snapshot() const;

 private:
  struct Interval {
    uint32_t count;
    uint32_t refs;
  };
  // A run of cached blocks released together; evicted as a whole.
  struct CachedRun {
    uint32_t count;
    uint64_t stamp;  // Larger = used more recently.
  };
  // The hash a block holds.
  struct HashEntry {
    BlockHash hash;
    BlockHash parent;
    bool has_parent;
  };

  // ---- allocator_space.cc ----
  // Free past its fast path (a whole single-reference interval).
  absl::Status FreeLocked(const BlockList& list,
                          absl::Span<const BlockHash> hashes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckAvailable(uint32_t n) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t RefCountLocked(BlockId block) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // InvalidArgument unless every block of `list` is allocated and no block
  // appears twice. Reads only.
  absl::Status CheckAllocated(const BlockList& list, const char* op) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool FreeWholeInterval(const BlockList& list)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Calls fn(first, interval) for each allocated interval that exactly
  // covers a part of `run`, splitting intervals at the run's edges first.
  // REQUIRES: every block of the run is allocated.
  template <typename Fn>
  void ForEachInterval(const BlockRun& run, Fn fn)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SplitAt(BlockId pos) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InsertFree(BlockId first, uint32_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Carve(BlockId run_first, uint32_t run_count, BlockId first, uint32_t n,
             BlockList* list) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TakeAfter(uint64_t pos, uint32_t n, BlockList* list)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TakeBestFit(uint32_t n, BlockList* list)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  BlockId PlaceIn(BlockId first, uint32_t count, uint32_t n) const;
  void TakeForGrowth(uint32_t n, BlockList* list)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns [first, first + count) to the free pool, merged with neighbours.
  void ReleaseRun(BlockId first, uint32_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountList(size_t runs, int delta) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // ---- prefix_cache.cc ----
  // Blocks [first, first + count) lost their last reference: those with a
  // hash become cached (with `stamp`), the others free. Inline: without
  // hashes (the cache off) it is ReleaseRun.
  void Release(BlockId first, uint32_t count, uint64_t stamp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (hashes_.empty()) {
      ReleaseRun(first, count);
    } else {
      ReleaseHashed(first, count, stamp);
    }
  }
  void ReleaseHashed(BlockId first, uint32_t count, uint64_t stamp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // InvalidArgument when hashes are longer than the list or a block already
  // holds a different hash. Reads only. REQUIRES: the list is allocated.
  absl::Status CheckHashes(const BlockList& list,
                           absl::Span<const BlockHash> hashes,
                           const char* op) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records the hashes (after CheckHashes) and publishes kBlockStored.
  void RecordHashes(const BlockList& list, absl::Span<const BlockHash> hashes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InsertCached(BlockId first, uint32_t count, uint64_t stamp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes [first, first + count) from the cached runs (all cached).
  void TakeCached(BlockId first, uint32_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pins the blocks of `run` (each allocated or cached): one more reference.
  void Pin(const BlockRun& run) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts cached runs until at least n blocks are free.
  // REQUIRES: n <= free_blocks_ + cached_blocks_.
  void EvictFor(uint64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictRun(BlockId first) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the hashes of [first, first + count); appends them to `removed`.
  void DropHashes(BlockId first, uint32_t count,
                  std::vector<BlockHash>* removed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsCached(BlockId block) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The free-by-size index orders runs by size, then start: the best fit
  // for n is the first key >= SizeKey(n, 0).
  static uint64_t SizeKey(uint32_t count, BlockId first) {
    return uint64_t{count} << 32 | first;
  }
  static uint32_t KeyCount(uint64_t key) { return key >> 32; }
  static BlockId KeyFirst(uint64_t key) { return key & UINT32_MAX; }

  const uint32_t num_blocks_;
  const uint32_t growth_slack_;
  const bool cache_enabled_;
  mutable absl::Mutex mu_;
  uint64_t free_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  absl::btree_map<BlockId, uint32_t> free_by_start_ ABSL_GUARDED_BY(mu_);
  absl::btree_set<uint64_t> free_by_size_ ABSL_GUARDED_BY(mu_);
  // Intervals with a uniform reference count, keyed by start; split when a
  // list covers part of one, never merged.
  absl::btree_map<BlockId, Interval> allocated_ ABSL_GUARDED_BY(mu_);
  // runs_histogram_[k]: live lists of k runs.
  std::vector<uint64_t> runs_histogram_ ABSL_GUARDED_BY(mu_);

  // Prefix cache: hash -> block and block -> hash (both ways unique).
  absl::flat_hash_map<BlockHash, BlockId> index_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<BlockId, HashEntry> hashes_ ABSL_GUARDED_BY(mu_);
  // Cached runs by start, and by (stamp, start): oldest first.
  absl::btree_map<BlockId, CachedRun> cached_ ABSL_GUARDED_BY(mu_);
  absl::btree_set<std::pair<uint64_t, BlockId>> lru_ ABSL_GUARDED_BY(mu_);
  uint64_t cached_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t lookups_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t lookup_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t lookup_hit_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evicted_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  internal::KvEventLog events_ ABSL_GUARDED_BY(mu_);
};

template <typename Fn>
inline void BlockAllocator::Impl::ForEachInterval(const BlockRun& run, Fn fn) {
  SplitAt(run.first);
  SplitAt(static_cast<BlockId>(std::min<uint64_t>(run.end(), num_blocks_)));
  auto it = allocated_.find(run.first);
  while (it != allocated_.end() && it->first < run.end()) {
    const BlockId first = it->first;
    fn(first, it->second);
    // fn may erase the interval: find the successor by key.
    it = allocated_.upper_bound(first);
  }
}

// The free-run index's hot helpers, inline for Allocate and Free (their
// callers are in allocator_space.cc and prefix_cache.cc).

// Makes `pos` the start of an interval if it lies inside one.
inline void BlockAllocator::Impl::SplitAt(BlockId pos) {
  auto it = allocated_.upper_bound(pos);
  if (it == allocated_.begin()) return;
  --it;
  const uint64_t end = uint64_t{it->first} + it->second.count;
  if (it->first == pos || end <= pos) return;
  const uint32_t head = pos - it->first;
  const Interval tail{static_cast<uint32_t>(end - pos), it->second.refs};
  it->second.count = head;
  allocated_.emplace(pos, tail);
}

inline void BlockAllocator::Impl::InsertFree(BlockId first, uint32_t count) {
  free_by_start_.emplace(first, count);
  free_by_size_.insert(SizeKey(count, first));
}

inline void BlockAllocator::Impl::ReleaseRun(BlockId first, uint32_t count) {
  free_blocks_ += count;
  uint64_t end = uint64_t{first} + count;
  // The free run after [first, end) can only start at `end` or later.
  auto next = free_by_start_.lower_bound(first);
  if (next != free_by_start_.end() && next->first == end) {
    end += next->second;
    free_by_size_.erase(SizeKey(next->second, next->first));
    next = free_by_start_.erase(next);
  }
  if (next != free_by_start_.begin()) {
    auto prev = std::prev(next);
    if (uint64_t{prev->first} + prev->second == first) {
      // Grow the free run before it in place.
      free_by_size_.erase(SizeKey(prev->second, prev->first));
      prev->second = static_cast<uint32_t>(end - prev->first);
      free_by_size_.insert(SizeKey(prev->second, prev->first));
      return;
    }
  }
  InsertFree(first, static_cast<uint32_t>(end - first));
}

inline void BlockAllocator::Impl::CountList(size_t runs, int delta) {
  if (runs >= runs_histogram_.size()) runs_histogram_.resize(runs + 1, 0);
  uint64_t& lists = runs_histogram_[runs];
  if (delta > 0) {
    ++lists;
  } else if (lists > 0) {
    --lists;
  }
}

}  // namespace flowkv

#endif  // FLOWKV_LIB_ALLOCATOR_BLOCK_ALLOCATOR_IMPL_H_
