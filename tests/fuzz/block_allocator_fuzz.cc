// SPDX-License-Identifier: Apache-2.0
// Fuzzes BlockAllocator (include/flowkv/block_allocator.h) with operation
// sequences read from the input: Allocate(n), Allocate(n, after),
// Extend(list, n), Free(list), Share(list), and Free / Share of lists the
// allocator never handed out (foreign ids, duplicates, blocks outside the
// pool), on a pool of 1..600 blocks.
//
// Checks every call against a reference: a per-block reference count (the
// bitmap of blocks in use, with counts for Share). A successful Allocate
// or Extend hands out exactly n blocks that were free; Free drops one
// reference per block; Share adds one; every error has the documented code
// (ResourceExhausted exactly when fewer blocks are free than asked,
// InvalidArgument for bad lists) and changes nothing. After every call,
// free_blocks() and Stats() agree with the reference; after every 8th call
// and the last, RefCount of every block too.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "flowkv/block_allocator.h"
#include "tests/fuzz/fuzz_input.h"

namespace flowkv {
namespace {

class Reference {
 public:
  explicit Reference(uint32_t num_blocks) : refs_(num_blocks, 0) {}

  uint64_t free_blocks() const {
    return static_cast<uint64_t>(std::count(refs_.begin(), refs_.end(), 0u));
  }
  // Whether every block of `list` is in the pool and allocated, none twice.
  bool AllAllocatedOnce(const BlockList& list) const {
    if (list.empty()) return false;
    std::vector<bool> seen(refs_.size(), false);
    for (BlockId id : list.ToIds()) {
      if (id >= refs_.size() || refs_[id] == 0 || seen[id]) return false;
      seen[id] = true;
    }
    return true;
  }
  // Takes blocks handed out by Allocate / Extend: each must have been free.
  void Take(const BlockList& list) {
    for (BlockId id : list.ToIds()) {
      FUZZ_CHECK(id < refs_.size(), "a block outside the pool");
      FUZZ_CHECK(refs_[id] == 0, "a block handed out twice");
      refs_[id] = 1;
    }
  }
  void Add(const BlockList& list, int delta) {
    for (BlockId id : list.ToIds()) refs_[id] += delta;
  }
  // The allocator agrees with the reference on the counts and, with
  // `every_block`, on every block's reference count.
  void Compare(const BlockAllocator& allocator, bool every_block) const {
    for (BlockId id = 0; every_block && id < refs_.size(); ++id) {
      FUZZ_CHECK(allocator.RefCount(id) == refs_[id]);
    }
    FUZZ_CHECK(allocator.RefCount(static_cast<BlockId>(refs_.size())) == 0);
    FUZZ_CHECK(allocator.free_blocks() == free_blocks());
    const BlockAllocatorStats stats = allocator.Stats();
    FUZZ_CHECK(stats.num_blocks == refs_.size());
    FUZZ_CHECK(stats.free_blocks == free_blocks());
    uint64_t runs = 0;
    uint64_t largest = 0;
    for (size_t i = 0; i < refs_.size();) {
      if (refs_[i] != 0) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < refs_.size() && refs_[j] == 0) ++j;
      ++runs;
      largest = std::max<uint64_t>(largest, j - i);
      i = j;
    }
    FUZZ_CHECK(stats.free_runs == runs);
    FUZZ_CHECK(stats.largest_free_run == largest);
  }

 private:
  std::vector<uint32_t> refs_;
};

// A list of up to four runs anywhere (possibly outside the pool, possibly
// repeating blocks).
BlockList ForeignList(fuzz::FuzzInput& in, uint32_t num_blocks) {
  BlockList list;
  const int runs = static_cast<int>(in.Range(1, 4));
  for (int i = 0; i < runs; ++i) {
    const auto first = static_cast<BlockId>(in.Range(0, num_blocks + 2));
    const auto count = static_cast<uint32_t>(in.Range(1, 8));
    if (uint64_t{first} + count > UINT32_MAX) continue;
    list.Append(first, count);
  }
  return list;
}

void CheckError(const absl::Status& status, absl::StatusCode code) {
  FUZZ_CHECK(status.code() == code, status.ToString());
  FUZZ_CHECK(!status.message().empty());
}

}  // namespace
}  // namespace flowkv

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv;  // NOLINT
  fuzz::FuzzInput in(data, size);
  const auto num_blocks = static_cast<uint32_t>(in.Range(1, 600));
  const auto slack = static_cast<uint32_t>(in.Range(0, 40));
  auto allocator = BlockAllocator::Create(
      {.num_blocks = num_blocks, .growth_slack_blocks = slack});
  FUZZ_CHECK(allocator.ok(), allocator.status().ToString());
  BlockAllocator& a = **allocator;
  Reference ref(num_blocks);
  std::vector<BlockList> lists;  // Lists handed out (some freed since).
  auto pick = [&]() -> BlockList& {
    return lists[in.Range(0, lists.size() - 1)];
  };
  for (int step = 0; step < 256 && !in.empty(); ++step) {
    const uint8_t op = in.U8() % 8;
    const auto n = static_cast<uint32_t>(
        in.U8() < 0xF8 ? in.Range(0, num_blocks / 4 + 2) : in.U32());
    const uint64_t free_before = ref.free_blocks();
    if (op <= 1 || lists.empty()) {
      // Allocate, with an `after` run half the time.
      BlockRun after{static_cast<BlockId>(in.Range(0, num_blocks)),
                     static_cast<uint32_t>(in.Range(0, 4))};
      absl::StatusOr<BlockList> got =
          op == 1 ? a.Allocate(n, after) : a.Allocate(n);
      if (n == 0) {
        CheckError(got.status(), absl::StatusCode::kInvalidArgument);
      } else if (n > free_before) {
        CheckError(got.status(), absl::StatusCode::kResourceExhausted);
      } else {
        FUZZ_CHECK(got.ok(), got.status().ToString());
        FUZZ_CHECK(got->num_blocks() == n);
        ref.Take(*got);
        lists.push_back(*std::move(got));
      }
    } else if (op == 2) {
      BlockList& list = pick();
      const BlockList before = list;
      const bool last_allocated =
          list.empty() ||
          a.RefCount(static_cast<BlockId>(list.runs().back().end() - 1)) > 0;
      absl::Status s = a.Extend(&list, n);
      if (n == 0) {
        FUZZ_CHECK(s.ok(), s.ToString());
        FUZZ_CHECK(list == before);
      } else if (!last_allocated) {
        CheckError(s, absl::StatusCode::kInvalidArgument);
        FUZZ_CHECK(list == before);
      } else if (n > free_before) {
        CheckError(s, absl::StatusCode::kResourceExhausted);
        FUZZ_CHECK(list == before);
      } else {
        FUZZ_CHECK(s.ok(), s.ToString());
        FUZZ_CHECK(list.num_blocks() == before.num_blocks() + n);
        // The old blocks stay first, in order; the new ones were free.
        const std::vector<BlockId> ids = list.ToIds();
        const std::vector<BlockId> old = before.ToIds();
        FUZZ_CHECK(std::equal(old.begin(), old.end(), ids.begin()));
        BlockList added;
        for (size_t i = old.size(); i < ids.size(); ++i)
          added.Append(ids[i], 1);
        ref.Take(added);
      }
    } else if (op == 3 || op == 4) {
      // Free (op 3) or Share (op 4) a list handed out earlier.
      const BlockList list = pick();
      const bool valid = ref.AllAllocatedOnce(list);
      absl::Status s = op == 3 ? a.Free(list) : a.Share(list);
      if (valid) {
        FUZZ_CHECK(s.ok(), s.ToString());
        ref.Add(list, op == 3 ? -1 : +1);
      } else {
        CheckError(s, absl::StatusCode::kInvalidArgument);
      }
    } else if (op == 5 || op == 6) {
      // Free (op 5) or Share (op 6) a list the allocator never handed out.
      const BlockList list = ForeignList(in, num_blocks);
      const bool valid = ref.AllAllocatedOnce(list);
      absl::Status s = op == 5 ? a.Free(list) : a.Share(list);
      if (valid) {
        FUZZ_CHECK(s.ok(), s.ToString());
        ref.Add(list, op == 5 ? -1 : +1);
      } else if (op == 5 || !list.empty()) {
        // Share of a list naming a block twice is not specified: skip the
        // code check then, but the comparison below still holds the state.
        std::vector<BlockId> ids = list.ToIds();
        std::sort(ids.begin(), ids.end());
        const bool repeats =
            std::adjacent_find(ids.begin(), ids.end()) != ids.end();
        if (op == 5 || !repeats) {
          CheckError(s, absl::StatusCode::kInvalidArgument);
        } else if (s.ok()) {
          ref.Add(list, +1);
        }
      }
    } else {
      // Free a list in full, then forget it.
      const size_t i = in.Range(0, lists.size() - 1);
      if (ref.AllAllocatedOnce(lists[i])) {
        absl::Status s = a.Free(lists[i]);
        FUZZ_CHECK(s.ok(), s.ToString());
        ref.Add(lists[i], -1);
      }
      lists.erase(lists.begin() + static_cast<ptrdiff_t>(i));
    }
    // Every block after every 8th call and at the end; the counts always.
    ref.Compare(a, step % 8 == 7 || in.empty());
  }
  ref.Compare(a, /*every_block=*/true);
  return 0;
}
