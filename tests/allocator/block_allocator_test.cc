// SPDX-License-Identifier: Apache-2.0
#include "flowkv/block_allocator.h"

#include <random>

#include <catch2/catch.hpp>

namespace flowkv {
namespace {

// growth_slack_blocks = 0 unless given: every allocation starts its free
// run, so tests can name exact positions.
std::unique_ptr<BlockAllocator> MakeAllocator(uint32_t num_blocks,
                                              uint32_t growth_slack = 0) {
  auto allocator = BlockAllocator::Create(
      {.num_blocks = num_blocks, .growth_slack_blocks = growth_slack});
  REQUIRE(allocator.ok());
  return *std::move(allocator);
}

BlockList MustAllocate(BlockAllocator& allocator, uint32_t n) {
  absl::StatusOr<BlockList> list = allocator.Allocate(n);
  REQUIRE(list.ok());
  return *std::move(list);
}

// Leaves free holes of the given sizes separated by one allocated block,
// starting at block 0: returns the separators and fills `holes` with the
// free holes' first block.
void MakeHoles(BlockAllocator& allocator, std::vector<uint32_t> sizes,
               std::vector<BlockId>* holes) {
  std::vector<BlockList> fillers;
  for (uint32_t size : sizes) {
    fillers.push_back(MustAllocate(allocator, size));
    MustAllocate(allocator, 1);  // separator, kept
  }
  for (const BlockList& f : fillers) {
    holes->push_back(f.runs()[0].first);
    REQUIRE(allocator.Free(f).ok());
  }
}

TEST_CASE("Create rejects an empty pool", "[allocator]") {
  CHECK(BlockAllocator::Create({.num_blocks = 0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Allocate takes the smallest free run that fits, lowest on ties",
          "[allocator]") {
  auto allocator = MakeAllocator(100);
  std::vector<BlockId> holes;
  MakeHoles(*allocator, {8, 4, 6, 4}, &holes);  // holes at 0, 9, 14, 21
  // Free: [0,8) [9,13) [14,20) [21,25) [26,100)
  BlockList a = MustAllocate(*allocator, 4);
  CHECK(a == BlockList({{holes[1], 4}}));  // the first 4-hole, not the 2nd
  BlockList b = MustAllocate(*allocator, 4);
  CHECK(b == BlockList({{holes[3], 4}}));
  BlockList c = MustAllocate(*allocator, 5);
  CHECK(c == BlockList({{holes[2], 5}}));  // 6 is the best fit for 5
  BlockList d = MustAllocate(*allocator, 20);
  CHECK(d == BlockList({{26, 20}}));
}

TEST_CASE("Without a fitting run, the fewest runs, largest first",
          "[allocator]") {
  auto allocator = MakeAllocator(40);
  std::vector<BlockId> holes;
  MakeHoles(*allocator, {3, 9, 5, 2}, &holes);         // ends at 23 allocated
  BlockList tail = MustAllocate(*allocator, 40 - 23);  // fill the rest
  // Free holes: 3, 9, 5, 2. Ask 12: 9 (largest) then 3 by best fit.
  BlockList list = MustAllocate(*allocator, 12);
  REQUIRE(list.num_runs() == 2);
  CHECK(list.runs()[0] == BlockRun{holes[1], 9});
  CHECK(list.runs()[1] == BlockRun{holes[0], 3});
  CHECK(allocator->free_blocks() == 7);
}

TEST_CASE("Free merges with every combination of neighbours", "[allocator]") {
  // Layout: [A 0..4)[B 4..8)[C 8..12) rest free from 12.
  struct Case {
    bool free_left;
    bool free_right;
    uint64_t expected_runs;
  };
  for (const Case& c : {Case{false, false, 2}, Case{true, false, 2},
                        Case{false, true, 1}, Case{true, true, 1}}) {
    auto allocator = MakeAllocator(16);
    BlockList a = MustAllocate(*allocator, 4);
    BlockList b = MustAllocate(*allocator, 4);
    BlockList cc = MustAllocate(*allocator, 4);
    if (c.free_left) REQUIRE(allocator->Free(a).ok());
    if (c.free_right) REQUIRE(allocator->Free(cc).ok());
    REQUIRE(allocator->Free(b).ok());
    const BlockAllocatorStats stats = allocator->Stats();
    INFO("left=" << c.free_left << " right=" << c.free_right);
    // Blocks 12..16 are always free; B joins whichever neighbours are free.
    CHECK(stats.free_runs == c.expected_runs);
    const uint64_t expected_largest =
        c.free_right ? (c.free_left ? 16 : 12) : (c.free_left ? 8 : 4);
    CHECK(stats.largest_free_run == expected_largest);
  }
}

TEST_CASE("Extend grows in place, else adds a run", "[allocator]") {
  auto allocator = MakeAllocator(32);
  BlockList list = MustAllocate(*allocator, 4);  // 0..4
  REQUIRE(allocator->Extend(&list, 2).ok());
  CHECK(list == BlockList({{0, 6}}));
  BlockList blocker = MustAllocate(*allocator, 1);  // 6
  REQUIRE(allocator->Extend(&list, 3).ok());
  CHECK(list.num_runs() == 2);
  CHECK(list.runs()[1] == BlockRun{7, 3});
  CHECK(list.num_blocks() == 9);
  CHECK(allocator->Stats().runs_histogram.at(2) == 1);

  // Extending a list that the allocator did not hand out is refused.
  BlockList foreign({{20, 1}});
  CHECK(allocator->Extend(&foreign, 1).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(foreign == BlockList({{20, 1}}));
}

TEST_CASE("Extend with a null list is InvalidArgument and changes nothing",
          "[allocator]") {
  // Regression: Extend(nullptr, n) dereferenced the list.
  auto allocator = MakeAllocator(8);
  for (uint32_t n : {0u, 1u}) {
    const absl::Status s = allocator->Extend(nullptr, n);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains("list"));
  }
  CHECK(allocator->free_blocks() == 8);
}

TEST_CASE("Growth slack keeps room for the list before a free run",
          "[allocator]") {
  auto allocator = MakeAllocator(100, /*growth_slack=*/8);
  BlockList first = MustAllocate(*allocator, 10);  // pool start: 0..10
  CHECK(first == BlockList({{0, 10}}));
  // The next list lands 8 blocks after the first (spare room 90 >= 16).
  BlockList second = MustAllocate(*allocator, 10);
  CHECK(second == BlockList({{18, 10}}));
  // Both can now grow in place.
  REQUIRE(allocator->Extend(&first, 8).ok());
  CHECK(first == BlockList({{0, 18}}));
  REQUIRE(allocator->Extend(&second, 4).ok());
  CHECK(second == BlockList({{18, 14}}));
  // A small spare room is split in half: 4 spare blocks -> 2 in front.
  auto small = MakeAllocator(20, /*growth_slack=*/8);
  BlockList a = MustAllocate(*small, 4);
  BlockList b = MustAllocate(*small, 12);
  CHECK(b == BlockList({{6, 12}}));
  // A blocked list continues where it has room to keep growing: in the
  // free run with the most room, not in the 2-block hole before b.
  auto blocked = MakeAllocator(200, /*growth_slack=*/8);
  BlockList x = MustAllocate(*blocked, 10);   // 0..10
  BlockList y = MustAllocate(*blocked, 10);   // 18..28
  BlockList z = MustAllocate(*blocked, 150);  // after y's slack
  REQUIRE(blocked->Extend(&x, 9).ok());       // 8 in place + 1 more
  REQUIRE(x.num_runs() == 2);
  const BlockRun moved = x.runs()[1];
  REQUIRE(blocked->Extend(&x, 3).ok());  // grows in place again
  CHECK(x.num_runs() == 2);
  CHECK(x.runs()[1] == BlockRun{moved.first, 4});
  (void)y;
  (void)z;
}

TEST_CASE("Allocate after a run continues it in place", "[allocator]") {
  auto allocator = MakeAllocator(64);
  BlockList prefix = MustAllocate(*allocator, 8);  // 0..8
  BlockList other = MustAllocate(*allocator, 8);   // 8..16
  REQUIRE(allocator->Free(other).ok());
  absl::StatusOr<BlockList> rest = allocator->Allocate(4, prefix.runs()[0]);
  REQUIRE(rest.ok());
  CHECK(*rest == BlockList({{8, 4}}));
  // When the blocks after the hint are taken, it falls back to best fit.
  absl::StatusOr<BlockList> more = allocator->Allocate(2, prefix.runs()[0]);
  REQUIRE(more.ok());
  CHECK(*more == BlockList({{12, 2}}));
}

TEST_CASE("Exhaustion fails with both numbers and changes nothing",
          "[allocator]") {
  auto allocator = MakeAllocator(10);
  BlockList list = MustAllocate(*allocator, 7);
  const BlockAllocatorStats before = allocator->Stats();
  absl::StatusOr<BlockList> big = allocator->Allocate(4);
  REQUIRE(big.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(big.status().message()),
             Catch::Contains("requested 4") && Catch::Contains("3 free"));
  BlockList copy = list;
  CHECK(allocator->Extend(&copy, 4).code() ==
        absl::StatusCode::kResourceExhausted);
  CHECK(copy == list);
  const BlockAllocatorStats after = allocator->Stats();
  CHECK(after.free_blocks == before.free_blocks);
  CHECK(after.free_runs == before.free_runs);
  CHECK(after.live_lists == before.live_lists);
  CHECK(allocator->Allocate(0).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Double free, foreign ids and repeated blocks are rejected",
          "[allocator]") {
  auto allocator = MakeAllocator(16);
  BlockList a = MustAllocate(*allocator, 4);
  BlockList b = MustAllocate(*allocator, 4);
  REQUIRE(allocator->Free(a).ok());
  const BlockAllocatorStats before = allocator->Stats();
  CHECK(allocator->Free(a).code() == absl::StatusCode::kInvalidArgument);
  CHECK(allocator->Free(BlockList({{14, 1}})).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(allocator->Free(BlockList({{15, 5}})).code() ==
        absl::StatusCode::kInvalidArgument);
  // Partly allocated: b's blocks plus a free one. Nothing may be freed.
  CHECK(allocator->Free(BlockList({{4, 5}})).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(allocator->Free(BlockList({{4, 2}, {5, 1}})).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(allocator->RefCount(4) == 1);
  const BlockAllocatorStats after = allocator->Stats();
  CHECK(after.free_blocks == before.free_blocks);
  CHECK(after.free_runs == before.free_runs);
  REQUIRE(allocator->Free(b).ok());
  CHECK(allocator->Stats().free_runs == 1);
}

TEST_CASE("Shared blocks stay allocated until every reference is freed",
          "[allocator]") {
  auto allocator = MakeAllocator(32);
  BlockList prompt = MustAllocate(*allocator, 8);
  // A second request shares the first 4 blocks (a cached prefix).
  BlockList prefix({{prompt.runs()[0].first, 4}});
  REQUIRE(allocator->Share(prefix).ok());
  CHECK(allocator->RefCount(0) == 2);
  CHECK(allocator->RefCount(5) == 1);
  REQUIRE(allocator->Free(prompt).ok());
  CHECK(allocator->RefCount(0) == 1);
  CHECK(allocator->RefCount(5) == 0);
  CHECK(allocator->free_blocks() == 28);
  REQUIRE(allocator->Free(prefix).ok());
  CHECK(allocator->free_blocks() == 32);
  CHECK(allocator->Stats().free_runs == 1);
  CHECK(allocator->Share(prefix).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("PlanCompaction moves the top blocks into the lowest holes",
          "[allocator]") {
  auto allocator = MakeAllocator(20);
  std::vector<BlockId> holes;
  MakeHoles(*allocator, {2, 3}, &holes);  // holes [0,2) [3,6); 2, 6 taken
  BlockList top = MustAllocate(*allocator, 14);  // best fit: 7..20? no: 7+14
  (void)top;
  const uint64_t used = 20 - allocator->free_blocks();
  std::vector<BlockMove> moves = allocator->PlanCompaction();
  // Apply the moves to a bitmap of the pool: all used blocks must end in
  // [0, used) and nothing may be read after being overwritten.
  std::vector<int> owner(20, -1);
  for (BlockId b = 0; b < 20; ++b)
    if (allocator->RefCount(b) > 0) owner[b] = b;
  for (const BlockMove& m : moves) {
    for (uint32_t i = 0; i < m.count; ++i) {
      REQUIRE(owner[m.to + i] == -1);
      REQUIRE(owner[m.from + i] != -1);
      owner[m.to + i] = owner[m.from + i];
      owner[m.from + i] = -1;
    }
  }
  for (BlockId b = 0; b < 20; ++b) CHECK((owner[b] != -1) == (b < used));
}

// A bitmap model of the pool, the reference the allocator is checked
// against after every operation.
struct Model {
  explicit Model(uint32_t n) : refs(n, 0) {}
  std::vector<uint32_t> refs;

  uint64_t FreeBlocks() const {
    return std::count(refs.begin(), refs.end(), 0u);
  }
  // Maximal free runs, in address order.
  std::vector<BlockRun> FreeRuns() const {
    std::vector<BlockRun> runs;
    for (uint32_t i = 0; i < refs.size();) {
      if (refs[i] != 0) {
        ++i;
        continue;
      }
      uint32_t j = i;
      while (j < refs.size() && refs[j] == 0) ++j;
      runs.push_back({i, j - i});
      i = j;
    }
    return runs;
  }
};

TEST_CASE("Random operations match a bitmap model", "[allocator][model]") {
  constexpr uint32_t kBlocks = 1024;
  constexpr int kOps = 120000;
  const uint32_t slack = GENERATE(0u, 32u);
  INFO("growth_slack_blocks " << slack);
  auto allocator = MakeAllocator(kBlocks, slack);
  Model model(kBlocks);
  std::vector<BlockList> live;
  std::vector<BlockList> dead;  // freed lists, for double-free attempts
  std::mt19937_64 rng(12345);
  auto pick = [&](size_t n) {
    return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
  };
  auto add_refs = [&](const BlockList& list, int delta) {
    for (BlockId id : list.ToIds()) model.refs[id] += delta;
  };

  for (int op = 0; op < kOps; ++op) {
    const int kind = static_cast<int>(pick(100));
    INFO("op " << op << " kind " << kind);
    if (kind < 35) {  // Allocate, sometimes more than is free
      const uint32_t n = 1 + static_cast<uint32_t>(pick(kind < 2 ? 2048 : 96));
      const std::vector<BlockRun> free_runs = model.FreeRuns();
      absl::StatusOr<BlockList> list = allocator->Allocate(n);
      if (n > model.FreeBlocks()) {
        REQUIRE(list.status().code() == absl::StatusCode::kResourceExhausted);
        continue;
      }
      REQUIRE(list.ok());
      REQUIRE(list->num_blocks() == n);
      for (BlockId id : list->ToIds()) REQUIRE(model.refs[id] == 0);
      // Best fit: the smallest free run that holds n, lowest on ties.
      const BlockRun* best = nullptr;
      for (const BlockRun& r : free_runs)
        if (r.count >= n && (best == nullptr || r.count < best->count))
          best = &r;
      if (best != nullptr) {
        // One run inside the best fit; at its start without slack.
        REQUIRE(list->num_runs() == 1);
        const BlockRun got = list->runs()[0];
        REQUIRE(got.first >= best->first);
        REQUIRE(got.end() <= best->end());
        if (slack == 0) REQUIRE(got.first == best->first);
      } else {
        // Fewest runs: as many as the largest runs need to reach n.
        std::vector<uint32_t> sizes;
        for (const BlockRun& r : free_runs) sizes.push_back(r.count);
        std::sort(sizes.rbegin(), sizes.rend());
        size_t needed = 0;
        for (uint64_t sum = 0; sum < n; ++needed) sum += sizes[needed];
        REQUIRE(list->num_runs() == needed);
      }
      add_refs(*list, +1);
      live.push_back(*std::move(list));
    } else if (kind < 50 && !live.empty()) {  // Extend (decode growth)
      const size_t i = pick(live.size());
      const uint32_t n = 1 + static_cast<uint32_t>(pick(4));
      BlockList before = live[i];
      const BlockRun last = before.runs().back();
      const bool next_free =
          last.end() < kBlocks && model.refs[last.end()] == 0;
      absl::Status s = allocator->Extend(&live[i], n);
      if (n > model.FreeBlocks()) {
        REQUIRE(s.code() == absl::StatusCode::kResourceExhausted);
        REQUIRE(live[i] == before);
        continue;
      }
      REQUIRE(s.ok());
      REQUIRE(live[i].num_blocks() == before.num_blocks() + n);
      // In place when the next block was free.
      if (next_free)
        REQUIRE(live[i].runs()[before.num_runs() - 1].count > last.count);
      const std::vector<BlockId> ids = live[i].ToIds();
      for (size_t k = before.num_blocks(); k < ids.size(); ++k) {
        REQUIRE(model.refs[ids[k]] == 0);
        model.refs[ids[k]] = 1;
      }
    } else if (kind < 85 && !live.empty()) {  // Free
      const size_t i = pick(live.size());
      REQUIRE(allocator->Free(live[i]).ok());
      add_refs(live[i], -1);
      dead.push_back(live[i]);
      live[i] = live.back();
      live.pop_back();
    } else if (kind < 92 && !live.empty()) {  // Share a prefix
      const size_t i = pick(live.size());
      const BlockRun first = live[i].runs()[0];
      BlockList prefix(
          {{first.first, 1 + static_cast<uint32_t>(pick(first.count))}});
      REQUIRE(allocator->Share(prefix).ok());
      add_refs(prefix, +1);
      live.push_back(prefix);
    } else if (!dead.empty()) {  // Free a list that was freed already
      const BlockList& list = dead[pick(dead.size())];
      bool all_allocated = true;
      for (BlockId id : list.ToIds()) all_allocated &= model.refs[id] > 0;
      if (all_allocated) continue;  // its blocks were reallocated: legal
      REQUIRE(allocator->Free(list).code() ==
              absl::StatusCode::kInvalidArgument);
    }
    if (dead.size() > 256) dead.erase(dead.begin(), dead.begin() + 128);

    // The whole state, after every operation.
    const BlockAllocatorStats stats = allocator->Stats();
    const std::vector<BlockRun> free_runs = model.FreeRuns();
    REQUIRE(stats.free_blocks == model.FreeBlocks());
    REQUIRE(stats.free_runs == free_runs.size());
    uint32_t largest = 0;
    for (const BlockRun& r : free_runs) largest = std::max(largest, r.count);
    REQUIRE(stats.largest_free_run == largest);
    REQUIRE(stats.live_lists == live.size());
    if (op % 64 == 0) {
      for (BlockId b = 0; b < kBlocks; ++b)
        REQUIRE(allocator->RefCount(b) == model.refs[b]);
    }
  }
}

}  // namespace
}  // namespace flowkv

namespace flowkv {
namespace {

// Regression: with growth slack, an Allocate(n, after) that took all n
// blocks after `after` also carved an empty run from a free run, and the
// empty interval hid the next allocation at that block (RefCount 0 for
// blocks handed out).
TEST_CASE("Allocate(n, after) served entirely after `after`", "[allocator]") {
  auto allocator = MakeAllocator(64, /*growth_slack=*/4);
  BlockList a = MustAllocate(*allocator, 4);  // 0-3
  absl::StatusOr<BlockList> b = allocator->Allocate(3, a.runs().back());
  REQUIRE(b.ok());
  CHECK(b->ToIds() == std::vector<BlockId>{4, 5, 6});
  CHECK(allocator->Stats().free_runs == 1);  // 7-63, not split
  for (int i = 0; i < 8; ++i) {
    BlockList c = MustAllocate(*allocator, 2);
    for (BlockId id : c.ToIds()) CHECK(allocator->RefCount(id) == 1);
  }
  CHECK(allocator->free_blocks() == 64 - 7 - 16);
}

}  // namespace
}  // namespace flowkv
