// SPDX-License-Identifier: Apache-2.0
#include "flowkv/block_allocator.h"

#include <algorithm>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "lib/common/tsan_lock.h"

namespace flowkv {

double BlockAllocatorStats::MeanRunsPerList() const {
  if (live_lists == 0) return 0;
  uint64_t runs = 0;
  for (const auto& [k, lists] : runs_histogram) runs += uint64_t{k} * lists;
  return static_cast<double>(runs) / static_cast<double>(live_lists);
}

// Free space is kept as maximal free runs in two indexes: by start (for
// merging with neighbours) and by (size, start) (for best fit). Allocated
// space is kept as intervals with a uniform reference count, keyed by start;
// intervals are split when a list covers part of one, never merged.
class BlockAllocator::Impl {
 public:
  Impl(uint32_t num_blocks, uint32_t growth_slack)
      : num_blocks_(num_blocks), growth_slack_(growth_slack) {
    InsertFree(0, num_blocks);
    free_blocks_ = num_blocks;
  }

  absl::StatusOr<BlockList> Allocate(uint32_t n, const BlockRun* after) {
    if (n == 0) {
      return absl::InvalidArgumentError("Allocate: n must be > 0");
    }
    internal::TsanMutexLock lock(&mu_);
    if (absl::Status s = CheckFree(n); !s.ok()) return s;
    BlockList list;
    if (after != nullptr) TakeAfter(after->end(), n, &list);
    TakeBestFit(n - static_cast<uint32_t>(list.num_blocks()), &list);
    CountList(list.num_runs(), +1);
    return list;
  }

  absl::Status Extend(BlockList* list, uint32_t n) {
    if (list == nullptr) {
      return absl::InvalidArgumentError("Extend: list is null");
    }
    if (n == 0) return absl::OkStatus();
    internal::TsanMutexLock lock(&mu_);
    if (!list->empty()) {
      const BlockRun& last = list->runs().back();
      const BlockId last_block = static_cast<BlockId>(last.end() - 1);
      if (last.end() > num_blocks_ || RefCountLocked(last_block) == 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "Extend: the list's last block %u is not allocated", last_block));
      }
    }
    if (absl::Status s = CheckFree(n); !s.ok()) return s;
    const size_t runs_before = list->num_runs();
    BlockList grown = *list;
    uint32_t taken = 0;
    if (!grown.empty()) {
      const uint64_t before = grown.num_blocks();
      TakeAfter(grown.runs().back().end(), n, &grown);
      taken = static_cast<uint32_t>(grown.num_blocks() - before);
    }
    TakeForGrowth(n - taken, &grown);
    if (runs_before > 0) CountList(runs_before, -1);
    CountList(grown.num_runs(), +1);
    *list = std::move(grown);
    return absl::OkStatus();
  }

  absl::Status Free(const BlockList& list) {
    internal::TsanMutexLock lock(&mu_);
    if (FreeWholeInterval(list)) return absl::OkStatus();
    if (absl::Status s = CheckAllocated(list, "Free"); !s.ok()) return s;
    for (const BlockRun& run : list.runs()) {
      ForEachInterval(run, [&](BlockId first, Interval& interval) {
        if (--interval.refs > 0) return;
        const uint32_t count = interval.count;
        allocated_.erase(first);
        ReleaseRun(first, count);
      });
    }
    CountList(list.num_runs(), -1);
    return absl::OkStatus();
  }

  absl::Status Share(const BlockList& list) {
    internal::TsanMutexLock lock(&mu_);
    if (absl::Status s = CheckAllocated(list, "Share"); !s.ok()) return s;
    for (const BlockRun& run : list.runs()) {
      ForEachInterval(run,
                      [](BlockId, Interval& interval) { ++interval.refs; });
    }
    CountList(list.num_runs(), +1);
    return absl::OkStatus();
  }

  uint32_t RefCount(BlockId block) const {
    internal::TsanMutexLock lock(&mu_);
    return RefCountLocked(block);
  }

  uint64_t free_blocks() const {
    internal::TsanMutexLock lock(&mu_);
    return free_blocks_;
  }

  BlockAllocatorStats Stats() const {
    internal::TsanMutexLock lock(&mu_);
    BlockAllocatorStats stats;
    stats.num_blocks = num_blocks_;
    stats.free_blocks = free_blocks_;
    stats.free_runs = free_by_start_.size();
    stats.largest_free_run =
        free_by_size_.empty() ? 0 : KeyCount(*free_by_size_.rbegin());
    for (size_t runs = 1; runs < runs_histogram_.size(); ++runs) {
      const uint64_t lists = runs_histogram_[runs];
      if (lists == 0) continue;
      stats.runs_histogram[static_cast<uint32_t>(runs)] = lists;
      stats.live_lists += lists;
    }
    return stats;
  }

  std::vector<BlockMove> PlanCompaction() const {
    internal::TsanMutexLock lock(&mu_);
    // Allocated blocks end up in [0, used); every allocated block at or
    // above `used` moves into a free hole below it, lowest hole first.
    const uint64_t used = num_blocks_ - free_blocks_;
    std::vector<BlockMove> moves;
    auto hole = free_by_start_.begin();
    uint64_t hole_pos = hole == free_by_start_.end() ? used : hole->first;
    uint64_t hole_left = hole == free_by_start_.end() ? 0 : hole->second;
    for (auto it = allocated_.lower_bound(0); it != allocated_.end(); ++it) {
      uint64_t src = it->first;
      uint64_t left = it->second.count;
      if (src + left <= used) continue;
      if (src < used) {  // Only the part at or above `used` moves.
        left -= used - src;
        src = used;
      }
      while (left > 0 && hole_pos < used) {
        const uint64_t n = std::min({left, hole_left, used - hole_pos});
        moves.push_back({static_cast<BlockId>(src),
                         static_cast<BlockId>(hole_pos),
                         static_cast<uint32_t>(n)});
        src += n;
        left -= n;
        hole_pos += n;
        hole_left -= n;
        if (hole_left == 0 && ++hole != free_by_start_.end()) {
          hole_pos = hole->first;
          hole_left = hole->second;
        }
      }
    }
    return moves;
  }

 private:
  struct Interval {
    uint32_t count;
    uint32_t refs;
  };

  absl::Status CheckFree(uint32_t n) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (n > free_blocks_) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "requested %u blocks, %u free of %u", n, free_blocks_, num_blocks_));
    }
    return absl::OkStatus();
  }

  uint32_t RefCountLocked(BlockId block) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = allocated_.upper_bound(block);
    if (it == allocated_.begin()) return 0;
    --it;
    return block < uint64_t{it->first} + it->second.count ? it->second.refs : 0;
  }

  // InvalidArgument unless every block of `list` is allocated and no block
  // appears twice. Reads only.
  absl::Status CheckAllocated(const BlockList& list, const char* op) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (list.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": empty block list"));
    }
    absl::InlinedVector<BlockRun, 8> sorted(list.runs().begin(),
                                            list.runs().end());
    std::sort(
        sorted.begin(), sorted.end(),
        [](const BlockRun& a, const BlockRun& b) { return a.first < b.first; });
    for (size_t i = 0; i < sorted.size(); ++i) {
      const BlockRun& run = sorted[i];
      if (run.end() > num_blocks_) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: blocks %u+%u are outside the pool of %u blocks", op, run.first,
            run.count, num_blocks_));
      }
      if (i > 0 && sorted[i - 1].end() > run.first) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: block %u appears twice in the list", op, run.first));
      }
      // Walk the allocated intervals covering the run; any gap is a block
      // that is not allocated.
      uint64_t pos = run.first;
      auto it = allocated_.upper_bound(run.first);
      if (it != allocated_.begin()) --it;
      for (; pos < run.end(); ++it) {
        if (it == allocated_.end() || it->first > pos ||
            uint64_t{it->first} + it->second.count <= pos) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: block %u is not allocated (double free or foreign id)", op,
              static_cast<BlockId>(pos)));
        }
        pos = uint64_t{it->first} + it->second.count;
      }
    }
    return absl::OkStatus();
  }

  // The common case of Free: a one-run list that is exactly one allocated
  // interval with a single reference. Frees it and returns true; returns
  // false (changing nothing) for anything else.
  bool FreeWholeInterval(const BlockList& list)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (list.num_runs() != 1) return false;
    const BlockRun& run = list.runs()[0];
    auto it = allocated_.find(run.first);
    if (it == allocated_.end() || it->second.count != run.count ||
        it->second.refs != 1) {
      return false;
    }
    allocated_.erase(it);
    ReleaseRun(run.first, run.count);
    CountList(1, -1);
    return true;
  }

  // Calls fn(first, interval) for each allocated interval that exactly
  // covers a part of `run`, splitting intervals at the run's edges first.
  // REQUIRES: CheckAllocated succeeded for the run.
  template <typename Fn>
  void ForEachInterval(const BlockRun& run, Fn fn)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
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

  // Makes `pos` the start of an interval if it lies inside one.
  void SplitAt(BlockId pos) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
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

  // The free-by-size index orders runs by size, then start: the best fit
  // for n is the first key >= SizeKey(n, 0).
  static uint64_t SizeKey(uint32_t count, BlockId first) {
    return uint64_t{count} << 32 | first;
  }
  static uint32_t KeyCount(uint64_t key) { return key >> 32; }
  static BlockId KeyFirst(uint64_t key) { return key & UINT32_MAX; }

  void InsertFree(BlockId first, uint32_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    free_by_start_.emplace(first, count);
    free_by_size_.insert(SizeKey(count, first));
  }

  // Takes blocks [first, first + n) out of the free run starting at
  // `run_first` (of `run_count` blocks) and appends them to `list`.
  void Carve(BlockId run_first, uint32_t run_count, BlockId first, uint32_t n,
             BlockList* list) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    free_by_size_.erase(SizeKey(run_count, run_first));
    if (first > run_first) {  // A free piece stays in front: shrink in place.
      free_by_start_.find(run_first)->second = first - run_first;
      free_by_size_.insert(SizeKey(first - run_first, run_first));
    } else {
      free_by_start_.erase(run_first);
    }
    const uint64_t end = uint64_t{first} + n;
    const uint64_t run_end = uint64_t{run_first} + run_count;
    if (end < run_end) {
      InsertFree(static_cast<BlockId>(end),
                 static_cast<uint32_t>(run_end - end));
    }
    allocated_.emplace(first, Interval{n, 1});
    free_blocks_ -= n;
    list->Append(first, n);
  }

  // Takes up to `n` free blocks starting exactly at `pos`, if free.
  void TakeAfter(uint64_t pos, uint32_t n, BlockList* list)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (pos >= num_blocks_) return;
    auto it = free_by_start_.upper_bound(static_cast<BlockId>(pos));
    if (it == free_by_start_.begin()) return;
    --it;
    const uint64_t run_end = uint64_t{it->first} + it->second;
    if (run_end <= pos) return;
    const uint32_t take =
        static_cast<uint32_t>(std::min<uint64_t>(n, run_end - pos));
    Carve(it->first, it->second, static_cast<BlockId>(pos), take, list);
  }

  // Takes `n` blocks: one run by best fit when one fits, else the largest
  // runs first and the remainder by best fit.
  // REQUIRES: n <= free_blocks_.
  void TakeBestFit(uint32_t n, BlockList* list)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (n > 0) {
      auto fit = free_by_size_.lower_bound(SizeKey(n, 0));
      if (fit != free_by_size_.end()) {
        const uint32_t count = KeyCount(*fit);
        const BlockId first = KeyFirst(*fit);
        Carve(first, count, PlaceIn(first, count, n), n, list);
        return;
      }
      const uint64_t largest = *free_by_size_.rbegin();
      const uint32_t count = KeyCount(largest);
      Carve(KeyFirst(largest), count, KeyFirst(largest), count, list);
      n -= count;
    }
  }

  // Where `n` blocks go inside the free run [first, first + count): after
  // up to growth_slack_ blocks (at most half of the spare room), so that the
  // allocated blocks right before the run can still grow in place.
  BlockId PlaceIn(BlockId first, uint32_t count, uint32_t n) const {
    if (first == 0) return 0;  // Nothing before it can grow.
    return first + std::min(growth_slack_, (count - n) / 2);
  }

  // Takes `n` blocks for a list whose last run cannot grow in place: in a
  // free run with growth_slack_ blocks of spare room when there is one,
  // so the list's next blocks can follow in place; else as TakeBestFit.
  void TakeForGrowth(uint32_t n, BlockList* list)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (n == 0) return;
    const uint64_t wanted = uint64_t{n} + growth_slack_;
    if (growth_slack_ > 0 && wanted <= UINT32_MAX) {
      auto fit =
          free_by_size_.lower_bound(SizeKey(static_cast<uint32_t>(wanted), 0));
      if (fit != free_by_size_.end()) {
        const uint32_t count = KeyCount(*fit);
        const BlockId first = KeyFirst(*fit);
        Carve(first, count, PlaceIn(first, count, n), n, list);
        return;
      }
    }
    TakeBestFit(n, list);
  }

  // Returns [first, first + count) to the free pool, merged with neighbours.
  void ReleaseRun(BlockId first, uint32_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
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

  void CountList(size_t runs, int delta) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (runs >= runs_histogram_.size()) runs_histogram_.resize(runs + 1, 0);
    uint64_t& lists = runs_histogram_[runs];
    if (delta > 0) {
      ++lists;
    } else if (lists > 0) {
      --lists;
    }
  }

  const uint32_t num_blocks_;
  const uint32_t growth_slack_;
  mutable absl::Mutex mu_;
  uint64_t free_blocks_ ABSL_GUARDED_BY(mu_) = 0;
  absl::btree_map<BlockId, uint32_t> free_by_start_ ABSL_GUARDED_BY(mu_);
  absl::btree_set<uint64_t> free_by_size_ ABSL_GUARDED_BY(mu_);
  absl::btree_map<BlockId, Interval> allocated_ ABSL_GUARDED_BY(mu_);
  // runs_histogram_[k]: live lists of k runs.
  std::vector<uint64_t> runs_histogram_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<BlockAllocator>> BlockAllocator::Create(
    const BlockAllocatorOptions& options) {
  if (options.num_blocks == 0 || options.num_blocks == UINT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrFormat("BlockAllocator: num_blocks %u not in [1, %u]",
                        options.num_blocks, UINT32_MAX - 1));
  }
  return std::unique_ptr<BlockAllocator>(new BlockAllocator(
      std::make_unique<Impl>(options.num_blocks, options.growth_slack_blocks),
      options.num_blocks, options.enable_prefix_cache));
}

BlockAllocator::BlockAllocator(std::unique_ptr<Impl> impl, uint32_t num_blocks,
                               bool prefix_cache_enabled)
    : impl_(std::move(impl)),
      num_blocks_(num_blocks),
      prefix_cache_enabled_(prefix_cache_enabled) {}
BlockAllocator::~BlockAllocator() = default;

absl::StatusOr<BlockList> BlockAllocator::Allocate(uint32_t n) {
  return impl_->Allocate(n, nullptr);
}
absl::StatusOr<BlockList> BlockAllocator::Allocate(uint32_t n,
                                                   const BlockRun& after) {
  return impl_->Allocate(n, &after);
}
absl::Status BlockAllocator::Extend(BlockList* list, uint32_t n) {
  return impl_->Extend(list, n);
}
absl::Status BlockAllocator::Free(const BlockList& list) {
  return impl_->Free(list);
}
absl::Status BlockAllocator::Share(const BlockList& list) {
  return impl_->Share(list);
}
uint32_t BlockAllocator::RefCount(BlockId block) const {
  return impl_->RefCount(block);
}
BlockAllocatorStats BlockAllocator::Stats() const { return impl_->Stats(); }
uint64_t BlockAllocator::free_blocks() const { return impl_->free_blocks(); }
uint64_t BlockAllocator::available_blocks() const {
  return impl_->free_blocks();
}
// STUB (API commit only): the prefix cache is implemented in the next commits.
absl::Status BlockAllocator::Free(const BlockList& list,
                                  absl::Span<const BlockHash> hashes) {
  if (hashes.empty()) return Free(list);
  return absl::UnimplementedError("prefix cache: not yet implemented");
}
absl::Status BlockAllocator::CacheBlocks(const BlockList&,
                                         absl::Span<const BlockHash>) {
  return absl::UnimplementedError("prefix cache: not yet implemented");
}
absl::StatusOr<BlockList> BlockAllocator::Lookup(absl::Span<const BlockHash>) {
  return absl::UnimplementedError("prefix cache: not yet implemented");
}
absl::Status BlockAllocator::ClearCache() {
  return absl::UnimplementedError("prefix cache: not yet implemented");
}
KvEventBatch BlockAllocator::ReadEvents(uint64_t, size_t) const { return {}; }
KvCacheSnapshot BlockAllocator::Snapshot() const { return {}; }
std::string EncodeKvEventBatch(const KvEventBatch&) { return {}; }
absl::StatusOr<KvEventBatch> DecodeKvEventBatch(std::string_view) {
  return absl::UnimplementedError("kv events wire: not yet implemented");
}
std::string EncodeKvCacheSnapshot(const KvCacheSnapshot&) { return {}; }
absl::StatusOr<KvCacheSnapshot> DecodeKvCacheSnapshot(std::string_view) {
  return absl::UnimplementedError("kv events wire: not yet implemented");
}
std::vector<BlockMove> BlockAllocator::PlanCompaction() const {
  return impl_->PlanCompaction();
}

}  // namespace flowkv
