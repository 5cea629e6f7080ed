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
// Prefix cache (opt-in: enable_prefix_cache). The caller names the content
// of a list's full blocks with chained block hashes (flowkv/kv_events.h):
//
//   * Free(list, hashes) (or CacheBlocks(list, hashes) while the request
//     still runs) records hashes[i] for the list's i-th block. A block with a
//     hash is findable by Lookup; when its last reference goes it is not
//     freed but kept as *cached*: still counted as allocatable space, but
//     reclaimed only when an Allocate or Extend needs the room.
//   * Lookup(hashes) returns the longest prefix of `hashes` that is cached,
//     as a list of runs, and pins it: one reference per block, dropped by
//     Free like any list. A request continues it in place with
//     Allocate(n, prefix.runs().back()).
//   * When free blocks run short, cached blocks are evicted least recently
//     used first, by whole cached runs (the blocks one Free released
//     together, tail of a prompt before its head); among the oldest few the
//     run whose eviction makes the largest free hole goes first. A block
//     with a reference (pinned, shared or running) is never evicted.
//   * Each hash stored and removed is published as a KvEvent (kv_events.h)
//     that a router reads with ReadEvents, or rebuilds from Snapshot.
//
// Every failed call returns an error that says why and changes nothing:
// ResourceExhausted when fewer blocks are free than asked (with both
// numbers), InvalidArgument for ids outside the pool, blocks that are not
// allocated (double free, foreign ids) or a list that names a block twice,
// FailedPrecondition for a prefix-cache call on an allocator without one.
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
#include "absl/types/span.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"
#include "flowkv/kv_events.h"

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
  // Keep freed blocks that carry a hash as cached (see the file comment).
  // Off, the hash-taking calls fail with FailedPrecondition and Free(list)
  // frees every block at once. Default: false.
  bool enable_prefix_cache = false;
  // Events kept for ReadEvents (the newest ones); a subscriber further
  // behind must resynchronise from Snapshot. 0 keeps none (every reader
  // behind the latest seq falls behind). Unused without the prefix cache.
  // Default: 4096.
  uint32_t event_buffer_capacity = 4096;
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

  // Prefix cache (all 0 without one).
  // Blocks kept with a hash and no reference: evictable, and allocatable
  // (free_blocks + cached_blocks can be allocated).
  uint64_t cached_blocks = 0;
  // Blocks Lookup can find: cached_blocks plus those still referenced.
  uint64_t indexed_blocks = 0;
  // Lookup calls, the hashes they asked for, and the blocks they returned
  // (hit rate = lookup_hit_blocks / lookup_blocks).
  uint64_t lookups = 0;
  uint64_t lookup_blocks = 0;
  uint64_t lookup_hit_blocks = 0;
  // Cached runs evicted to make room, and their blocks.
  uint64_t evictions = 0;
  uint64_t evicted_blocks = 0;
  // The newest event seq published (0 before the first).
  uint64_t latest_event_seq = 0;

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
  // (after = prefix.runs().back()) in place. Falls back to Allocate for the
  // rest. Cached blocks right after `after` are not taken (they hold other
  // content); they are evicted only as any Allocate evicts.
  //
  // With the prefix cache, Allocate and Extend count cached blocks as
  // available: when fewer than n blocks are free they first evict cached
  // runs (see the file comment), and fail with ResourceExhausted (changing
  // nothing) only when free + cached blocks are fewer than n.
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

  // Free(list) that first records hashes[i] as the content of the list's
  // i-th block (CacheBlocks). Blocks with a hash whose last reference goes
  // become cached instead of free; the rest are freed. A block that already
  // has a hash (it came from Lookup, or CacheBlocks) keeps it, and is cached
  // too under plain Free(list). An empty `hashes` is Free(list).
  // InvalidArgument (nothing changed) as Free, and as CacheBlocks;
  // FailedPrecondition without the prefix cache when `hashes` is not empty.
  absl::Status Free(const BlockList& list, absl::Span<const BlockHash> hashes);

  // Records hashes[i] as the content of the list's i-th block (the full
  // blocks of a running request, in token order) so that other requests'
  // Lookups find them now; the blocks stay allocated. Publishes one
  // kBlockStored event per stretch of newly recorded hashes. A block whose
  // hash is already held by another block is left without one (the other
  // block serves it); a block that already has this hash is unchanged.
  // InvalidArgument (nothing changed) when hashes.size() > the list's
  // blocks, a block is not allocated or named twice, or a block already has
  // a different hash; FailedPrecondition without the prefix cache.
  absl::Status CacheBlocks(const BlockList& list,
                           absl::Span<const BlockHash> hashes);

  // The longest cached prefix of `hashes` (hashes[0], hashes[1], ... up to
  // the first hash no block holds), as a list in token order, pinned: each
  // block gains one reference (a cached block leaves the evictable pool),
  // and the list counts as a live list until freed with Free. An empty list
  // (nothing pinned, nothing to free) when hashes[0] is not cached or
  // `hashes` is empty. FailedPrecondition without the prefix cache.
  absl::StatusOr<BlockList> Lookup(absl::Span<const BlockHash> hashes);

  // Drops every hash: cached blocks become free, blocks in use keep their
  // references but are no longer findable. Publishes kAllCleared.
  // FailedPrecondition without the prefix cache.
  absl::Status ClearCache();

  // The events with seq > after_seq, oldest first, at most max_events
  // (KvEventBatch says when the buffer no longer holds them). Without the
  // prefix cache: always empty, latest_seq 0.
  KvEventBatch ReadEvents(uint64_t after_seq, size_t max_events) const;

  // Every hash Lookup can find now, and the seq of the last event that
  // reflects it. Without the prefix cache: empty, seq 0.
  KvCacheSnapshot Snapshot() const;

  // Adds a reference to each block of `list` (blocks shared by another
  // request, such as a cached prompt prefix). Each Share needs its own Free.
  // InvalidArgument (nothing changed) when a block is not allocated.
  absl::Status Share(const BlockList& list);

  // References held on `block` (0 when free or outside the pool).
  uint32_t RefCount(BlockId block) const;

  BlockAllocatorStats Stats() const;
  uint32_t num_blocks() const { return num_blocks_; }
  // Blocks in no list and not cached.
  uint64_t free_blocks() const;
  // What Allocate can hand out: free_blocks() plus cached blocks.
  uint64_t available_blocks() const;
  bool prefix_cache_enabled() const { return prefix_cache_enabled_; }

  // The block moves that would gather every allocated block at the start of
  // the pool, leaving one free run at the end: allocated blocks from the top
  // of the pool move into the lowest free holes. Moves are ordered so each
  // source is read before anything is written over it. The allocator does
  // not apply them: an engine that copies the data applies the moves to its
  // own lists, then frees its old lists and allocates new ones.
  //
  // With the prefix cache the plan drops the cache: cached blocks count as
  // free holes (they are not moved), and blocks in use move whether or not
  // they carry a hash. Call ClearCache() before copying the data, since the
  // moves overwrite cached blocks and move hashed ones away from their ids.
  std::vector<BlockMove> PlanCompaction() const;

 private:
  class Impl;
  explicit BlockAllocator(std::unique_ptr<Impl> impl, uint32_t num_blocks,
                          bool prefix_cache_enabled);

  std::unique_ptr<Impl> impl_;
  uint32_t num_blocks_;
  bool prefix_cache_enabled_;
};

}  // namespace flowkv

#endif  // FLOWKV_BLOCK_ALLOCATOR_H_
