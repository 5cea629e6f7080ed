// SPDX-License-Identifier: Apache-2.0
// BlockAllocator: hands out KV cache blocks so that a request's blocks form
// as few contiguous runs as possible.
//
// The pool is the block ids [0, num_blocks). Free blocks are kept as maximal
// free runs, indexed by start and by size, so every call costs O(log F + k)
// (F free runs, k runs in the request's list):
//
//   * Allocate(n) takes one run when any free run holds n blocks (best fit:
//     the smallest such run, ties to the lowest address). Otherwise it takes
//     the fewest runs: the largest free runs first, the last piece from the
//     smallest run that holds the remainder. Inside a larger free run the
//     blocks leave some room (growth_slack_blocks) for the list before them.
//   * Extend(&list, n) grows the list's last run in place when the blocks
//     after it are free (decode growth); otherwise the new run goes where it
//     has room to keep growing.
//   * Free(list) merges the blocks back with their free neighbours.
//   * Share(list) adds a reference to allocated blocks (prefix caching); a
//     block returns to the free pool when its last reference is freed.
//
// Every failed call returns an error that says why and changes nothing:
// ResourceExhausted when fewer blocks are free than asked (with both
// numbers), InvalidArgument for ids outside the pool, blocks that are not
// allocated (double free, foreign ids) or a list that names a block twice.
//
//   auto allocator = flowkv::BlockAllocator::Create({.num_blocks = 4096});
//   absl::StatusOr<flowkv::BlockList> blocks = (*allocator)->Allocate(500);
//   ...
//   absl::Status s = (*allocator)->Extend(&*blocks, 1);   // one more block
//   s = (*allocator)->Free(*blocks);
//
// Thread safety: thread-safe (one internal absl::Mutex).

#ifndef FLOWKV_BLOCK_ALLOCATOR_H_
#define FLOWKV_BLOCK_ALLOCATOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"

namespace flowkv {

struct BlockAllocatorOptions {
  // Blocks in the pool, [1, 2^32 - 1]. Default: 0 (invalid: must be set).
  uint32_t num_blocks = 0;
  // Room kept for in-place growth. An allocation that lands in a larger free
  // run is placed after up to this many free blocks (at most half the spare
  // room), so the list ending right before that run can still Extend in
  // place; an Extend that cannot grow in place puts its new run in a free
  // run with this much spare room, so it can keep growing there. 0 places every
  // allocation at the start of its free run. Default: 32 (512 tokens of
  // 16-token blocks).
  uint32_t growth_slack_blocks = 32;
};

// A snapshot of the allocator's fragmentation.
struct FLOWKV_EXPORT BlockAllocatorStats {
  uint64_t num_blocks = 0;
  uint64_t free_blocks = 0;
  // Maximal runs of free blocks.
  uint64_t free_runs = 0;
  uint64_t largest_free_run = 0;
  // Live block lists (handed out by Allocate or Share, not yet freed).
  uint64_t live_lists = 0;
  // runs_histogram[k] = live lists made of k runs (k >= 1).
  std::map<uint32_t, uint64_t> runs_histogram;

  // Mean runs per live list (0 when there is none).
  double MeanRunsPerList() const;
};

// Moves `count` blocks from `from` to `to` (see PlanCompaction).
struct BlockMove {
  BlockId from = 0;
  BlockId to = 0;
  uint32_t count = 0;
};

class FLOWKV_EXPORT BlockAllocator {
 public:
  // InvalidArgument when num_blocks is 0 or UINT32_MAX.
  static absl::StatusOr<std::unique_ptr<BlockAllocator>> Create(
      const BlockAllocatorOptions& options);

  BlockAllocator(const BlockAllocator&) = delete;
  BlockAllocator& operator=(const BlockAllocator&) = delete;
  ~BlockAllocator();

  // `n` blocks as one run when possible, else the fewest runs.
  // InvalidArgument for n == 0; ResourceExhausted when fewer than n are free.
  absl::StatusOr<BlockList> Allocate(uint32_t n);

  // Like Allocate(n), but first takes the free blocks right after `after`
  // (up to n of them): a prefix-cached request continues its cached prefix
  // in place. Falls back to Allocate for the rest.
  absl::StatusOr<BlockList> Allocate(uint32_t n, const BlockRun& after);

  // Appends `n` blocks to `*list`, growing its last run in place when the
  // blocks after it are free. On error `*list` is unchanged.
  // InvalidArgument when `list` is null or the last block of a non-empty
  // `*list` is not allocated; ResourceExhausted when fewer than n blocks are
  // free.
  absl::Status Extend(BlockList* list, uint32_t n);

  // Drops one reference to each block of `list`; blocks whose last
  // reference goes are free again, merged with free neighbours.
  // InvalidArgument (nothing freed) when a block is not allocated or the
  // list names a block twice.
  absl::Status Free(const BlockList& list);

  // Adds a reference to each block of `list` (blocks shared by another
  // request, such as a cached prompt prefix). Each Share needs its own Free.
  // InvalidArgument (nothing changed) when a block is not allocated.
  absl::Status Share(const BlockList& list);

  // References held on `block` (0 when free or outside the pool).
  uint32_t RefCount(BlockId block) const;

  BlockAllocatorStats Stats() const;
  uint32_t num_blocks() const { return num_blocks_; }
  uint64_t free_blocks() const;

  // The block moves that would gather every allocated block at the start of
  // the pool, leaving one free run at the end: allocated blocks from the top
  // of the pool move into the lowest free holes. Moves are ordered so each
  // source is read before anything is written over it. The allocator does
  // not apply them: an engine that copies the data applies the moves to its
  // own lists, then frees its old lists and allocates new ones.
  std::vector<BlockMove> PlanCompaction() const;

 private:
  class Impl;
  explicit BlockAllocator(std::unique_ptr<Impl> impl, uint32_t num_blocks);

  std::unique_ptr<Impl> impl_;
  uint32_t num_blocks_;
};

}  // namespace flowkv

#endif  // FLOWKV_BLOCK_ALLOCATOR_H_
