// SPDX-License-Identifier: Apache-2.0
// BlockList: the KV blocks of one request, as a short list of contiguous runs.
//
// A request's blocks are identified by their block ids in a pool
// [0, num_blocks). The allocator hands them out as runs {first, count}; the
// order of the runs is the order of the request's tokens (run 0 holds the
// first tokens). Two requests with the same blocks in the same order have
// equal BlockLists.
//
//   flowkv::BlockList list;
//   list.Append(10, 4);   // blocks 10..13
//   list.Append(14, 2);   // merged: one run 10..15
//   list.Append(3, 1);    // a second run
//   assert(list.num_runs() == 2 && list.num_blocks() == 7);
//
// Thread safety: externally synchronized (a plain value type).

#ifndef FLOWKV_BLOCK_LIST_H_
#define FLOWKV_BLOCK_LIST_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/types/span.h"
#include "flowkv/export.h"

namespace flowkv {

// Block ids are 32-bit: a pool holds at most 2^32 - 1 blocks.
using BlockId = uint32_t;

// `count` consecutive block ids starting at `first`.
struct BlockRun {
  BlockId first = 0;
  uint32_t count = 0;

  // One past the last block of the run.
  uint64_t end() const { return uint64_t{first} + count; }
  friend bool operator==(const BlockRun&, const BlockRun&) = default;
};

class FLOWKV_EXPORT BlockList {
 public:
  BlockList() = default;
  // A list from runs, in order. Adjacent runs are merged; empty runs dropped.
  BlockList(std::initializer_list<BlockRun> runs) : BlockList(FromRuns(runs)) {}
  static BlockList FromRuns(absl::Span<const BlockRun> runs);

  // A list from individual block ids in token order (merges consecutive ids).
  static BlockList FromIds(absl::Span<const BlockId> ids);

  // Appends `count` blocks starting at `first`; extends the last run instead
  // when `first` is right after it. A zero count does nothing.
  void Append(BlockId first, uint32_t count);
  void Append(const BlockRun& run) { Append(run.first, run.count); }

  // Appends every run of `other`, merging at the seam.
  void AppendList(const BlockList& other);

  absl::Span<const BlockRun> runs() const { return runs_; }
  size_t num_runs() const { return runs_.size(); }
  // Total blocks over all runs.
  uint64_t num_blocks() const { return num_blocks_; }
  bool empty() const { return runs_.empty(); }

  // The block ids, in token order (for tests and for engines that want ids).
  std::vector<BlockId> ToIds() const;

  // The block holding the `index`-th block position of the request.
  // REQUIRES: index < num_blocks().
  BlockId BlockAt(uint64_t index) const;

  // "[10+6, 3+1]": first+count per run.
  std::string ToString() const;

  void Clear() {
    runs_.clear();
    num_blocks_ = 0;
  }

  friend bool operator==(const BlockList& a, const BlockList& b) {
    return a.runs_ == b.runs_;
  }

 private:
  absl::InlinedVector<BlockRun, 4> runs_;
  uint64_t num_blocks_ = 0;
};

}  // namespace flowkv

#endif  // FLOWKV_BLOCK_LIST_H_
