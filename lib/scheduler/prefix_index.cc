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
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_format.h"

namespace flowkv {

// The index's state. Thread safety: externally synchronized.
class PrefixIndex::Impl {
 public:
  absl::Status ApplyStored(PrefixNodeId node, uint64_t seq,
                           absl::Span<const uint64_t> hashes);
  absl::Status ApplyRemoved(PrefixNodeId node, uint64_t seq,
                            absl::Span<const uint64_t> hashes);
  absl::Status ApplyCleared(PrefixNodeId node, uint64_t seq);
  absl::Status ApplyEvents(PrefixNodeId node, const KvEventBatch& batch);
  void ApplySnapshot(PrefixNodeId node, const KvCacheSnapshot& snapshot);
  void MarkStale(PrefixNodeId node);
  void ApplySnapshot(PrefixNodeId node, uint64_t seq,
                     absl::Span<const uint64_t> hashes);
  void RemoveNode(PrefixNodeId node);
  void Match(absl::Span<const uint64_t> chain,
             std::vector<PrefixMatch>* out) const;
  uint32_t MatchNode(PrefixNodeId node, absl::Span<const uint64_t> chain) const;
  NodeState State(PrefixNodeId node) const;
  bool Holds(PrefixNodeId node, uint64_t hash) const;
  uint64_t total_blocks() const { return total_blocks_; }
  uint64_t distinct_blocks() const { return holders_.size(); }

 private:
  using Slot = uint32_t;
  struct Node {
    PrefixNodeId id = 0;
    bool present = false;
    NodeState state;
    absl::flat_hash_set<uint64_t> hashes;
  };

  Slot SlotOf(PrefixNodeId node);
  const Node* FindNode(PrefixNodeId node) const;
  // Checks seq against the node's; true when the event should apply.
  absl::Status Sequence(Node& n, uint64_t seq, bool* apply);
  void Insert(Slot slot, uint64_t hash);
  void Erase(Slot slot, uint64_t hash);
  void DropAll(Slot slot);

  std::vector<Node> nodes_;
  absl::flat_hash_map<PrefixNodeId, Slot> slots_;
  std::vector<Slot> free_slots_;
  // hash -> the slots holding it, sorted ascending.
  absl::flat_hash_map<uint64_t, absl::InlinedVector<Slot, 2>> holders_;
  uint64_t total_blocks_ = 0;
};

PrefixIndex::Impl::Slot PrefixIndex::Impl::SlotOf(PrefixNodeId node) {
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

const PrefixIndex::Impl::Node* PrefixIndex::Impl::FindNode(
    PrefixNodeId node) const {
  auto it = slots_.find(node);
  return it == slots_.end() ? nullptr : &nodes_[it->second];
}

absl::Status PrefixIndex::Impl::Sequence(Node& n, uint64_t seq, bool* apply) {
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

void PrefixIndex::Impl::Insert(Slot slot, uint64_t hash) {
  Node& n = nodes_[slot];
  if (!n.hashes.insert(hash).second) return;
  auto& list = holders_[hash];
  list.insert(std::lower_bound(list.begin(), list.end(), slot), slot);
  ++n.state.blocks;
  ++total_blocks_;
}

void PrefixIndex::Impl::Erase(Slot slot, uint64_t hash) {
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

void PrefixIndex::Impl::DropAll(Slot slot) {
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

absl::Status PrefixIndex::Impl::ApplyStored(PrefixNodeId node, uint64_t seq,
                                            absl::Span<const uint64_t> hashes) {
  const Slot slot = SlotOf(node);
  bool apply = false;
  absl::Status s = Sequence(nodes_[slot], seq, &apply);
  if (!apply) return s;
  for (uint64_t hash : hashes) Insert(slot, hash);
  return absl::OkStatus();
}

absl::Status PrefixIndex::Impl::ApplyRemoved(
    PrefixNodeId node, uint64_t seq, absl::Span<const uint64_t> hashes) {
  const Slot slot = SlotOf(node);
  bool apply = false;
  absl::Status s = Sequence(nodes_[slot], seq, &apply);
  if (!apply) return s;
  for (uint64_t hash : hashes) Erase(slot, hash);
  return absl::OkStatus();
}

absl::Status PrefixIndex::Impl::ApplyCleared(PrefixNodeId node, uint64_t seq) {
  const Slot slot = SlotOf(node);
  bool apply = false;
  absl::Status s = Sequence(nodes_[slot], seq, &apply);
  if (!apply) return s;
  DropAll(slot);
  return absl::OkStatus();
}

absl::Status PrefixIndex::Impl::ApplyEvents(PrefixNodeId node,
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
  // An empty batch read after the index's seq, from a node that published
  // more: the events in between were lost (the reader advanced past them).
  if (batch.events.empty() && batch.latest_seq > State(node).last_seq &&
      !State(node).stale) {
    MarkStale(node);
    return absl::FailedPreconditionError(absl::StrFormat(
        "PrefixIndex: node %u published up to event %u but the index has "
        "only %u: events were lost; the node is stale until a snapshot is "
        "applied",
        node, batch.latest_seq, State(node).last_seq));
  }
  if (State(node).stale) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "PrefixIndex: node %u is stale; apply a snapshot", node));
  }
  return absl::OkStatus();
}

void PrefixIndex::Impl::ApplySnapshot(PrefixNodeId node,
                                      const KvCacheSnapshot& snapshot) {
  std::vector<uint64_t> hashes;
  hashes.reserve(snapshot.blocks.size());
  for (const KvCachedBlock& b : snapshot.blocks) hashes.push_back(b.hash);
  ApplySnapshot(node, snapshot.seq, hashes);
}

void PrefixIndex::Impl::MarkStale(PrefixNodeId node) {
  const Slot slot = SlotOf(node);
  Node& n = nodes_[slot];
  if (n.state.stale) return;
  DropAll(slot);
  n.state.stale = true;
  ++n.state.resyncs_needed;
}

void PrefixIndex::Impl::ApplySnapshot(PrefixNodeId node, uint64_t seq,
                                      absl::Span<const uint64_t> hashes) {
  const Slot slot = SlotOf(node);
  DropAll(slot);
  Node& n = nodes_[slot];
  n.state.stale = false;
  n.state.last_seq = seq;
  for (uint64_t hash : hashes) Insert(slot, hash);
}

void PrefixIndex::Impl::RemoveNode(PrefixNodeId node) {
  auto it = slots_.find(node);
  if (it == slots_.end()) return;
  const Slot slot = it->second;
  DropAll(slot);
  nodes_[slot] = Node{};
  slots_.erase(it);
  free_slots_.push_back(slot);
}

void PrefixIndex::Impl::Match(absl::Span<const uint64_t> chain,
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
  // Blocks of a shared prefix usually have the same holders as the block
  // before: then nobody leaves `alive` (it is a subset of those), and a
  // memcmp replaces the merge.
  const absl::InlinedVector<Slot, 2>* previous = &first->second;
  size_t i = 1;
  for (; i < chain.size() && !alive.empty(); ++i) {
    auto it = holders_.find(chain[i]);
    if (it == holders_.end()) break;
    const auto& holders = it->second;
    if (holders == *previous) continue;
    previous = &holders;
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

uint32_t PrefixIndex::Impl::MatchNode(PrefixNodeId node,
                                      absl::Span<const uint64_t> chain) const {
  const Node* n = FindNode(node);
  if (n == nullptr || n->state.stale) return 0;
  uint32_t i = 0;
  while (i < chain.size() && n->hashes.contains(chain[i])) ++i;
  return i;
}

PrefixIndex::NodeState PrefixIndex::Impl::State(PrefixNodeId node) const {
  const Node* n = FindNode(node);
  return n == nullptr ? NodeState{} : n->state;
}

bool PrefixIndex::Impl::Holds(PrefixNodeId node, uint64_t hash) const {
  const Node* n = FindNode(node);
  return n != nullptr && n->hashes.contains(hash);
}

PrefixIndex::PrefixIndex() : impl_(std::make_unique<Impl>()) {}
PrefixIndex::~PrefixIndex() = default;
PrefixIndex::PrefixIndex(const PrefixIndex& other)
    : impl_(std::make_unique<Impl>(*other.impl_)) {}
PrefixIndex& PrefixIndex::operator=(const PrefixIndex& other) {
  if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
// A moved-from index is empty, not null.
PrefixIndex::PrefixIndex(PrefixIndex&& other) noexcept
    : impl_(std::exchange(other.impl_, std::make_unique<Impl>())) {}
PrefixIndex& PrefixIndex::operator=(PrefixIndex&& other) noexcept {
  if (this != &other) {
    impl_ = std::exchange(other.impl_, std::make_unique<Impl>());
  }
  return *this;
}

absl::Status PrefixIndex::ApplyStored(PrefixNodeId node, uint64_t seq,
                                      absl::Span<const uint64_t> hashes) {
  return impl_->ApplyStored(node, seq, hashes);
}
absl::Status PrefixIndex::ApplyRemoved(PrefixNodeId node, uint64_t seq,
                                       absl::Span<const uint64_t> hashes) {
  return impl_->ApplyRemoved(node, seq, hashes);
}
absl::Status PrefixIndex::ApplyCleared(PrefixNodeId node, uint64_t seq) {
  return impl_->ApplyCleared(node, seq);
}
absl::Status PrefixIndex::ApplyEvents(PrefixNodeId node,
                                      const KvEventBatch& batch) {
  return impl_->ApplyEvents(node, batch);
}
void PrefixIndex::ApplySnapshot(PrefixNodeId node,
                                const KvCacheSnapshot& snapshot) {
  impl_->ApplySnapshot(node, snapshot);
}
void PrefixIndex::ApplySnapshot(PrefixNodeId node, uint64_t seq,
                                absl::Span<const uint64_t> hashes) {
  impl_->ApplySnapshot(node, seq, hashes);
}
void PrefixIndex::MarkStale(PrefixNodeId node) { impl_->MarkStale(node); }
void PrefixIndex::RemoveNode(PrefixNodeId node) { impl_->RemoveNode(node); }
void PrefixIndex::Match(absl::Span<const uint64_t> chain,
                        std::vector<PrefixMatch>* out) const {
  impl_->Match(chain, out);
}
uint32_t PrefixIndex::MatchNode(PrefixNodeId node,
                                absl::Span<const uint64_t> chain) const {
  return impl_->MatchNode(node, chain);
}
PrefixIndex::NodeState PrefixIndex::State(PrefixNodeId node) const {
  return impl_->State(node);
}
bool PrefixIndex::Holds(PrefixNodeId node, uint64_t hash) const {
  return impl_->Holds(node, hash);
}
uint64_t PrefixIndex::total_blocks() const { return impl_->total_blocks(); }
uint64_t PrefixIndex::distinct_blocks() const {
  return impl_->distinct_blocks();
}

}  // namespace flowkv
