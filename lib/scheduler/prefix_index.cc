// SPDX-License-Identifier: Apache-2.0
// PrefixIndex (include/flowkv/prefix_index.h): the hash -> holders map, the
// per-node hash sets that make Cleared, staleness and snapshots O(node's
// blocks), and the event sequencing. Why a hash map and not a radix tree:
// the block hashes are chained (a hash names its whole prefix), so a
// prefix's blocks need no tree to be told apart, and a lookup is one probe
// per block of the request; the holder lists stay short (a block is cached
// on few nodes), so Match intersects them in O(holders).

#include "flowkv/prefix_index.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"

namespace flowkv {

PrefixIndex::Slot PrefixIndex::SlotOf(PrefixNodeId node) {
  auto it = slots_.find(node);
  if (it != slots_.end()) return it->second;
  Slot slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<Slot>(nodes_.size());
    nodes_.emplace_back();
  }
  nodes_[slot] = Node();
  nodes_[slot].id = node;
  nodes_[slot].present = true;
  slots_.emplace(node, slot);
  return slot;
}

const PrefixIndex::Node* PrefixIndex::FindNode(PrefixNodeId node) const {
  auto it = slots_.find(node);
  return it == slots_.end() ? nullptr : &nodes_[it->second];
}

absl::Status PrefixIndex::Sequence(Node& n, uint64_t seq, bool* apply) {
  *apply = false;
  if (n.state.stale || seq <= n.state.last_seq) return absl::OkStatus();
  if (seq != n.state.last_seq + 1) {
    const uint64_t expected = n.state.last_seq + 1;
    DropAll(static_cast<Slot>(&n - nodes_.data()));
    n.state.stale = true;
    ++n.state.resyncs_needed;
    return absl::FailedPreconditionError(absl::StrFormat(
        "PrefixIndex: node %u sent event %u, expected %u: events were lost; "
        "the node is stale until a snapshot is applied",
        n.id, seq, expected));
  }
  n.state.last_seq = seq;
  *apply = true;
  return absl::OkStatus();
}

void PrefixIndex::Insert(Slot slot, uint64_t hash) {
  Node& n = nodes_[slot];
  if (!n.hashes.insert(hash).second) return;
  auto& list = holders_[hash];
  list.insert(std::lower_bound(list.begin(), list.end(), slot), slot);
  ++n.state.blocks;
  ++total_blocks_;
}

void PrefixIndex::Erase(Slot slot, uint64_t hash) {
  Node& n = nodes_[slot];
  if (n.hashes.erase(hash) == 0) return;
  auto it = holders_.find(hash);
  if (it != holders_.end()) {
    auto& list = it->second;
    auto pos = std::lower_bound(list.begin(), list.end(), slot);
    if (pos != list.end() && *pos == slot) list.erase(pos);
    if (list.empty()) holders_.erase(it);
  }
  --n.state.blocks;
  --total_blocks_;
}

void PrefixIndex::DropAll(Slot slot) {
  Node& n = nodes_[slot];
  for (uint64_t hash : n.hashes) {
    auto it = holders_.find(hash);
    if (it == holders_.end()) continue;
    auto& list = it->second;
    auto pos = std::lower_bound(list.begin(), list.end(), slot);
    if (pos != list.end() && *pos == slot) list.erase(pos);
    if (list.empty()) holders_.erase(it);
  }
  total_blocks_ -= n.state.blocks;
  n.state.blocks = 0;
  n.hashes.clear();
}

absl::Status PrefixIndex::ApplyStored(PrefixNodeId node, uint64_t seq,
                                      absl::Span<const uint64_t> hashes) {
  const Slot slot = SlotOf(node);
  bool apply = false;
  absl::Status s = Sequence(nodes_[slot], seq, &apply);
  if (!apply) return s;
  for (uint64_t hash : hashes) Insert(slot, hash);
  return absl::OkStatus();
}

absl::Status PrefixIndex::ApplyRemoved(PrefixNodeId node, uint64_t seq,
                                       absl::Span<const uint64_t> hashes) {
  const Slot slot = SlotOf(node);
  bool apply = false;
  absl::Status s = Sequence(nodes_[slot], seq, &apply);
  if (!apply) return s;
  for (uint64_t hash : hashes) Erase(slot, hash);
  return absl::OkStatus();
}

absl::Status PrefixIndex::ApplyCleared(PrefixNodeId node, uint64_t seq) {
  const Slot slot = SlotOf(node);
  bool apply = false;
  absl::Status s = Sequence(nodes_[slot], seq, &apply);
  if (!apply) return s;
  DropAll(slot);
  return absl::OkStatus();
}

absl::Status PrefixIndex::ApplyEvents(PrefixNodeId node,
                                      const KvEventBatch& batch) {
  if (batch.fell_behind) {
    MarkStale(node);
    return absl::FailedPreconditionError(absl::StrFormat(
        "PrefixIndex: node %u: the event reader fell behind (latest seq %u); "
        "the node is stale until a snapshot is applied",
        node, batch.latest_seq));
  }
  for (const KvEvent& e : batch.events) {
    absl::Status s;
    switch (e.kind) {
      case KvEvent::Kind::kBlockStored:
        s = ApplyStored(node, e.seq, e.hashes);
        break;
      case KvEvent::Kind::kBlockRemoved:
        s = ApplyRemoved(node, e.seq, e.hashes);
        break;
      case KvEvent::Kind::kAllCleared:
        s = ApplyCleared(node, e.seq);
        break;
      default:
        MarkStale(node);
        s = absl::InvalidArgumentError(absl::StrFormat(
            "PrefixIndex: node %u: event %u has unknown kind %d; the node is "
            "stale until a snapshot is applied",
            node, e.seq, static_cast<int>(e.kind)));
    }
    if (!s.ok()) return s;
  }
  if (State(node).stale) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "PrefixIndex: node %u is stale; apply a snapshot", node));
  }
  return absl::OkStatus();
}

void PrefixIndex::ApplySnapshot(PrefixNodeId node,
                                const KvCacheSnapshot& snapshot) {
  std::vector<uint64_t> hashes;
  hashes.reserve(snapshot.blocks.size());
  for (const KvCachedBlock& b : snapshot.blocks) hashes.push_back(b.hash);
  ApplySnapshot(node, snapshot.seq, hashes);
}

void PrefixIndex::MarkStale(PrefixNodeId node) {
  const Slot slot = SlotOf(node);
  Node& n = nodes_[slot];
  if (n.state.stale) return;
  DropAll(slot);
  n.state.stale = true;
  ++n.state.resyncs_needed;
}

void PrefixIndex::ApplySnapshot(PrefixNodeId node, uint64_t seq,
                                absl::Span<const uint64_t> hashes) {
  const Slot slot = SlotOf(node);
  DropAll(slot);
  Node& n = nodes_[slot];
  n.state.stale = false;
  n.state.last_seq = seq;
  for (uint64_t hash : hashes) Insert(slot, hash);
}

void PrefixIndex::RemoveNode(PrefixNodeId node) {
  auto it = slots_.find(node);
  if (it == slots_.end()) return;
  const Slot slot = it->second;
  DropAll(slot);
  nodes_[slot] = Node{};
  slots_.erase(it);
  free_slots_.push_back(slot);
}

void PrefixIndex::Match(absl::Span<const uint64_t> chain,
                        std::vector<PrefixMatch>* out) const {
  out->clear();
  if (chain.empty()) return;
  auto first = holders_.find(chain[0]);
  if (first == holders_.end()) return;
  // `alive`: slots holding every block so far (sorted); a slot leaves it at
  // the first block it lacks, with that position as its prefix length.
  absl::InlinedVector<Slot, 16> alive(first->second.begin(),
                                      first->second.end());
  absl::InlinedVector<Slot, 16> next;
  size_t i = 1;
  for (; i < chain.size() && !alive.empty(); ++i) {
    auto it = holders_.find(chain[i]);
    if (it == holders_.end()) break;
    const auto& holders = it->second;
    next.clear();
    size_t h = 0;
    for (Slot slot : alive) {
      while (h < holders.size() && holders[h] < slot) ++h;
      if (h < holders.size() && holders[h] == slot) {
        next.push_back(slot);
      } else {
        out->push_back({nodes_[slot].id, static_cast<uint32_t>(i)});
      }
    }
    alive.swap(next);
  }
  for (Slot slot : alive) {
    out->push_back({nodes_[slot].id, static_cast<uint32_t>(i)});
  }
}

uint32_t PrefixIndex::MatchNode(PrefixNodeId node,
                                absl::Span<const uint64_t> chain) const {
  const Node* n = FindNode(node);
  if (n == nullptr || n->state.stale) return 0;
  uint32_t i = 0;
  while (i < chain.size() && n->hashes.contains(chain[i])) ++i;
  return i;
}

PrefixIndex::NodeState PrefixIndex::State(PrefixNodeId node) const {
  const Node* n = FindNode(node);
  return n == nullptr ? NodeState{} : n->state;
}

bool PrefixIndex::Holds(PrefixNodeId node, uint64_t hash) const {
  const Node* n = FindNode(node);
  return n != nullptr && n->hashes.contains(hash);
}

}  // namespace flowkv
