// SPDX-License-Identifier: Apache-2.0
// KV cache events: what a BlockAllocator with a prefix cache tells a router
// about the blocks it can serve from cache, and the wire format that carries
// them to a router in another process.
//
// A block hash (BlockHash) identifies the content of one full block *and
// everything before it*: the engine computes hashes[i] from hashes[i - 1] and
// the tokens of block i (a chained hash, as vLLM's and SGLang's block
// managers do). The allocator never hashes tokens itself; it stores the
// caller's values, so a router that sees the same hashes can match a new
// request's prompt against every worker's cache.
//
// Each allocator numbers its events 1, 2, 3, ... (seq). A subscriber keeps
// the last seq it applied and asks for everything after it
// (BlockAllocator::ReadEvents). The allocator keeps the newest
// `event_buffer_capacity` events; a subscriber that asks for an older seq
// gets `fell_behind = true` and must rebuild its view from a snapshot
// (BlockAllocator::Snapshot), which says which seq it reflects, then read
// on from that seq.
//
//   uint64_t applied = 0;
//   KvEventBatch batch = allocator->ReadEvents(applied, 1024);
//   if (batch.fell_behind) {
//     KvCacheSnapshot snap = allocator->Snapshot();
//     index.Reset(snap);            // the router's own index
//     applied = snap.seq;
//   } else {
//     for (const KvEvent& e : batch.events) index.Apply(e);
//     if (!batch.events.empty()) applied = batch.events.back().seq;
//   }
//   std::string wire = flowkv::EncodeKvEventBatch(batch);   // to the router
//
// Thread safety: plain value types and pure functions (thread-safe).

#ifndef FLOWKV_KV_EVENTS_H_
#define FLOWKV_KV_EVENTS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"

namespace flowkv {

// The caller's hash of one full block and all blocks before it (a chained
// token-content hash). Any 64-bit value; two different prefixes with the
// same hash are treated as the same cached content (a hash collision is a
// false cache hit, as in every engine's prefix cache).
using BlockHash = uint64_t;

struct KvEvent {
  enum class Kind : uint8_t {
    // `hashes` became findable by Lookup, held by the blocks `runs` (in the
    // same order: runs cover exactly hashes.size() blocks). hashes[0]
    // continues the chain after `parent` when has_parent is true; otherwise
    // hashes[0] is the first block of a prompt. The hashes are consecutive
    // links of one chain.
    kBlockStored = 1,
    // `hashes` (held by `runs`, in the same order) are no longer cached:
    // evicted, or dropped by ClearCache when still in use. Not necessarily
    // one chain; parent is unused (has_parent false).
    kBlockRemoved = 2,
    // Every cached hash of this allocator is gone (ClearCache); hashes and
    // runs are empty.
    kAllCleared = 3,
  };

  uint64_t seq = 0;
  Kind kind = Kind::kBlockStored;
  std::vector<BlockHash> hashes;
  bool has_parent = false;
  BlockHash parent = 0;
  std::vector<BlockRun> runs;

  friend bool operator==(const KvEvent&, const KvEvent&) = default;
};

// What BlockAllocator::ReadEvents returns.
struct KvEventBatch {
  // Events with seq > the caller's after_seq, oldest first, consecutive.
  std::vector<KvEvent> events;
  // True when events after the caller's seq were already dropped from the
  // buffer (or the caller's seq is ahead of the allocator's, as after an
  // allocator restart): the caller must resynchronise from a Snapshot.
  // `events` is then empty.
  bool fell_behind = false;
  // The newest seq published so far (0 before the first event).
  uint64_t latest_seq = 0;

  friend bool operator==(const KvEventBatch&, const KvEventBatch&) = default;
};

// One block findable by Lookup.
struct KvCachedBlock {
  BlockHash hash = 0;
  // The hash before it in its chain, when it has one (as in kBlockStored).
  bool has_parent = false;
  BlockHash parent = 0;
  BlockId block = 0;
  // Held by at least one list (pinned, shared or still running) rather than
  // cached-evictable.
  bool in_use = false;

  friend bool operator==(const KvCachedBlock&, const KvCachedBlock&) = default;
};

// Every hash the allocator's Lookup can find, as of event `seq` (applying
// the events after `seq` to it gives the allocator's later states).
struct KvCacheSnapshot {
  uint64_t seq = 0;
  // Ordered by block id. A block's parent may be absent (evicted first).
  std::vector<KvCachedBlock> blocks;

  friend bool operator==(const KvCacheSnapshot&,
                         const KvCacheSnapshot&) = default;
};

// ---- Wire format ----------------------------------------------------------
// Little-endian, versioned (a 4-byte magic then a u16 version, currently 1).
// Decoding checks every length and value: truncated, oversized or
// inconsistent input (a run count that does not match the hash count,
// a block run past 2^32 - 1, seqs that are not consecutive, an unknown kind
// or version, trailing bytes) is InvalidArgument, never a crash.

FLOWKV_EXPORT std::string EncodeKvEventBatch(const KvEventBatch& batch);
FLOWKV_EXPORT absl::StatusOr<KvEventBatch> DecodeKvEventBatch(
    std::string_view bytes);

FLOWKV_EXPORT std::string EncodeKvCacheSnapshot(const KvCacheSnapshot& snap);
FLOWKV_EXPORT absl::StatusOr<KvCacheSnapshot> DecodeKvCacheSnapshot(
    std::string_view bytes);

}  // namespace flowkv

#endif  // FLOWKV_KV_EVENTS_H_
