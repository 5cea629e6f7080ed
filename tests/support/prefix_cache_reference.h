// SPDX-License-Identifier: Apache-2.0
// PrefixCacheReference: an obviously-correct model of BlockAllocator with
// the prefix cache (include/flowkv/block_allocator.h), one plain array entry
// per block, for tests/allocator/prefix_cache_test.cc and
// tests/fuzz/prefix_cache_fuzz.cc.
//
// It predicts every error code, every eviction (the same policy, computed
// by scanning the blocks), every Lookup result and every event (with seqs).
// It does not predict where Allocate and Extend place new blocks: the caller
// passes the allocator's answer to Take, which says whether those blocks
// were free. Block states: refs > 0 (allocated), cached (refs 0, hash), free.
//
// Thread safety: externally synchronized.

#ifndef FLOWKV_TESTS_SUPPORT_PREFIX_CACHE_REFERENCE_H_
#define FLOWKV_TESTS_SUPPORT_PREFIX_CACHE_REFERENCE_H_

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "flowkv/block_allocator.h"
#include "flowkv/kv_events.h"

namespace flowkv::testing {

class PrefixCacheReference {
 public:
  // Eviction looks at this many oldest cached runs (prefix_cache.cc).
  static constexpr int kEvictionWindow = 8;

  explicit PrefixCacheReference(uint32_t num_blocks) : blocks_(num_blocks) {}

  struct Block {
    uint32_t refs = 0;
    std::optional<KvCachedBlock> hash;  // .block unused
    uint64_t stamp = 0;                 // when cached
  };

  // ---- predictions of error codes (nothing changes) ----

  // The code Free / Share / CacheBlocks return for `list` (validity only).
  absl::StatusCode ListCode(const BlockList& list) const {
    if (list.empty()) return absl::StatusCode::kInvalidArgument;
    std::vector<bool> seen(blocks_.size(), false);
    for (const BlockRun& run : list.runs()) {
      for (uint64_t b = run.first; b < run.end(); ++b) {
        if (b >= blocks_.size() || blocks_[b].refs == 0 || seen[b]) {
          return absl::StatusCode::kInvalidArgument;
        }
        seen[b] = true;
      }
    }
    return absl::StatusCode::kOk;
  }
  absl::StatusCode HashesCode(const BlockList& list,
                              absl::Span<const BlockHash> hashes) const {
    if (absl::StatusCode c = ListCode(list); c != absl::StatusCode::kOk) {
      return c;
    }
    if (hashes.size() > list.num_blocks()) {
      return absl::StatusCode::kInvalidArgument;
    }
    for (size_t i = 0; i < hashes.size(); ++i) {
      const Block& block = blocks_[list.BlockAt(i)];
      if (block.hash && block.hash->hash != hashes[i]) {
        return absl::StatusCode::kInvalidArgument;
      }
    }
    return absl::StatusCode::kOk;
  }
  absl::StatusCode ExtendCode(const BlockList& list, uint32_t n) const {
    if (n == 0) return absl::StatusCode::kOk;
    if (!list.empty()) {
      const uint64_t last = list.runs().back().end() - 1;
      if (last >= blocks_.size() || blocks_[last].refs == 0) {
        return absl::StatusCode::kInvalidArgument;
      }
    }
    return CanAllocate(n) ? absl::StatusCode::kOk
                          : absl::StatusCode::kResourceExhausted;
  }
  bool CanAllocate(uint64_t n) const {
    return n <= free_blocks() + cached_blocks();
  }

  // ---- state changes (REQUIRE: the predicted code was OK) ----

  // CacheBlocks.
  void Record(const BlockList& list, absl::Span<const BlockHash> hashes) {
    KvEvent event;
    std::vector<BlockId> stored;
    auto publish = [&] {
      if (event.hashes.empty()) return;
      event.kind = KvEvent::Kind::kBlockStored;
      const BlockList runs = BlockList::FromIds(stored);
      event.runs.assign(runs.runs().begin(), runs.runs().end());
      Publish(std::move(event));
      event = KvEvent();
      stored.clear();
    };
    for (size_t i = 0; i < hashes.size(); ++i) {
      const BlockId b = list.BlockAt(i);
      if (blocks_[b].hash || index_.count(hashes[i]) != 0) {
        publish();
        continue;
      }
      KvCachedBlock entry;
      entry.hash = hashes[i];
      entry.has_parent = i > 0;
      entry.parent = i > 0 ? hashes[i - 1] : 0;
      if (event.hashes.empty()) {
        event.has_parent = entry.has_parent;
        event.parent = entry.parent;
      }
      event.hashes.push_back(hashes[i]);
      stored.push_back(b);
      blocks_[b].hash = entry;
      index_[hashes[i]] = b;
    }
    publish();
  }

  // Free(list, hashes): the tail run first, one stamp per run.
  void Free(const BlockList& list, absl::Span<const BlockHash> hashes) {
    Record(list, hashes);
    for (size_t r = list.num_runs(); r-- > 0;) {
      const BlockRun run = list.runs()[r];
      const uint64_t stamp = ++clock_;
      for (uint64_t b = run.first; b < run.end(); ++b) {
        if (--blocks_[b].refs == 0) blocks_[b].stamp = stamp;
      }
    }
  }

  void Share(const BlockList& list) {
    for (BlockId b : list.ToIds()) ++blocks_[b].refs;
  }

  // Lookup: pins and returns the hit blocks.
  std::vector<BlockId> Lookup(absl::Span<const BlockHash> hashes) {
    ++lookups_;
    lookup_blocks_ += hashes.size();
    std::vector<BlockId> hit;
    for (size_t i = 0; i < hashes.size(); ++i) {
      auto it = index_.find(hashes[i]);
      if (it == index_.end()) break;
      const KvCachedBlock& entry = *blocks_[it->second].hash;
      const bool chained =
          i == 0 ? !entry.has_parent
                 : entry.has_parent && entry.parent == hashes[i - 1];
      if (!chained) break;
      hit.push_back(it->second);
    }
    for (BlockId b : hit) ++blocks_[b].refs;
    lookup_hit_blocks_ += hit.size();
    return hit;
  }

  // Evicts as Allocate(n) / Extend(n) does before taking blocks.
  void EvictFor(uint64_t n) {
    while (free_blocks() < n) {
      std::vector<std::tuple<uint64_t, BlockId, uint32_t>> runs;  // stamp
      for (size_t b = 0; b < blocks_.size();) {
        if (!IsCached(b)) {
          ++b;
          continue;
        }
        size_t e = b + 1;
        while (e < blocks_.size() && IsCached(e) &&
               blocks_[e].stamp == blocks_[b].stamp) {
          ++e;
        }
        runs.emplace_back(blocks_[b].stamp, static_cast<BlockId>(b),
                          static_cast<uint32_t>(e - b));
        b = e;
      }
      std::sort(runs.begin(), runs.end());
      size_t best = 0;
      uint64_t best_hole = 0;
      for (size_t i = 0; i < runs.size() && i < kEvictionWindow; ++i) {
        const auto [stamp, first, count] = runs[i];
        uint64_t hole = count;
        for (int64_t b = int64_t{first} - 1; b >= 0 && IsFree(b); --b) ++hole;
        for (size_t b = first + uint64_t{count};
             b < blocks_.size() && IsFree(b); ++b) {
          ++hole;
        }
        if (hole > best_hole) {
          best = i;
          best_hole = hole;
        }
      }
      const auto [stamp, first, count] = runs.at(best);
      KvEvent event;
      event.kind = KvEvent::Kind::kBlockRemoved;
      for (BlockId b = first; b < first + count; ++b) {
        event.hashes.push_back(blocks_[b].hash->hash);
        index_.erase(blocks_[b].hash->hash);
        blocks_[b].hash.reset();
      }
      event.runs.push_back({first, count});
      ++evictions_;
      evicted_blocks_ += count;
      Publish(std::move(event));
    }
  }

  // Blocks handed out by Allocate / Extend; false when one was not free.
  bool Take(absl::Span<const BlockId> ids) {
    for (BlockId b : ids) {
      if (b >= blocks_.size() || !IsFree(b)) return false;
      blocks_[b].refs = 1;
    }
    return true;
  }

  void Clear() {
    for (Block& block : blocks_) block.hash.reset();
    index_.clear();
    KvEvent event;
    event.kind = KvEvent::Kind::kAllCleared;
    Publish(std::move(event));
  }

  // ---- observations ----
  uint32_t refs(BlockId b) const { return blocks_[b].refs; }
  bool IsCached(size_t b) const {
    return blocks_[b].refs == 0 && blocks_[b].hash.has_value();
  }
  bool IsFree(size_t b) const {
    return blocks_[b].refs == 0 && !blocks_[b].hash.has_value();
  }
  uint64_t free_blocks() const { return Count(&PrefixCacheReference::IsFree); }
  uint64_t cached_blocks() const {
    return Count(&PrefixCacheReference::IsCached);
  }
  uint64_t indexed_blocks() const { return index_.size(); }
  uint64_t lookups() const { return lookups_; }
  uint64_t lookup_blocks() const { return lookup_blocks_; }
  uint64_t lookup_hit_blocks() const { return lookup_hit_blocks_; }
  uint64_t evictions() const { return evictions_; }
  uint64_t evicted_blocks() const { return evicted_blocks_; }
  const std::vector<KvEvent>& events() const { return events_; }

  KvCacheSnapshot Snapshot() const {
    KvCacheSnapshot snap;
    snap.seq = events_.size();
    for (size_t b = 0; b < blocks_.size(); ++b) {
      if (!blocks_[b].hash) continue;
      KvCachedBlock entry = *blocks_[b].hash;
      entry.block = static_cast<BlockId>(b);
      entry.in_use = blocks_[b].refs > 0;
      snap.blocks.push_back(entry);
    }
    return snap;
  }

 private:
  uint64_t Count(bool (PrefixCacheReference::*pred)(size_t) const) const {
    uint64_t n = 0;
    for (size_t b = 0; b < blocks_.size(); ++b) n += (this->*pred)(b) ? 1 : 0;
    return n;
  }
  void Publish(KvEvent event) {
    event.seq = events_.size() + 1;
    events_.push_back(std::move(event));
  }

  std::vector<Block> blocks_;
  std::map<BlockHash, BlockId> index_;
  std::vector<KvEvent> events_;
  uint64_t clock_ = 0;
  uint64_t lookups_ = 0;
  uint64_t lookup_blocks_ = 0;
  uint64_t lookup_hit_blocks_ = 0;
  uint64_t evictions_ = 0;
  uint64_t evicted_blocks_ = 0;
};

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_PREFIX_CACHE_REFERENCE_H_
