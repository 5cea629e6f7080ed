// SPDX-License-Identifier: Apache-2.0
// BlockAllocator::Impl (block_allocator_impl.h): the free-run index and the
// allocated intervals, and the calls that move blocks between them:
// Allocate, Extend, Free, Share. Cached blocks are handed to prefix_cache.cc
// (Release, EvictFor, RecordHashes); nothing here reads the hash maps.
//
// Free space is kept as maximal free runs in two indexes: by start (for
// merging with neighbours) and by (size, start) (for best fit).
#include <algorithm>
#include <utility>

#include "absl/base/attributes.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/allocator/block_allocator_impl.h"
#include "lib/common/tsan_lock.h"

namespace flowkv {

BlockAllocator::Impl::Impl(const BlockAllocatorOptions& options)
    : num_blocks_(options.num_blocks),
      growth_slack_(options.growth_slack_blocks),
      cache_enabled_(options.enable_prefix_cache),
      events_(options.enable_prefix_cache ? options.event_buffer_capacity : 0) {
  internal::TsanMutexLock lock(&mu_);
  InsertFree(0, num_blocks_);
  free_blocks_ = num_blocks_;
}

absl::StatusOr<BlockList> BlockAllocator::Impl::Allocate(
    uint32_t n, const BlockRun* after) {
  if (n == 0) {
    return absl::InvalidArgumentError("Allocate: n must be > 0");
  }
  internal::TsanMutexLock lock(&mu_);
  if (absl::Status s = CheckAvailable(n); !s.ok()) return s;
  if (n > free_blocks_) EvictFor(n);
  BlockList list;
  if (after != nullptr) TakeAfter(after->end(), n, &list);
  TakeBestFit(n - static_cast<uint32_t>(list.num_blocks()), &list);
  CountList(list.num_runs(), +1);
  return list;
}

absl::Status BlockAllocator::Impl::Extend(BlockList* list, uint32_t n) {
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
  if (absl::Status s = CheckAvailable(n); !s.ok()) return s;
  if (n > free_blocks_) EvictFor(n);
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

absl::Status BlockAllocator::Impl::Free(const BlockList& list,
                                        absl::Span<const BlockHash> hashes) {
  internal::TsanMutexLock lock(&mu_);
  // The common case first, small enough to inline into BlockAllocator::Free.
  if (hashes.empty() && FreeWholeInterval(list)) return absl::OkStatus();
  return FreeLocked(list, hashes);
}

ABSL_ATTRIBUTE_NOINLINE absl::Status BlockAllocator::Impl::FreeLocked(
    const BlockList& list, absl::Span<const BlockHash> hashes) {
  if (!hashes.empty() && !cache_enabled_) {
    return absl::FailedPreconditionError(
        "Free: hashes given but the allocator has no prefix cache "
        "(enable_prefix_cache)");
  }
  if (absl::Status s = CheckAllocated(list, "Free"); !s.ok()) return s;
  if (!hashes.empty()) {
    if (absl::Status s = CheckHashes(list, hashes, "Free"); !s.ok()) return s;
    RecordHashes(list, hashes);
  }
  // The tail runs first: with older stamps, a prompt's tail is evicted
  // before its head.
  const auto runs = list.runs();
  for (size_t i = runs.size(); i-- > 0;) {
    const uint64_t stamp = ++clock_;
    ForEachInterval(runs[i], [&](BlockId first, Interval& interval) {
      if (--interval.refs > 0) return;
      const uint32_t count = interval.count;
      allocated_.erase(first);
      Release(first, count, stamp);
    });
  }
  CountList(list.num_runs(), -1);
  return absl::OkStatus();
}

absl::Status BlockAllocator::Impl::Share(const BlockList& list) {
  internal::TsanMutexLock lock(&mu_);
  if (absl::Status s = CheckAllocated(list, "Share"); !s.ok()) return s;
  for (const BlockRun& run : list.runs()) {
    ForEachInterval(run, [](BlockId, Interval& interval) { ++interval.refs; });
  }
  CountList(list.num_runs(), +1);
  return absl::OkStatus();
}

uint32_t BlockAllocator::Impl::RefCount(BlockId block) const {
  internal::TsanMutexLock lock(&mu_);
  return RefCountLocked(block);
}

uint64_t BlockAllocator::Impl::free_blocks() const {
  internal::TsanMutexLock lock(&mu_);
  return free_blocks_;
}

uint64_t BlockAllocator::Impl::available_blocks() const {
  internal::TsanMutexLock lock(&mu_);
  return free_blocks_ + cached_blocks_;
}

inline absl::Status BlockAllocator::Impl::CheckAvailable(uint32_t n) const {
  if (n <= free_blocks_) return absl::OkStatus();
  if (cached_blocks_ == 0) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "requested %u blocks, %u free of %u", n, free_blocks_, num_blocks_));
  }
  if (n > free_blocks_ + cached_blocks_) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("requested %u blocks, %u free and %u cached of %u", n,
                        free_blocks_, cached_blocks_, num_blocks_));
  }
  return absl::OkStatus();
}

inline uint32_t BlockAllocator::Impl::RefCountLocked(BlockId block) const {
  auto it = allocated_.upper_bound(block);
  if (it == allocated_.begin()) return 0;
  --it;
  return block < uint64_t{it->first} + it->second.count ? it->second.refs : 0;
}

absl::Status BlockAllocator::Impl::CheckAllocated(const BlockList& list,
                                                  const char* op) const {
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
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: blocks %u+%u are outside the pool of %u blocks",
                          op, run.first, run.count, num_blocks_));
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
inline bool BlockAllocator::Impl::FreeWholeInterval(const BlockList& list) {
  if (list.num_runs() != 1) return false;
  const BlockRun& run = list.runs()[0];
  auto it = allocated_.find(run.first);
  if (it == allocated_.end() || it->second.count != run.count ||
      it->second.refs != 1) {
    return false;
  }
  allocated_.erase(it);
  Release(run.first, run.count, ++clock_);
  CountList(1, -1);
  return true;
}

// Takes blocks [first, first + n) out of the free run starting at
// `run_first` (of `run_count` blocks) and appends them to `list`.
inline void BlockAllocator::Impl::Carve(BlockId run_first, uint32_t run_count,
                                        BlockId first, uint32_t n,
                                        BlockList* list) {
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
    InsertFree(static_cast<BlockId>(end), static_cast<uint32_t>(run_end - end));
  }
  allocated_.emplace(first, Interval{n, 1});
  free_blocks_ -= n;
  list->Append(first, n);
}

// Takes up to `n` free blocks starting exactly at `pos`, if free.
inline void BlockAllocator::Impl::TakeAfter(uint64_t pos, uint32_t n,
                                            BlockList* list) {
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
inline void BlockAllocator::Impl::TakeBestFit(uint32_t n, BlockList* list) {
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
inline BlockId BlockAllocator::Impl::PlaceIn(BlockId first, uint32_t count,
                                             uint32_t n) const {
  if (first == 0) return 0;  // Nothing before it can grow.
  return first + std::min(growth_slack_, (count - n) / 2);
}

// Takes `n` blocks for a list whose last run cannot grow in place: in a
// free run with growth_slack_ blocks of spare room when there is one,
// so the list's next blocks can follow in place; else as TakeBestFit.
inline void BlockAllocator::Impl::TakeForGrowth(uint32_t n, BlockList* list) {
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

// The public calls that land here, defined beside their Impl so that the
// compiler can inline it.
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
  return impl_->Free(list, {});
}
absl::Status BlockAllocator::Free(const BlockList& list,
                                  absl::Span<const BlockHash> hashes) {
  return impl_->Free(list, hashes);
}
absl::Status BlockAllocator::Share(const BlockList& list) {
  return impl_->Share(list);
}

}  // namespace flowkv
