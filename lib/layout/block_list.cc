// SPDX-License-Identifier: Apache-2.0
#include "flowkv/block_list.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace flowkv {

BlockList BlockList::FromRuns(absl::Span<const BlockRun> runs) {
  BlockList list;
  for (const BlockRun& run : runs) list.Append(run);
  return list;
}

BlockList BlockList::FromIds(absl::Span<const BlockId> ids) {
  BlockList list;
  for (BlockId id : ids) list.Append(id, 1);
  return list;
}

void BlockList::Append(BlockId first, uint32_t count) {
  if (count == 0) return;
  num_blocks_ += count;
  if (!runs_.empty()) {
    BlockRun& last = runs_.back();
    if (last.end() == first && uint64_t{last.count} + count <= UINT32_MAX) {
      last.count += count;
      return;
    }
  }
  runs_.push_back({first, count});
}

void BlockList::AppendList(const BlockList& other) {
  for (const BlockRun& run : other.runs_) Append(run);
}

std::vector<BlockId> BlockList::ToIds() const {
  std::vector<BlockId> ids;
  ids.reserve(num_blocks_);
  for (const BlockRun& run : runs_) {
    for (uint32_t i = 0; i < run.count; ++i) ids.push_back(run.first + i);
  }
  return ids;
}

BlockId BlockList::BlockAt(uint64_t index) const {
  for (const BlockRun& run : runs_) {
    if (index < run.count) return run.first + static_cast<BlockId>(index);
    index -= run.count;
  }
  return 0;  // Unreachable when the precondition holds.
}

std::string BlockList::ToString() const {
  return absl::StrCat("[",
                      absl::StrJoin(runs_, ", ",
                                    [](std::string* out, const BlockRun& r) {
                                      absl::StrAppend(out, r.first, "+",
                                                      r.count);
                                    }),
                      "]");
}

}  // namespace flowkv
