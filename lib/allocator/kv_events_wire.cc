// SPDX-License-Identifier: Apache-2.0
// The wire format of KV events and cache snapshots (include/flowkv/
// kv_events.h), built on lib/common/byte_io.h. Version 1:
//
//   batch    := "FKVE" u16 version u8 flags(bit 0: fell_behind)
//               u64 latest_seq u32 num_events event*
//   event    := u64 seq u8 kind u8 has_parent u64 parent
//               u32 num_hashes u64 hash* u32 num_runs (u32 first u32 count)*
//   snapshot := "FKVS" u16 version u64 seq u32 num_blocks
//               (u64 hash u8 flags(bit 0: has_parent, bit 1: in_use)
//                u64 parent u32 block)*
//
// Decoding accepts exactly what Encode writes for a well-formed batch or
// snapshot (so decode then encode gives the same bytes): every count is
// checked against the bytes left before anything is allocated.
#include <cstdint>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "flowkv/kv_events.h"
#include "lib/common/byte_io.h"

namespace flowkv {
namespace {

using internal::ByteReader;
using internal::ByteWriter;

constexpr char kBatchMagic[] = "FKVE";
constexpr char kSnapshotMagic[] = "FKVS";
constexpr uint16_t kVersion = 1;
// Bytes of an event with no hashes and no runs; of one snapshot entry.
constexpr size_t kMinEventBytes = 8 + 1 + 1 + 8 + 4 + 4;
constexpr size_t kSnapshotEntryBytes = 8 + 1 + 8 + 4;

bool ReadVersion(ByteReader& r, const char* magic) {
  uint16_t version = 0;
  if (!r.Magic("magic", magic) || !r.U16("version", &version)) return false;
  if (version != kVersion) {
    return r.Fail(absl::StrFormat(
        "unsupported version %d (this build reads %d)", version, kVersion));
  }
  return true;
}

// A u32 count of items of `item_bytes` each, no more than the bytes left.
bool ReadCount(ByteReader& r, const char* field, size_t item_bytes,
               uint32_t* n) {
  if (!r.U32(field, n)) return false;
  if (uint64_t{*n} * item_bytes > r.remaining()) {
    return r.Fail(absl::StrFormat("%s %d needs %d bytes, %d left", field, *n,
                                  uint64_t{*n} * item_bytes, r.remaining()));
  }
  return true;
}

bool ReadEvent(ByteReader& r, KvEvent* event) {
  uint8_t kind = 0;
  uint8_t has_parent = 0;
  uint32_t num_hashes = 0;
  if (!r.U64("seq", &event->seq) || !r.U8("kind", &kind) ||
      !r.U8("has_parent", &has_parent) || !r.U64("parent", &event->parent) ||
      !ReadCount(r, "num_hashes", 8, &num_hashes)) {
    return false;
  }
  if (kind < 1 || kind > 3) {
    return r.Fail(absl::StrFormat("unknown event kind %d", kind));
  }
  event->kind = static_cast<KvEvent::Kind>(kind);
  if (has_parent > 1 || (has_parent == 0 && event->parent != 0)) {
    return r.Fail(absl::StrFormat("bad parent (has_parent %d, parent %#x)",
                                  has_parent, event->parent));
  }
  event->has_parent = has_parent == 1;
  if (event->has_parent && event->kind != KvEvent::Kind::kBlockStored) {
    return r.Fail("a parent on an event that is not kBlockStored");
  }
  event->hashes.resize(num_hashes);
  for (BlockHash& hash : event->hashes) {
    if (!r.U64("hash", &hash)) return false;
  }
  uint32_t num_runs = 0;
  if (!ReadCount(r, "num_runs", 8, &num_runs)) return false;
  event->runs.resize(num_runs);
  uint64_t blocks = 0;
  for (BlockRun& run : event->runs) {
    if (!r.U32("run.first", &run.first) || !r.U32("run.count", &run.count)) {
      return false;
    }
    if (run.count == 0 || run.end() > UINT32_MAX) {
      return r.Fail(absl::StrFormat("bad run %d+%d", run.first, run.count));
    }
    blocks += run.count;
  }
  if (blocks != num_hashes) {
    return r.Fail(absl::StrFormat("%d hashes held by runs of %d blocks",
                                  num_hashes, blocks));
  }
  if ((event->kind == KvEvent::Kind::kAllCleared) != (num_hashes == 0)) {
    return r.Fail(
        absl::StrFormat("event kind %d with %d hashes", kind, num_hashes));
  }
  return true;
}

}  // namespace

std::string EncodeKvEventBatch(const KvEventBatch& batch) {
  ByteWriter w;
  w.Magic(kBatchMagic);
  w.U16(kVersion);
  w.U8(batch.fell_behind ? 1 : 0);
  w.U64(batch.latest_seq);
  w.U32(static_cast<uint32_t>(batch.events.size()));
  for (const KvEvent& event : batch.events) {
    w.U64(event.seq);
    w.U8(static_cast<uint8_t>(event.kind));
    w.U8(event.has_parent ? 1 : 0);
    w.U64(event.has_parent ? event.parent : 0);
    w.U32(static_cast<uint32_t>(event.hashes.size()));
    for (BlockHash hash : event.hashes) w.U64(hash);
    w.U32(static_cast<uint32_t>(event.runs.size()));
    for (const BlockRun& run : event.runs) {
      w.U32(run.first);
      w.U32(run.count);
    }
  }
  return std::move(w).Take();
}

absl::StatusOr<KvEventBatch> DecodeKvEventBatch(std::string_view bytes) {
  ByteReader r(bytes, "KvEventBatch");
  KvEventBatch batch;
  uint8_t flags = 0;
  uint32_t num_events = 0;
  if (!ReadVersion(r, kBatchMagic) || !r.U8("flags", &flags) ||
      !r.U64("latest_seq", &batch.latest_seq) ||
      !ReadCount(r, "num_events", kMinEventBytes, &num_events)) {
    return r.status();
  }
  if (flags > 1) {
    r.Fail(absl::StrFormat("bad flags %#x", flags));
    return r.status();
  }
  batch.fell_behind = flags == 1;
  if (batch.fell_behind && num_events != 0) {
    r.Fail("events in a batch that fell behind");
    return r.status();
  }
  batch.events.resize(num_events);
  for (size_t i = 0; i < batch.events.size(); ++i) {
    KvEvent& event = batch.events[i];
    if (!ReadEvent(r, &event)) return r.status();
    const bool in_order = event.seq >= 1 && event.seq <= batch.latest_seq &&
                          (i == 0 || event.seq == batch.events[i - 1].seq + 1);
    if (!in_order) {
      r.Fail(absl::StrFormat(
          "event %d has seq %d (events are consecutive, 1 .. latest_seq %d)", i,
          event.seq, batch.latest_seq));
      return r.status();
    }
  }
  if (absl::Status s = r.End(); !s.ok()) return s;
  return batch;
}

std::string EncodeKvCacheSnapshot(const KvCacheSnapshot& snap) {
  ByteWriter w;
  w.Reserve(4 + 2 + 8 + 4 + snap.blocks.size() * kSnapshotEntryBytes);
  w.Magic(kSnapshotMagic);
  w.U16(kVersion);
  w.U64(snap.seq);
  w.U32(static_cast<uint32_t>(snap.blocks.size()));
  for (const KvCachedBlock& block : snap.blocks) {
    w.U64(block.hash);
    w.U8((block.has_parent ? 1 : 0) | (block.in_use ? 2 : 0));
    w.U64(block.has_parent ? block.parent : 0);
    w.U32(block.block);
  }
  return std::move(w).Take();
}

absl::StatusOr<KvCacheSnapshot> DecodeKvCacheSnapshot(std::string_view bytes) {
  ByteReader r(bytes, "KvCacheSnapshot");
  KvCacheSnapshot snap;
  uint32_t n = 0;
  if (!ReadVersion(r, kSnapshotMagic) || !r.U64("seq", &snap.seq) ||
      !ReadCount(r, "num_blocks", kSnapshotEntryBytes, &n)) {
    return r.status();
  }
  snap.blocks.resize(n);
  absl::flat_hash_set<BlockHash> seen;
  seen.reserve(n);
  for (size_t i = 0; i < snap.blocks.size(); ++i) {
    KvCachedBlock& block = snap.blocks[i];
    uint8_t flags = 0;
    if (!r.U64("hash", &block.hash) || !r.U8("flags", &flags) ||
        !r.U64("parent", &block.parent) || !r.U32("block", &block.block)) {
      return r.status();
    }
    block.has_parent = (flags & 1) != 0;
    block.in_use = (flags & 2) != 0;
    if (flags > 3 || (!block.has_parent && block.parent != 0)) {
      r.Fail(absl::StrFormat("entry %d: bad flags %#x or parent %#x", i, flags,
                             block.parent));
      return r.status();
    }
    if (block.block == UINT32_MAX ||
        (i > 0 && block.block <= snap.blocks[i - 1].block)) {
      r.Fail(absl::StrFormat(
          "entry %d: block %d (blocks are ascending, below 2^32 - 1)", i,
          block.block));
      return r.status();
    }
    if (!seen.insert(block.hash).second) {
      r.Fail(
          absl::StrFormat("entry %d: hash %#x appears twice", i, block.hash));
      return r.status();
    }
  }
  if (absl::Status s = r.End(); !s.ok()) return s;
  return snap;
}

}  // namespace flowkv
