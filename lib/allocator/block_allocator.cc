// SPDX-License-Identifier: Apache-2.0
// BlockAllocator (include/flowkv/block_allocator.h): the public class, which
// forwards to BlockAllocator::Impl (block_allocator_impl.h lists the files
// that implement it), Create, Stats and PlanCompaction. The forwarding
// functions of the hot calls (Allocate, Extend, Free, Share) live in
// allocator_space.cc, beside what they call.
#include "flowkv/block_allocator.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "lib/allocator/block_allocator_impl.h"
#include "lib/common/tsan_lock.h"

namespace flowkv {

double BlockAllocatorStats::MeanRunsPerList() const {
  if (live_lists == 0) return 0;
  uint64_t runs = 0;
  for (const auto& [k, lists] : runs_histogram) runs += uint64_t{k} * lists;
  return static_cast<double>(runs) / static_cast<double>(live_lists);
}

BlockAllocatorStats BlockAllocator::Impl::Stats() const {
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
  stats.cached_blocks = cached_blocks_;
  stats.indexed_blocks = index_.size();
  stats.lookups = lookups_;
  stats.lookup_blocks = lookup_blocks_;
  stats.lookup_hit_blocks = lookup_hit_blocks_;
  stats.evictions = evictions_;
  stats.evicted_blocks = evicted_blocks_;
  stats.latest_event_seq = events_.latest_seq();
  return stats;
}

std::vector<BlockMove> BlockAllocator::Impl::PlanCompaction() const {
  internal::TsanMutexLock lock(&mu_);
  // Cached blocks are dropped: they count as holes, like free runs.
  std::vector<BlockRun> holes;
  holes.reserve(free_by_start_.size() + cached_.size());
  auto free_it = free_by_start_.begin();
  auto cached_it = cached_.begin();
  while (free_it != free_by_start_.end() || cached_it != cached_.end()) {
    BlockRun next;
    if (cached_it == cached_.end() || (free_it != free_by_start_.end() &&
                                       free_it->first < cached_it->first)) {
      next = {free_it->first, free_it->second};
      ++free_it;
    } else {
      next = {cached_it->first, cached_it->second.count};
      ++cached_it;
    }
    if (!holes.empty() && holes.back().end() == next.first) {
      holes.back().count += next.count;
    } else {
      holes.push_back(next);
    }
  }
  // Allocated blocks end up in [0, used); every allocated block at or
  // above `used` moves into a hole below it, lowest hole first.
  const uint64_t used = num_blocks_ - free_blocks_ - cached_blocks_;
  std::vector<BlockMove> moves;
  size_t hole = 0;
  uint64_t hole_pos = holes.empty() ? used : holes[0].first;
  uint64_t hole_left = holes.empty() ? 0 : holes[0].count;
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
      if (hole_left == 0 && ++hole < holes.size()) {
        hole_pos = holes[hole].first;
        hole_left = holes[hole].count;
      }
    }
  }
  return moves;
}

absl::StatusOr<std::unique_ptr<BlockAllocator>> BlockAllocator::Create(
    const BlockAllocatorOptions& options) {
  if (options.num_blocks == 0 || options.num_blocks == UINT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrFormat("BlockAllocator: num_blocks %u not in [1, %u]",
                        options.num_blocks, UINT32_MAX - 1));
  }
  return std::unique_ptr<BlockAllocator>(
      new BlockAllocator(std::make_unique<Impl>(options), options.num_blocks,
                         options.enable_prefix_cache));
}

BlockAllocator::BlockAllocator(std::unique_ptr<Impl> impl, uint32_t num_blocks,
                               bool prefix_cache_enabled)
    : impl_(std::move(impl)),
      num_blocks_(num_blocks),
      prefix_cache_enabled_(prefix_cache_enabled) {}
BlockAllocator::~BlockAllocator() = default;

absl::Status BlockAllocator::CacheBlocks(const BlockList& list,
                                         absl::Span<const BlockHash> hashes) {
  return impl_->CacheBlocks(list, hashes);
}
absl::StatusOr<BlockList> BlockAllocator::Lookup(
    absl::Span<const BlockHash> hashes) {
  return impl_->Lookup(hashes);
}
absl::Status BlockAllocator::ClearCache() { return impl_->ClearCache(); }
KvEventBatch BlockAllocator::ReadEvents(uint64_t after_seq,
                                        size_t max_events) const {
  return impl_->ReadEvents(after_seq, max_events);
}
KvCacheSnapshot BlockAllocator::Snapshot() const { return impl_->Snapshot(); }
uint32_t BlockAllocator::RefCount(BlockId block) const {
  return impl_->RefCount(block);
}
BlockAllocatorStats BlockAllocator::Stats() const { return impl_->Stats(); }
uint64_t BlockAllocator::free_blocks() const { return impl_->free_blocks(); }
uint64_t BlockAllocator::available_blocks() const {
  return impl_->available_blocks();
}
std::vector<BlockMove> BlockAllocator::PlanCompaction() const {
  return impl_->PlanCompaction();
}

}  // namespace flowkv
