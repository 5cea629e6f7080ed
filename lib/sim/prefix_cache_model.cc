// SPDX-License-Identifier: Apache-2.0
// The prefix cache model: each node's cache is its own BlockAllocator's
// prefix cache (enable_prefix_cache, the allocator's eviction), so capacity
// and eviction are the real ones. This file owns a request's block hashes
// (from its trace hash_ids), the lookups that pin a node's cached prefix,
// recording the hashes of computed and received prompts, and the KV events:
// read from each node's allocator whenever the node reports its load, and
// applied to the router's PrefixIndex (ClusterView::prefix_index())
// kv_event_delay_ms later, in order. It may call the allocator, the
// ClusterView and Push.
//
// Hashes. A Mooncake hash id names a 512-token block and everything before
// it; block j of the prompt (block_tokens tokens) lies in hash block
// j * block_tokens / hash_block_tokens, so its hash mixes that id with j:
// two prompts share block j's hash exactly when they share the prefix up to
// the hash block that holds it. Only full blocks get a hash (engines cache
// only full blocks), and only those the hash ids cover.

#include <algorithm>
#include <utility>

#include "absl/status/statusor.h"
#include "flowkv/block_allocator.h"
#include "flowkv/block_list.h"
#include "flowkv/kv_events.h"
#include "flowkv/prefix_index.h"
#include "lib/sim/simulator_impl.h"

namespace flowkv::internal::sim {
namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

void Sim::BuildHashes(Req& q, const SimRequest& in) const {
  q.hashes.clear();
  if (!prefix_cache_ || in.hash_ids.empty()) return;
  const uint64_t full = in.input_tokens / block_tokens_;
  const uint64_t covered =
      in.hash_ids.size() * uint64_t{o_.hash_block_tokens} / block_tokens_;
  const uint64_t n = std::min(full, covered);
  q.hashes.reserve(n);
  for (uint64_t j = 0; j < n; ++j) {
    const uint64_t id = in.hash_ids[j * block_tokens_ / o_.hash_block_tokens];
    q.hashes.push_back(Mix(Mix(id) ^ j));
  }
}

BlockList Sim::PinPrefix(Node& n, Index r) {
  const Req& q = reqs_[r];
  if (!prefix_cache_ || q.hashes.empty()) return {};
  absl::StatusOr<BlockList> prefix = n.alloc->Lookup(q.hashes);
  return prefix.ok() ? std::move(*prefix) : BlockList();
}

uint32_t Sim::PeekCachedTokens(Node& n, Index r) {
  BlockList prefix = PinPrefix(n, r);
  if (prefix.empty()) return 0;
  (void)n.alloc->Free(prefix);  // unpins: the blocks stay cached
  const uint32_t in = reqs_[r].rec.input_tokens;
  return static_cast<uint32_t>(
      std::min<uint64_t>(prefix.num_blocks() * block_tokens_, in - 1));
}

void Sim::CacheHashes(Node& n, const BlockList& blocks, Index r) {
  const Req& q = reqs_[r];
  if (!prefix_cache_ || q.hashes.empty()) return;
  (void)n.alloc->CacheBlocks(blocks, q.hashes);
}

void Sim::PublishEvents(Node& n) {
  if (!prefix_cache_) return;
  KvEventBatch batch = n.alloc->ReadEvents(n.events_read, SIZE_MAX);
  if (batch.events.empty() && !batch.fell_behind) return;
  if (!batch.events.empty()) n.events_read = batch.events.back().seq;
  if (batch.fell_behind) n.events_read = batch.latest_seq;
  const Index node = static_cast<Index>(&n - nodes_.data());
  n.events_in_flight.push_back(std::move(batch));
  if (o_.kv_event_delay_ms <= 0) {
    DeliverEvents(node);
  } else {
    Push(now_ + o_.kv_event_delay_ms, EventType::kKvEvents, node);
  }
}

void Sim::DeliverEvents(Index node) {
  Node& n = nodes_[node];
  if (n.events_in_flight.empty()) return;
  KvEventBatch batch = std::move(n.events_in_flight.front());
  n.events_in_flight.pop_front();
  ++res_.kv_event_batches;
  PrefixIndex& index = view_->prefix_index();
  if (!index.ApplyEvents(n.id, batch).ok()) {
    // The router lost events: it resynchronises from the node's snapshot
    // (taken now; the batches still in flight then apply on top of it, the
    // ones it already covers being ignored as duplicates).
    ++res_.index_resyncs;
    index.ApplySnapshot(n.id, n.alloc->Snapshot());
  }
}

}  // namespace flowkv::internal::sim
