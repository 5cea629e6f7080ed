// SPDX-License-Identifier: Apache-2.0
// PrefixIndex: the router's index of which node holds which KV block of
// which prompt prefix, fed by the nodes' KV events, answering "how many
// leading blocks of this request does each node have cached".
//
// A block is named by its hash, and the hash names the block together with
// every block before it (a chained hash, as the engines' prefix caches and
// BlockAllocator's prefix cache compute it), so a request's prefix is its
// chain of block hashes h[0], h[1], ... and node n's cached prefix is the
// longest i with h[0..i) all held by n.
//
// Feeding. Each node numbers its events 1, 2, 3, ...; the index applies a
// node's events in that order. An event whose seq is not the next one (a
// gap: events were dropped), or a read that fell behind the node's event
// log, makes the node stale: its entries are dropped and its prefix counts
// as 0 until ApplySnapshot gives its whole cache as of some seq; events at
// or before that seq are then ignored as duplicates, and the next one
// applies. So a subscriber that misses events re-synchronises with one
// snapshot and never serves a prefix the node may no longer hold.
//
//   flowkv::PrefixIndex index;
//   KvEventBatch batch = allocator->ReadEvents(index.State(node).last_seq,
//                                              1024);       // (or the wire)
//   if (!index.ApplyEvents(node, batch).ok()) {             // lost events
//     index.ApplySnapshot(node, allocator->Snapshot());
//   }
//   std::vector<flowkv::PrefixMatch> hits;
//   index.Match(request.block_hashes, &hits);              // per node
//
// Cost: Match is O(sum over chain positions of the nodes holding them) hash
// probes, stopping at the first block no node holds; Stored / Removed are
// O(blocks) probes. benchmarks/scheduler_benchmark.cc (BM_PrefixIndex)
// measures both at 64 and 1,024 nodes with a million cached blocks.
//
// Thread safety: externally synchronized (the router thread owns it, as it
// owns the ClusterView that holds it).

#ifndef FLOWKV_PREFIX_INDEX_H_
#define FLOWKV_PREFIX_INDEX_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "flowkv/export.h"
#include "flowkv/kv_events.h"

namespace flowkv {

// Same type as scheduler.h's NodeId.
using PrefixNodeId = uint32_t;

// One node's cached prefix of a request, in blocks (> 0).
struct PrefixMatch {
  PrefixNodeId node = 0;
  uint32_t blocks = 0;

  friend bool operator==(const PrefixMatch&, const PrefixMatch&) = default;
};

class FLOWKV_EXPORT PrefixIndex {
 public:
  // What the index knows of one node.
  struct NodeState {
    // The seq of the last event applied (or of the snapshot); 0 before any.
    uint64_t last_seq = 0;
    // Missed events: prefix 0 until a snapshot is applied.
    bool stale = false;
    // Blocks held.
    uint64_t blocks = 0;
    // Times the node went stale (a gap or fell_behind).
    uint64_t resyncs_needed = 0;
  };

  PrefixIndex();
  ~PrefixIndex();
  // Copies are deep (a ClusterView is copyable).
  PrefixIndex(const PrefixIndex& other);
  PrefixIndex& operator=(const PrefixIndex& other);
  PrefixIndex(PrefixIndex&&) noexcept;
  PrefixIndex& operator=(PrefixIndex&&) noexcept;

  // Event `seq` of `node`: it cached `hashes` (stored) / dropped them
  // (removed) / dropped everything (cleared). A node not seen before starts
  // at last_seq 0. Returns OK when the event applied, or was ignored as a
  // duplicate (seq <= last_seq) or because the node is stale (the snapshot
  // will cover it); FailedPrecondition when seq skips ahead of last_seq + 1:
  // the node is now stale (the caller should fetch a snapshot). Storing a
  // hash the node holds, or removing one it does not, changes nothing.
  absl::Status ApplyStored(PrefixNodeId node, uint64_t seq,
                           absl::Span<const uint64_t> hashes);
  absl::Status ApplyRemoved(PrefixNodeId node, uint64_t seq,
                            absl::Span<const uint64_t> hashes);
  absl::Status ApplyCleared(PrefixNodeId node, uint64_t seq);

  // Applies a batch read from the node's BlockAllocator::ReadEvents (or
  // decoded from the wire), event by event as above. A batch that
  // fell_behind marks the node stale, and so does an empty batch whose
  // latest_seq is past the index's last_seq (the reader skipped events the
  // index never got). FailedPrecondition when the node is
  // (now) stale: fetch a snapshot (BlockAllocator::Snapshot) and apply it.
  absl::Status ApplyEvents(PrefixNodeId node, const KvEventBatch& batch);
  // ApplySnapshot of every hash in `snapshot`, as of snapshot.seq.
  void ApplySnapshot(PrefixNodeId node, const KvCacheSnapshot& snapshot);

  // The subscriber of `node` fell behind (its events were dropped): the node
  // is stale until ApplySnapshot.
  void MarkStale(PrefixNodeId node);

  // Replaces everything known of `node` with `hashes`, its whole cache as of
  // event `seq`; the node is no longer stale and applies events from
  // seq + 1. Duplicate hashes are allowed.
  void ApplySnapshot(PrefixNodeId node, uint64_t seq,
                     absl::Span<const uint64_t> hashes);

  // Forgets `node` (it left the cluster). Unknown nodes are ignored.
  void RemoveNode(PrefixNodeId node);

  // Sets `*out` to the nodes with a cached prefix of `chain` of at least one
  // block, each with its length, in no particular order. Stale nodes are
  // never listed.
  void Match(absl::Span<const uint64_t> chain,
             std::vector<PrefixMatch>* out) const;
  // `node`'s cached prefix of `chain`, in blocks (0 for a stale or unknown
  // node).
  uint32_t MatchNode(PrefixNodeId node, absl::Span<const uint64_t> chain) const;

  // The node's state; a default NodeState for an unknown node.
  NodeState State(PrefixNodeId node) const;
  // Whether `node` holds `hash` (false when stale).
  bool Holds(PrefixNodeId node, uint64_t hash) const;
  // (node, block) pairs held, over all nodes.
  uint64_t total_blocks() const;
  // Distinct hashes held by at least one node.
  uint64_t distinct_blocks() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flowkv

#endif  // FLOWKV_PREFIX_INDEX_H_
