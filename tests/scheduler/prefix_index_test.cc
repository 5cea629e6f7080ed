// SPDX-License-Identifier: Apache-2.0
// PrefixIndex: matches against a reference model over random event streams,
// sequencing (gaps, duplicates, fell_behind), and staying consistent with
// real BlockAllocator prefix caches through dropped subscribers and
// snapshot resynchronisation, also across the event wire format.
#include "flowkv/prefix_index.h"

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/block_allocator.h"
#include "flowkv/kv_events.h"

namespace flowkv {
namespace {

// The reference: node -> hashes held; a node's prefix is computed by
// walking the chain.
using Reference = std::map<PrefixNodeId, std::set<uint64_t>>;

std::vector<PrefixMatch> ReferenceMatch(const Reference& ref,
                                        const std::vector<uint64_t>& chain) {
  std::vector<PrefixMatch> out;
  for (const auto& [node, held] : ref) {
    uint32_t i = 0;
    while (i < chain.size() && held.contains(chain[i])) ++i;
    if (i > 0) out.push_back({node, i});
  }
  return out;
}

std::vector<PrefixMatch> Sorted(std::vector<PrefixMatch> v) {
  std::sort(v.begin(), v.end(), [](const PrefixMatch& a, const PrefixMatch& b) {
    return a.node < b.node;
  });
  return v;
}

// Chains that share prefixes: chain c's block i is (c's family, i) for
// i < the shared length, so families share their first blocks.
std::vector<std::vector<uint64_t>> MakeChains(std::mt19937_64& rng, int n) {
  std::vector<std::vector<uint64_t>> chains;
  for (int c = 0; c < n; ++c) {
    const uint64_t family = rng() % 4;
    const size_t shared = rng() % 6;
    const size_t len = shared + 1 + rng() % 10;
    std::vector<uint64_t> chain;
    for (size_t i = 0; i < len; ++i) {
      chain.push_back(
          i < shared ? (family << 32) | i
                     : (uint64_t{1000 + static_cast<uint64_t>(c)} << 32) | i);
    }
    chains.push_back(chain);
  }
  return chains;
}

TEST_CASE("PrefixIndex matches a reference over random event streams",
          "[scheduler][prefix_index]") {
  std::mt19937_64 rng(GENERATE(1, 2, 3));
  const std::vector<std::vector<uint64_t>> chains = MakeChains(rng, 40);
  PrefixIndex index;
  Reference ref;
  std::map<PrefixNodeId, uint64_t> seq;
  for (int step = 0; step < 3000; ++step) {
    const PrefixNodeId node = static_cast<PrefixNodeId>(rng() % 6);
    const std::vector<uint64_t>& chain = chains[rng() % chains.size()];
    const size_t from = rng() % chain.size();
    const size_t to = from + 1 + rng() % (chain.size() - from);
    const std::vector<uint64_t> part(chain.begin() + from, chain.begin() + to);
    const int op = static_cast<int>(rng() % 20);
    const uint64_t s = ++seq[node];
    if (op < 11) {
      REQUIRE(index.ApplyStored(node, s, part).ok());
      ref[node].insert(part.begin(), part.end());
    } else if (op < 19) {
      REQUIRE(index.ApplyRemoved(node, s, part).ok());
      for (uint64_t h : part) ref[node].erase(h);
    } else {
      REQUIRE(index.ApplyCleared(node, s).ok());
      ref[node].clear();
    }
    if (step % 10 == 0) {
      uint64_t total = 0;
      for (const auto& [n, held] : ref) {
        total += held.size();
        CHECK(index.State(n).blocks == held.size());
      }
      REQUIRE(index.total_blocks() == total);
      for (const std::vector<uint64_t>& c : chains) {
        std::vector<PrefixMatch> got;
        index.Match(c, &got);
        REQUIRE(Sorted(got) == ReferenceMatch(ref, c));
        for (PrefixNodeId n = 0; n < 6; ++n) {
          uint32_t want = 0;
          for (const PrefixMatch& m : ReferenceMatch(ref, c)) {
            if (m.node == n) want = m.blocks;
          }
          REQUIRE(index.MatchNode(n, c) == want);
        }
      }
    }
  }
}

TEST_CASE("PrefixIndex: a gap makes the node stale until a snapshot",
          "[scheduler][prefix_index]") {
  PrefixIndex index;
  const std::vector<uint64_t> chain = {10, 11, 12, 13};
  REQUIRE(index.ApplyStored(7, 1, {10, 11}).ok());
  REQUIRE(index.ApplyStored(8, 1, {10, 11, 12}).ok());
  // A duplicate (redelivered) event changes nothing.
  REQUIRE(index.ApplyRemoved(7, 1, {10}).ok());
  CHECK(index.MatchNode(7, chain) == 2);
  // Event 3 without event 2: events were lost.
  absl::Status gap = index.ApplyStored(7, 3, {12, 13});
  CHECK(gap.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(index.State(7).stale);
  CHECK(index.State(7).blocks == 0);
  CHECK(index.State(7).resyncs_needed == 1);
  CHECK(index.MatchNode(7, chain) == 0);
  std::vector<PrefixMatch> got;
  index.Match(chain, &got);
  CHECK(got == std::vector<PrefixMatch>{{8, 3}});
  // Later events are ignored while stale.
  REQUIRE(index.ApplyStored(7, 4, {10}).ok());
  CHECK(index.MatchNode(7, chain) == 0);
  // The snapshot as of seq 4; event 4 again is a duplicate, 5 applies.
  index.ApplySnapshot(7, 4, {10, 11, 12, 10});
  CHECK_FALSE(index.State(7).stale);
  CHECK(index.State(7).blocks == 3);
  REQUIRE(index.ApplyRemoved(7, 4, {10}).ok());
  CHECK(index.MatchNode(7, chain) == 3);
  REQUIRE(index.ApplyStored(7, 5, {13}).ok());
  CHECK(index.MatchNode(7, chain) == 4);
  // An empty batch from a node that published past what the index has: the
  // reader skipped events (a lost batch was the node's last one).
  KvEventBatch skipped;
  skipped.latest_seq = 9;
  CHECK(index.ApplyEvents(7, skipped).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(index.State(7).stale);
  index.ApplySnapshot(7, 9, {10, 11, 12, 13});
  skipped.latest_seq = 9;
  CHECK(index.ApplyEvents(7, skipped).ok());
  CHECK(index.MatchNode(7, chain) == 4);
  // MarkStale (a subscriber that fell behind) and RemoveNode.
  index.MarkStale(8);
  CHECK(index.MatchNode(8, chain) == 0);
  index.RemoveNode(7);
  index.Match(chain, &got);
  CHECK(got.empty());
  CHECK(index.total_blocks() == 0);
  CHECK(index.distinct_blocks() == 0);
  CHECK(index.State(7).last_seq == 0);
}

TEST_CASE("PrefixIndex: an empty chain or unknown hashes match nothing",
          "[scheduler][prefix_index]") {
  PrefixIndex index;
  std::vector<PrefixMatch> got = {{1, 1}};
  index.Match({}, &got);
  CHECK(got.empty());
  index.Match({{99}}, &got);
  CHECK(got.empty());
  CHECK(index.MatchNode(3, {{1}}) == 0);
  // Removing what a node does not hold, storing twice: no change.
  REQUIRE(index.ApplyRemoved(1, 1, {5}).ok());
  REQUIRE(index.ApplyStored(1, 2, {5, 5}).ok());
  CHECK(index.State(1).blocks == 1);
  KvEventBatch bad;
  KvEvent unknown;
  unknown.seq = 3;
  unknown.kind = static_cast<KvEvent::Kind>(9);
  bad.events.push_back(unknown);
  CHECK(index.ApplyEvents(1, bad).code() == absl::StatusCode::kInvalidArgument);
  CHECK(index.State(1).stale);
}

// A router's subscriber of several allocators: reads each one's events,
// sometimes loses a batch or reads too late (the allocator's buffer
// dropped them), and resynchronises from a snapshot when the index says so.
TEST_CASE("PrefixIndex follows real allocators through drops and resyncs",
          "[scheduler][prefix_index]") {
  constexpr int kNodes = 3;
  std::mt19937_64 rng(GENERATE(11, 12));
  std::vector<std::unique_ptr<BlockAllocator>> nodes;
  for (int i = 0; i < kNodes; ++i) {
    auto a = BlockAllocator::Create({.num_blocks = 64,
                                     .enable_prefix_cache = true,
                                     .event_buffer_capacity = 8});
    REQUIRE(a.ok());
    nodes.push_back(std::move(*a));
  }
  const std::vector<std::vector<uint64_t>> chains = MakeChains(rng, 30);
  PrefixIndex index;
  std::vector<uint64_t> read(kNodes, 0);
  uint64_t drops = 0, resyncs = 0;

  // The truth for one node: the prefix its allocator's Lookup finds.
  auto truth = [&](int n, const std::vector<uint64_t>& chain) {
    absl::StatusOr<BlockList> found = nodes[n]->Lookup(chain);
    REQUIRE(found.ok());
    const uint32_t blocks = static_cast<uint32_t>(found->num_blocks());
    if (!found->empty()) REQUIRE(nodes[n]->Free(*found).ok());
    return blocks;
  };
  auto sync = [&](int n, bool lose) {
    KvEventBatch batch = nodes[n]->ReadEvents(read[n], 1 + rng() % 6);
    if (!batch.events.empty()) read[n] = batch.events.back().seq;
    if (lose && !batch.events.empty()) {
      ++drops;
      return;  // the batch never reaches the router
    }
    // Through the wire, as a router in another process gets it.
    absl::StatusOr<KvEventBatch> wire =
        DecodeKvEventBatch(EncodeKvEventBatch(batch));
    REQUIRE(wire.ok());
    if (!index.ApplyEvents(static_cast<PrefixNodeId>(n), *wire).ok()) {
      ++resyncs;
      KvCacheSnapshot snap = nodes[n]->Snapshot();
      absl::StatusOr<KvCacheSnapshot> snap_wire =
          DecodeKvCacheSnapshot(EncodeKvCacheSnapshot(snap));
      REQUIRE(snap_wire.ok());
      index.ApplySnapshot(static_cast<PrefixNodeId>(n), *snap_wire);
      read[n] = snap.seq;
    }
  };

  for (int step = 0; step < 1500; ++step) {
    const int n = static_cast<int>(rng() % kNodes);
    const std::vector<uint64_t>& chain = chains[rng() % chains.size()];
    // A request: reuse the cached prefix, allocate the rest, cache it all.
    absl::StatusOr<BlockList> prefix = nodes[n]->Lookup(chain);
    REQUIRE(prefix.ok());
    const uint32_t rest =
        static_cast<uint32_t>(chain.size() - prefix->num_blocks());
    absl::StatusOr<BlockList> more = nodes[n]->Allocate(rest);
    if (more.ok()) {
      BlockList all = *prefix;
      all.AppendList(*more);
      REQUIRE(nodes[n]->Free(all, chain).ok());
    } else if (!prefix->empty()) {
      REQUIRE(nodes[n]->Free(*prefix).ok());
    }
    if (rng() % 50 == 0) REQUIRE(nodes[n]->ClearCache().ok());
    // The router reads some nodes now, losing 1 batch in 15; some reads
    // come too late and find fell_behind.
    const int m = static_cast<int>(rng() % kNodes);
    if (rng() % 3 != 0) sync(m, rng() % 15 == 0);
    if (step % 25 == 24) {
      // Catch every node up (reading until nothing is left), then the index
      // must agree with every allocator on every chain.
      for (int k = 0; k < kNodes; ++k) {
        for (int guard = 0; guard < 1000; ++guard) {
          sync(k, false);
          if (!index.State(k).stale &&
              nodes[k]->ReadEvents(read[k], 1).events.empty()) {
            break;
          }
        }
        REQUIRE_FALSE(index.State(k).stale);
      }
      for (const std::vector<uint64_t>& c : chains) {
        for (int k = 0; k < kNodes; ++k) {
          INFO("step " << step << " node " << k);
          REQUIRE(index.MatchNode(static_cast<PrefixNodeId>(k), c) ==
                  truth(k, c));
        }
      }
    }
  }
  CHECK(drops > 0);
  CHECK(resyncs > 0);
}

}  // namespace
}  // namespace flowkv
