// SPDX-License-Identifier: Apache-2.0
// The prefix cache of BlockAllocator (include/flowkv/block_allocator.h) and
// its KV events (include/flowkv/kv_events.h): exact cases, misuse, and long
// random request sequences checked step by step against
// tests/support/prefix_cache_reference.h.
#include <atomic>
#include <cstdint>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "flowkv/block_allocator.h"
#include "flowkv/kv_events.h"
#include "tests/support/prefix_cache_reference.h"

namespace Catch {
template <>
struct StringMaker<flowkv::KvEvent> {
  static std::string convert(const flowkv::KvEvent& e) {
    std::string s = absl::StrCat(
        "{seq ", e.seq, " kind ", static_cast<int>(e.kind), " parent ",
        e.has_parent ? absl::StrCat(e.parent) : "-", " hashes");
    for (flowkv::BlockHash h : e.hashes) absl::StrAppend(&s, " ", h % 1000);
    absl::StrAppend(&s, " runs ",
                    flowkv::BlockList::FromRuns(e.runs).ToString(), "}");
    return s;
  }
};
}  // namespace Catch

namespace flowkv {
namespace {

using testing::PrefixCacheReference;

std::unique_ptr<BlockAllocator> MakeCache(uint32_t num_blocks,
                                          uint32_t event_capacity = 1 << 20,
                                          uint32_t growth_slack = 0) {
  auto allocator =
      BlockAllocator::Create({.num_blocks = num_blocks,
                              .growth_slack_blocks = growth_slack,
                              .enable_prefix_cache = true,
                              .event_buffer_capacity = event_capacity});
  REQUIRE(allocator.ok());
  return *std::move(allocator);
}

BlockList MustAllocate(BlockAllocator& allocator, uint32_t n) {
  absl::StatusOr<BlockList> list = allocator.Allocate(n);
  REQUIRE(list.ok());
  return *std::move(list);
}

// A chained hash, as an engine computes one from the block before and the
// block's tokens.
BlockHash Chain(BlockHash parent, uint64_t tokens) {
  uint64_t x = parent * 0x9E3779B97F4A7C15ull + tokens + 1;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

std::vector<BlockHash> Prompt(std::initializer_list<uint64_t> tokens) {
  std::vector<BlockHash> hashes;
  BlockHash h = 0;
  for (uint64_t t : tokens) hashes.push_back(h = Chain(h, t));
  return hashes;
}

TEST_CASE("A freed prompt is found again and pinned", "[allocator][cache]") {
  auto allocator = MakeCache(64);
  const std::vector<BlockHash> hashes = Prompt({1, 2, 3, 4});
  BlockList a = MustAllocate(*allocator, 5);  // 4 full blocks + a partial one
  REQUIRE(allocator->Free(a, hashes).ok());
  CHECK(allocator->free_blocks() == 60);
  CHECK(allocator->available_blocks() == 64);
  CHECK(allocator->Stats().cached_blocks == 4);

  // Same first three blocks, a different fourth.
  std::vector<BlockHash> other = Prompt({1, 2, 3, 9});
  absl::StatusOr<BlockList> prefix = allocator->Lookup(other);
  REQUIRE(prefix.ok());
  CHECK(prefix->ToIds() == std::vector<BlockId>{0, 1, 2});
  for (BlockId b : {0, 1, 2}) CHECK(allocator->RefCount(b) == 1);
  CHECK(allocator->RefCount(3) == 0);
  CHECK(allocator->Stats().cached_blocks == 1);
  // Continue the prefix in place: block 3 is cached (other content), so
  // the new block goes elsewhere; block 4 was free.
  absl::StatusOr<BlockList> rest =
      allocator->Allocate(2, prefix->runs().back());
  REQUIRE(rest.ok());
  CHECK(rest->num_blocks() == 2);
  for (BlockId b : rest->ToIds()) CHECK(b != 3);

  const BlockAllocatorStats stats = allocator->Stats();
  CHECK(stats.lookups == 1);
  CHECK(stats.lookup_blocks == 4);
  CHECK(stats.lookup_hit_blocks == 3);
  CHECK(stats.indexed_blocks == 4);

  // Double free of the pinned prefix: the second is refused.
  REQUIRE(allocator->Free(*prefix).ok());
  absl::Status again = allocator->Free(*prefix);
  CHECK(again.code() == absl::StatusCode::kInvalidArgument);
  CHECK(allocator->Stats().cached_blocks == 4);
}

TEST_CASE("Allocate(n, after) extends a cached prefix in place",
          "[allocator][cache]") {
  auto allocator = MakeCache(64);
  const std::vector<BlockHash> hashes = Prompt({7, 8});
  BlockList a = MustAllocate(*allocator, 2);
  REQUIRE(allocator->Free(a, hashes).ok());
  absl::StatusOr<BlockList> prefix = allocator->Lookup(hashes);
  REQUIRE(prefix.ok());
  REQUIRE(prefix->ToIds() == std::vector<BlockId>{0, 1});
  absl::StatusOr<BlockList> rest =
      allocator->Allocate(3, prefix->runs().back());
  REQUIRE(rest.ok());
  CHECK(rest->ToIds() == std::vector<BlockId>{2, 3, 4});
}

TEST_CASE("A running request's blocks are found and shared",
          "[allocator][cache]") {
  auto allocator = MakeCache(32);
  const std::vector<BlockHash> hashes = Prompt({1, 2, 3});
  BlockList running = MustAllocate(*allocator, 4);
  REQUIRE(allocator->CacheBlocks(running, hashes).ok());
  absl::StatusOr<BlockList> hit = allocator->Lookup(hashes);
  REQUIRE(hit.ok());
  CHECK(hit->ToIds() == std::vector<BlockId>{0, 1, 2});
  CHECK(allocator->RefCount(0) == 2);
  CHECK(allocator->RefCount(3) == 1);
  REQUIRE(allocator->Free(running).ok());  // hashes kept: cached on last ref
  CHECK(allocator->free_blocks() == 29);   // block 3 had no hash
  REQUIRE(allocator->Free(*hit).ok());
  CHECK(allocator->Stats().cached_blocks == 3);
  CHECK(allocator->free_blocks() == 29);
}

TEST_CASE("Eviction: only when space is needed, LRU first, never pinned",
          "[allocator][cache]") {
  auto allocator = MakeCache(12);
  // Three cached prompts of 4 blocks fill the pool: 0-3, 4-7, 8-11.
  std::vector<std::vector<BlockHash>> prompts = {
      Prompt({1, 1, 1, 1}), Prompt({2, 2, 2, 2}), Prompt({3, 3, 3, 3})};
  std::vector<BlockList> lists;
  for (int i = 0; i < 3; ++i) lists.push_back(MustAllocate(*allocator, 4));
  for (int i = 0; i < 3; ++i)
    REQUIRE(allocator->Free(lists[i], prompts[i]).ok());
  CHECK(allocator->free_blocks() == 0);
  CHECK(allocator->available_blocks() == 12);
  // Pin the oldest prompt: the next-oldest goes instead.
  absl::StatusOr<BlockList> pinned = allocator->Lookup(prompts[0]);
  REQUIRE(pinned.ok());
  REQUIRE(pinned->num_blocks() == 4);
  absl::StatusOr<BlockList> fresh = allocator->Allocate(4);
  REQUIRE(fresh.ok());
  CHECK(fresh->ToIds() == std::vector<BlockId>{4, 5, 6, 7});
  CHECK(allocator->Stats().evictions == 1);
  CHECK(allocator->Stats().evicted_blocks == 4);
  absl::StatusOr<BlockList> miss = allocator->Lookup(prompts[1]);
  REQUIRE(miss.ok());
  CHECK(miss->empty());
  // 4 cached blocks left (prompt 3): more than that cannot be had, and the
  // pinned ones are never taken.
  absl::StatusOr<BlockList> too_many = allocator->Allocate(5);
  CHECK(too_many.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(allocator->Stats().cached_blocks == 4);
  absl::StatusOr<BlockList> last = allocator->Allocate(4);
  REQUIRE(last.ok());
  CHECK(last->ToIds() == std::vector<BlockId>{8, 9, 10, 11});
  for (BlockId b = 0; b < 4; ++b) CHECK(allocator->RefCount(b) == 1);
}

TEST_CASE("Eviction prefers the cached run that restores a large hole",
          "[allocator][cache]") {
  auto allocator = MakeCache(16);
  // 0-3 cached (oldest), 4-5 allocated, 6-9 cached (newer), 10-15 free.
  BlockList a = MustAllocate(*allocator, 4);
  BlockList b = MustAllocate(*allocator, 2);
  BlockList c = MustAllocate(*allocator, 4);
  REQUIRE(allocator->Free(a, Prompt({1, 1, 1, 1})).ok());
  REQUIRE(allocator->Free(c, Prompt({2, 2, 2, 2})).ok());
  BlockList d = MustAllocate(*allocator, 6);  // 10-15
  REQUIRE(allocator->Free(d).ok());           // free again
  // Needs 8: evicting 6-9 joins the free 10-15 (a hole of 10) and is
  // enough; LRU alone would have evicted 0-3 and then 6-9.
  absl::StatusOr<BlockList> big = allocator->Allocate(8);
  REQUIRE(big.ok());
  CHECK(big->num_runs() == 1);
  CHECK(allocator->Stats().evictions == 1);
  absl::StatusOr<BlockList> still = allocator->Lookup(Prompt({1, 1, 1, 1}));
  REQUIRE(still.ok());
  CHECK(still->num_blocks() == 4);
}

TEST_CASE("Prefix cache misuse is refused and changes nothing",
          "[allocator][cache]") {
  SECTION("disabled cache") {
    auto plain = BlockAllocator::Create({.num_blocks = 8});
    REQUIRE(plain.ok());
    BlockList a = MustAllocate(**plain, 2);
    const std::vector<BlockHash> hashes = Prompt({1, 2});
    CHECK((*plain)->Lookup(hashes).status().code() ==
          absl::StatusCode::kFailedPrecondition);
    CHECK((*plain)->CacheBlocks(a, hashes).code() ==
          absl::StatusCode::kFailedPrecondition);
    CHECK((*plain)->Free(a, hashes).code() ==
          absl::StatusCode::kFailedPrecondition);
    CHECK((*plain)->ClearCache().code() ==
          absl::StatusCode::kFailedPrecondition);
    CHECK((*plain)->free_blocks() == 6);
    CHECK((*plain)->ReadEvents(0, 10).events.empty());
    CHECK((*plain)->Snapshot().blocks.empty());
    CHECK((*plain)->Free(a, {}).ok());  // no hashes: a plain Free
    CHECK((*plain)->free_blocks() == 8);
  }
  SECTION("hashes longer than the list") {
    auto allocator = MakeCache(8);
    BlockList a = MustAllocate(*allocator, 2);
    CHECK(allocator->Free(a, Prompt({1, 2, 3})).code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(allocator->CacheBlocks(a, Prompt({1, 2, 3})).code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(allocator->free_blocks() == 6);
    CHECK(allocator->Stats().indexed_blocks == 0);
    CHECK(allocator->ReadEvents(0, 10).latest_seq == 0);
  }
  SECTION("a block that already holds another hash") {
    auto allocator = MakeCache(8);
    BlockList a = MustAllocate(*allocator, 2);
    REQUIRE(allocator->CacheBlocks(a, Prompt({1, 2})).ok());
    CHECK(allocator->Free(a, Prompt({1, 3})).code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(allocator->RefCount(0) == 1);
    CHECK(allocator->Free(a, Prompt({1, 2})).ok());
    CHECK(allocator->Stats().cached_blocks == 2);
  }
  SECTION("cached blocks cannot be shared or freed without Lookup") {
    auto allocator = MakeCache(8);
    BlockList a = MustAllocate(*allocator, 2);
    REQUIRE(allocator->Free(a, Prompt({1, 2})).ok());
    CHECK(allocator->Share(a).code() == absl::StatusCode::kInvalidArgument);
    CHECK(allocator->Free(a).code() == absl::StatusCode::kInvalidArgument);
    CHECK(allocator->Stats().cached_blocks == 2);
  }
  SECTION("a chain that does not start at its first block misses") {
    auto allocator = MakeCache(8);
    BlockList a = MustAllocate(*allocator, 3);
    const std::vector<BlockHash> hashes = Prompt({1, 2, 3});
    REQUIRE(allocator->Free(a, hashes).ok());
    // hashes[1] alone is not a prompt's first block.
    absl::StatusOr<BlockList> hit =
        allocator->Lookup(std::vector<BlockHash>{hashes[1], hashes[2]});
    REQUIRE(hit.ok());
    CHECK(hit->empty());
    // A repeated hash does not find the block twice.
    hit = allocator->Lookup(std::vector<BlockHash>{hashes[0], hashes[0]});
    REQUIRE(hit.ok());
    CHECK(hit->ToIds() == std::vector<BlockId>{0});
    REQUIRE(allocator->Free(*hit).ok());
    CHECK(allocator->Lookup({}).value().empty());
  }
}

TEST_CASE("ClearCache frees cached blocks and publishes kAllCleared",
          "[allocator][cache]") {
  auto allocator = MakeCache(8);
  BlockList a = MustAllocate(*allocator, 2);
  BlockList b = MustAllocate(*allocator, 2);
  REQUIRE(allocator->CacheBlocks(b, Prompt({5, 6})).ok());
  REQUIRE(allocator->Free(a, Prompt({1, 2})).ok());
  REQUIRE(allocator->ClearCache().ok());
  CHECK(allocator->free_blocks() == 6);
  CHECK(allocator->Stats().indexed_blocks == 0);
  CHECK(allocator->Lookup(Prompt({5, 6})).value().empty());
  REQUIRE(allocator->Free(b).ok());
  CHECK(allocator->free_blocks() == 8);  // b's hashes went with the clear
  KvEventBatch batch = allocator->ReadEvents(0, 100);
  REQUIRE(batch.events.size() == 3);
  CHECK(batch.events[2].kind == KvEvent::Kind::kAllCleared);
  CHECK(batch.events[2].seq == 3);
}

TEST_CASE(
    "Events: stored chains carry their parent; a slow reader falls "
    "behind and resynchronises from a snapshot",
    "[allocator][cache][events]") {
  auto allocator = MakeCache(64, /*event_capacity=*/4);
  const std::vector<BlockHash> p = Prompt({1, 2, 3, 4});
  BlockList a = MustAllocate(*allocator, 2);
  REQUIRE(allocator->CacheBlocks(a, {p[0], p[1]}).ok());
  REQUIRE(allocator->Extend(&a, 2).ok());
  REQUIRE(allocator->Free(a, p).ok());
  KvEventBatch batch = allocator->ReadEvents(0, 100);
  REQUIRE(batch.events.size() == 2);
  CHECK_FALSE(batch.fell_behind);
  CHECK(batch.events[0].hashes == std::vector<BlockHash>{p[0], p[1]});
  CHECK_FALSE(batch.events[0].has_parent);
  CHECK(batch.events[1].hashes == std::vector<BlockHash>{p[2], p[3]});
  CHECK(batch.events[1].has_parent);
  CHECK(batch.events[1].parent == p[1]);
  CHECK(batch.events[1].runs == std::vector<BlockRun>{{2, 2}});
  CHECK(allocator->ReadEvents(1, 100).events.size() == 1);
  CHECK(allocator->ReadEvents(0, 1).events.size() == 1);
  CHECK(allocator->ReadEvents(2, 100).events.empty());
  CHECK(allocator->ReadEvents(3, 100).fell_behind);  // from the future

  for (uint64_t t = 10; t < 15; ++t) {
    BlockList x = MustAllocate(*allocator, 1);
    REQUIRE(allocator->Free(x, Prompt({t})).ok());
  }
  batch = allocator->ReadEvents(2, 100);
  CHECK(batch.fell_behind);
  CHECK(batch.events.empty());
  CHECK(batch.latest_seq == 7);
  KvCacheSnapshot snap = allocator->Snapshot();
  CHECK(snap.seq == 7);
  CHECK(snap.blocks.size() == 9);
  batch = allocator->ReadEvents(snap.seq, 100);
  CHECK_FALSE(batch.fell_behind);
  CHECK(batch.events.empty());
}

// ---- Long random sequences against the reference model --------------------

// A router's index, built from events and snapshots.
struct RouterIndex {
  std::map<BlockHash, BlockId> blocks;
  uint64_t applied = 0;
  void Reset(const KvCacheSnapshot& snap) {
    blocks.clear();
    for (const KvCachedBlock& b : snap.blocks) blocks[b.hash] = b.block;
    applied = snap.seq;
  }
  void Apply(const KvEvent& e) {
    REQUIRE(e.seq == applied + 1);  // in order, no gaps
    applied = e.seq;
    if (e.kind == KvEvent::Kind::kAllCleared) {
      blocks.clear();
      return;
    }
    std::vector<BlockId> ids = BlockList::FromRuns(e.runs).ToIds();
    REQUIRE(ids.size() == e.hashes.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      if (e.kind == KvEvent::Kind::kBlockStored) {
        REQUIRE(blocks.emplace(e.hashes[i], ids[i]).second);
      } else {
        REQUIRE(blocks.erase(e.hashes[i]) == 1);
      }
    }
  }
};

struct Request {
  BlockList list;
  std::vector<BlockHash> hashes;  // its full blocks
};

class RandomRun {
 public:
  RandomRun(uint32_t seed, uint32_t num_blocks, uint32_t slack,
            uint32_t event_capacity)
      : rng_(seed),
        allocator_(MakeCache(num_blocks, event_capacity, slack)),
        model_(num_blocks),
        num_blocks_(num_blocks) {}

  void Step() {
    const int op = Pick(100);
    if (op < 35) {
      StartRequest();
    } else if (op < 45) {
      Grow();
    } else if (op < 50) {
      CacheRunning();
    } else if (op < 80) {
      Finish();
    } else if (op < 85) {
      Fork();
    } else if (op < 98) {
      Misuse();
    } else if (op < 99 || Pick(4) == 0) {
      Compare(/*every_block=*/true);
      return;
    } else {
      REQUIRE(allocator_->ClearCache().ok());
      model_.Clear();
    }
    Compare(steps_++ % 16 == 0);
  }

  void Finally() {
    while (!running_.empty()) Finish();
    Compare(true);
    // Catch up on every event left.
    for (int i = 0; i < 1000 && router_.applied < model_.events().size(); ++i) {
      Compare(false);
    }
    REQUIRE(router_.applied == model_.events().size());
    KvCacheSnapshot snap = allocator_->Snapshot();
    CHECK(snap == model_.Snapshot());
  }

  const PrefixCacheReference& model() const { return model_; }

 private:
  uint32_t Pick(uint64_t n) {
    return n == 0 ? 0 : static_cast<uint32_t>(rng_() % n);
  }

  // Prompts share prefixes: few tokens per block position.
  std::vector<BlockHash> RandomPrompt(size_t blocks) {
    std::vector<BlockHash> hashes;
    BlockHash h = 0;
    for (size_t i = 0; i < blocks; ++i) hashes.push_back(h = Chain(h, Pick(3)));
    return hashes;
  }

  void StartRequest() {
    const size_t full = 1 + Pick(10);
    const uint32_t total = static_cast<uint32_t>(full + Pick(2));
    std::vector<BlockHash> hashes = RandomPrompt(full);
    absl::StatusOr<BlockList> prefix = allocator_->Lookup(hashes);
    REQUIRE(prefix.ok());
    REQUIRE(prefix->ToIds() == model_.Lookup(hashes));
    const uint32_t need = total - static_cast<uint32_t>(prefix->num_blocks());
    Request r{*prefix, hashes};
    if (need > 0) {
      absl::StatusOr<BlockList> rest =
          prefix->empty() ? allocator_->Allocate(need)
                          : allocator_->Allocate(need, prefix->runs().back());
      if (!model_.CanAllocate(need)) {
        REQUIRE(rest.status().code() == absl::StatusCode::kResourceExhausted);
        if (!prefix->empty()) Free(*prefix, {});
        return;
      }
      REQUIRE(rest.ok());
      REQUIRE(rest->num_blocks() == need);
      model_.EvictFor(need);
      REQUIRE(model_.Take(rest->ToIds()));
      r.list.AppendList(*rest);
    }
    running_.push_back(std::move(r));
  }

  void Grow() {
    if (running_.empty()) return;
    Request& r = running_[Pick(running_.size())];
    const uint32_t n = 1 + Pick(3);
    const absl::StatusCode want = model_.ExtendCode(r.list, n);
    const uint64_t before = r.list.num_blocks();
    BlockList grown = r.list;
    absl::Status s = allocator_->Extend(&grown, n);
    REQUIRE(s.code() == want);
    if (!s.ok()) return;
    model_.EvictFor(n);
    std::vector<BlockId> ids = grown.ToIds();
    REQUIRE(ids.size() == before + n);
    REQUIRE(model_.Take(absl::MakeSpan(ids).subspan(before)));
    r.list = grown;
  }

  void CacheRunning() {
    if (running_.empty()) return;
    Request& r = running_[Pick(running_.size())];
    const size_t k = Pick(r.hashes.size() + 1);
    absl::Span<const BlockHash> hashes(r.hashes.data(), k);
    // Usually OK; not when a misuse step freed the request's blocks.
    const absl::StatusCode want = model_.HashesCode(r.list, hashes);
    REQUIRE(allocator_->CacheBlocks(r.list, hashes).code() == want);
    if (want == absl::StatusCode::kOk) model_.Record(r.list, hashes);
  }

  void Finish() {
    if (running_.empty()) return;
    const size_t i = Pick(running_.size());
    Request r = std::move(running_[i]);
    running_.erase(running_.begin() + static_cast<ptrdiff_t>(i));
    const int how = Pick(4);  // all hashes, some, none (a failed request)
    size_t k = how <= 1   ? r.hashes.size()
               : how == 2 ? Pick(r.hashes.size())
                          : 0;
    Free(r.list, absl::Span<const BlockHash>(r.hashes.data(), k));
    freed_.push_back(std::move(r));
    if (freed_.size() > 8) freed_.erase(freed_.begin());
  }

  void Fork() {
    if (running_.empty()) return;
    Request r = running_[Pick(running_.size())];
    const absl::StatusCode want = model_.ListCode(r.list);
    REQUIRE(allocator_->Share(r.list).code() == want);
    if (want != absl::StatusCode::kOk) return;
    model_.Share(r.list);
    running_.push_back(std::move(r));
  }

  void Free(const BlockList& list, absl::Span<const BlockHash> hashes) {
    const absl::StatusCode want = model_.HashesCode(list, hashes);
    absl::Status s = allocator_->Free(list, hashes);
    REQUIRE(s.code() == want);
    if (s.ok()) model_.Free(list, hashes);
  }

  // Calls that are usually wrong: their code must match the model's.
  void Misuse() {
    switch (Pick(5)) {
      case 0:  // double free, or a freed list whose blocks moved on
        if (!freed_.empty()) {
          const Request& r = freed_[Pick(freed_.size())];
          Free(r.list, r.hashes);
        }
        break;
      case 1: {  // a random list
        BlockList list;
        const BlockId first = Pick(num_blocks_ + 2);
        list.Append(first, 1 + Pick(4));
        if (Pick(2) == 0) {
          absl::Status s = allocator_->Share(list);
          REQUIRE(s.code() == model_.ListCode(list));
          if (s.ok()) model_.Share(list);
          // Keep the reference: it is freed like a request.
          if (s.ok()) running_.push_back({list, {}});
        } else {
          Free(list, {});
        }
        break;
      }
      case 2:  // wrong or too many hashes for a running request
        if (!running_.empty()) {
          Request& r = running_[Pick(running_.size())];
          std::vector<BlockHash> hashes = r.hashes;
          if (Pick(2) == 0 || hashes.empty()) {
            hashes.resize(r.list.num_blocks() + 1, 42);
          } else {
            hashes[Pick(hashes.size())] ^= 1;
          }
          const absl::StatusCode want = model_.HashesCode(r.list, hashes);
          absl::Status s = allocator_->CacheBlocks(r.list, hashes);
          REQUIRE(s.code() == want);
          if (s.ok()) model_.Record(r.list, hashes);
        }
        break;
      case 3: {  // a lookup of garbage hashes (kept pinned as a request)
        std::vector<BlockHash> hashes(1 + Pick(4));
        for (BlockHash& h : hashes) h = Pick(2) == 0 ? rng_() : Pick(3);
        absl::StatusOr<BlockList> hit = allocator_->Lookup(hashes);
        REQUIRE(hit.ok());
        REQUIRE(hit->ToIds() == model_.Lookup(hashes));
        if (!hit->empty()) running_.push_back({*hit, {}});
        break;
      }
      case 4: {  // Allocate more than is available
        const uint32_t n = static_cast<uint32_t>(
            model_.free_blocks() + model_.cached_blocks() + 1 + Pick(3));
        CHECK(allocator_->Allocate(n).status().code() ==
              absl::StatusCode::kResourceExhausted);
        break;
      }
    }
  }

  void Compare(bool every_block) {
    REQUIRE(allocator_->free_blocks() == model_.free_blocks());
    REQUIRE(allocator_->available_blocks() ==
            model_.free_blocks() + model_.cached_blocks());
    const BlockAllocatorStats stats = allocator_->Stats();
    REQUIRE(stats.cached_blocks == model_.cached_blocks());
    REQUIRE(stats.indexed_blocks == model_.indexed_blocks());
    REQUIRE(stats.lookups == model_.lookups());
    REQUIRE(stats.lookup_blocks == model_.lookup_blocks());
    REQUIRE(stats.lookup_hit_blocks == model_.lookup_hit_blocks());
    REQUIRE(stats.evictions == model_.evictions());
    REQUIRE(stats.evicted_blocks == model_.evicted_blocks());
    REQUIRE(stats.latest_event_seq == model_.events().size());
    for (BlockId b = 0; every_block && b < num_blocks_; ++b) {
      REQUIRE(allocator_->RefCount(b) == model_.refs(b));
    }
    // The router reads a few events at a time, now and then (so that a small
    // buffer overflows); the events are the model's.
    if (Pick(3) != 0) return;
    KvEventBatch batch = allocator_->ReadEvents(router_.applied, 1 + Pick(8));
    if (batch.fell_behind) {
      ++resyncs_;
      KvCacheSnapshot snap = allocator_->Snapshot();
      REQUIRE(snap == model_.Snapshot());
      router_.Reset(snap);
      batch = allocator_->ReadEvents(router_.applied, 1 + Pick(8));
      REQUIRE_FALSE(batch.fell_behind);
    }
    for (const KvEvent& e : batch.events) {
      REQUIRE(e == model_.events().at(e.seq - 1));
      router_.Apply(e);
    }
    // Caught up: the router's index is the allocator's.
    if (router_.applied == model_.events().size()) {
      std::map<BlockHash, BlockId> want;
      for (const KvCachedBlock& b : model_.Snapshot().blocks) {
        want[b.hash] = b.block;
      }
      REQUIRE(router_.blocks == want);
    }
  }

 public:
  uint64_t resyncs_ = 0;

 private:
  std::mt19937 rng_;
  std::unique_ptr<BlockAllocator> allocator_;
  PrefixCacheReference model_;
  const uint32_t num_blocks_;
  std::vector<Request> running_;
  std::vector<Request> freed_;
  RouterIndex router_;
  uint64_t steps_ = 0;
};

TEST_CASE("Random request sequences match the reference model",
          "[allocator][cache][random]") {
  struct Case {
    uint32_t seed, num_blocks, slack, event_capacity;
  };
  const Case cases[] = {{1, 48, 0, 1 << 20},   {2, 96, 4, 1 << 20},
                        {3, 200, 32, 1 << 20}, {4, 64, 2, 6},
                        {5, 40, 0, 3},         {6, 128, 8, 64},
                        {7, 1, 0, 8},          {8, 300, 0, 0}};
  for (const Case& c : cases) {
    CAPTURE(c.seed, c.num_blocks, c.slack, c.event_capacity);
    RandomRun run(c.seed, c.num_blocks, c.slack, c.event_capacity);
    for (int i = 0; i < 20000; ++i) run.Step();
    run.Finally();
    // The sequences exercise what they are meant to.
    CHECK(run.model().lookup_hit_blocks() > 0);
    if (c.num_blocks > 1) CHECK(run.model().evictions() > 0);
    if (c.event_capacity < 64 && c.num_blocks > 1) CHECK(run.resyncs_ > 0);
  }
}

}  // namespace
}  // namespace flowkv

namespace flowkv {
namespace {

// Requests on four threads share one cached allocator while a fifth reads
// the events into a router index; every call's result is checked on the
// main thread afterwards (the workers only count what went wrong).
TEST_CASE("Prefix cache calls from many threads", "[allocator][cache]") {
  auto allocator = MakeCache(512, /*event_capacity=*/1 << 20, 4);
  constexpr int kThreads = 4;
  constexpr int kRequests = 3000;
  std::atomic<int> errors{0};
  std::atomic<int> hits{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      std::vector<Request> running;
      for (int i = 0; i < kRequests; ++i) {
        if (running.size() > 6 || (!running.empty() && rng() % 2 == 0)) {
          const Request r = running.back();
          running.pop_back();
          if (!allocator->Free(r.list, r.hashes).ok()) ++errors;
          continue;
        }
        std::vector<BlockHash> hashes;
        BlockHash h = 0;
        for (size_t b = 1 + rng() % 8; b > 0; --b) {
          hashes.push_back(h = Chain(h, rng() % 2));
        }
        absl::StatusOr<BlockList> prefix = allocator->Lookup(hashes);
        if (!prefix.ok()) {
          ++errors;
          continue;
        }
        if (!prefix->empty()) ++hits;
        const uint32_t need =
            static_cast<uint32_t>(hashes.size() + 1 - prefix->num_blocks());
        absl::StatusOr<BlockList> rest =
            prefix->empty() ? allocator->Allocate(need)
                            : allocator->Allocate(need, prefix->runs().back());
        if (!rest.ok()) {  // Possible: the others hold the pool.
          if (rest.status().code() != absl::StatusCode::kResourceExhausted ||
              (!prefix->empty() && !allocator->Free(*prefix).ok())) {
            ++errors;
          }
          continue;
        }
        Request r{*prefix, hashes};
        r.list.AppendList(*rest);
        running.push_back(std::move(r));
      }
      for (const Request& r : running) {
        if (!allocator->Free(r.list, r.hashes).ok()) ++errors;
      }
    });
  }
  // The router: applies every event it reads, resyncing when behind.
  RouterIndex router;
  int router_errors = 0;
  std::thread reader([&] {
    while (true) {
      const bool last = done.load();
      KvEventBatch batch = allocator->ReadEvents(router.applied, 64);
      if (batch.fell_behind) {
        router.Reset(allocator->Snapshot());
        continue;
      }
      for (const KvEvent& e : batch.events) {
        if (e.seq != router.applied + 1) ++router_errors;
        router.applied = e.seq;
        std::vector<BlockId> ids = BlockList::FromRuns(e.runs).ToIds();
        if (e.kind == KvEvent::Kind::kAllCleared) router.blocks.clear();
        for (size_t i = 0; i < ids.size() && i < e.hashes.size(); ++i) {
          if (e.kind == KvEvent::Kind::kBlockStored) {
            if (!router.blocks.emplace(e.hashes[i], ids[i]).second) {
              ++router_errors;
            }
          } else if (router.blocks.erase(e.hashes[i]) != 1) {
            ++router_errors;
          }
        }
      }
      if (last && batch.events.empty()) return;
    }
  });
  for (std::thread& t : threads) t.join();
  done = true;
  reader.join();
  CHECK(errors == 0);
  CHECK(router_errors == 0);
  CHECK(hits > 0);
  const BlockAllocatorStats stats = allocator->Stats();
  CHECK(stats.free_blocks + stats.cached_blocks == 512);
  CHECK(stats.indexed_blocks == stats.cached_blocks);
  for (BlockId b = 0; b < 512; ++b) REQUIRE(allocator->RefCount(b) == 0);
  std::map<BlockHash, BlockId> want;
  for (const KvCachedBlock& b : allocator->Snapshot().blocks) {
    CHECK_FALSE(b.in_use);
    want[b.hash] = b.block;
  }
  CHECK(router.blocks == want);
  CHECK(router.applied == stats.latest_event_seq);
}

}  // namespace
}  // namespace flowkv
