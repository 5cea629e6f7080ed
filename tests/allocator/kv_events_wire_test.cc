// SPDX-License-Identifier: Apache-2.0
// The wire format of KV event batches and cache snapshots
// (include/flowkv/kv_events.h): round trips of what an allocator publishes,
// and raw bytes: every truncation, every byte flipped, and each rule.
#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/block_allocator.h"
#include "flowkv/kv_events.h"

namespace flowkv {
namespace {

// A batch and a snapshot from a real allocator: stored chains with and
// without a parent, an eviction, a clear.
struct Published {
  KvEventBatch batch;
  KvCacheSnapshot snapshot;
};

Published Publish() {
  auto allocator = BlockAllocator::Create(
      {.num_blocks = 8, .growth_slack_blocks = 0, .enable_prefix_cache = true});
  REQUIRE(allocator.ok());
  BlockAllocator& a = **allocator;
  BlockList x = *a.Allocate(4);
  REQUIRE(a.CacheBlocks(x, {11, 12}).ok());
  REQUIRE(a.Free(x, {11, 12, 13, 14}).ok());
  BlockList y = *a.Allocate(8);  // evicts
  REQUIRE(a.Free(y, {0x8000000000000001ull}).ok());
  REQUIRE(a.ClearCache().ok());
  BlockList z = *a.Allocate(3);
  REQUIRE(a.CacheBlocks(z, {21, 22, 23}).ok());
  Published p{a.ReadEvents(0, 100), a.Snapshot()};
  REQUIRE(p.batch.events.size() == 6);
  REQUIRE(p.snapshot.blocks.size() == 3);
  return p;
}

TEST_CASE("Event batches and snapshots round-trip", "[allocator][events]") {
  const Published p = Publish();
  const std::string wire = EncodeKvEventBatch(p.batch);
  absl::StatusOr<KvEventBatch> back = DecodeKvEventBatch(wire);
  REQUIRE(back.ok());
  CHECK(*back == p.batch);
  const std::string snap_wire = EncodeKvCacheSnapshot(p.snapshot);
  absl::StatusOr<KvCacheSnapshot> snap = DecodeKvCacheSnapshot(snap_wire);
  REQUIRE(snap.ok());
  CHECK(*snap == p.snapshot);

  KvEventBatch behind{.events = {}, .fell_behind = true, .latest_seq = 9};
  absl::StatusOr<KvEventBatch> b =
      DecodeKvEventBatch(EncodeKvEventBatch(behind));
  REQUIRE(b.ok());
  CHECK(*b == behind);
  CHECK(DecodeKvCacheSnapshot(EncodeKvCacheSnapshot({})).ok());
}

// Every prefix is truncated; every byte flipped either still decodes to
// something that encodes to the same bytes, or is InvalidArgument.
template <typename Decode, typename Encode>
void CheckRawBytes(const std::string& wire, Decode decode, Encode encode) {
  for (size_t n = 0; n < wire.size(); ++n) {
    auto r = decode(wire.substr(0, n));
    REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  }
  REQUIRE(decode(wire + std::string(1, '\0')).status().code() ==
          absl::StatusCode::kInvalidArgument);
  for (size_t i = 0; i < wire.size(); ++i) {
    for (uint8_t bit : {0x01, 0x80, 0xff}) {
      std::string bad = wire;
      bad[i] = static_cast<char>(bad[i] ^ bit);
      auto r = decode(bad);
      if (r.ok()) {
        REQUIRE(encode(*r) == bad);
      } else {
        REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
      }
    }
  }
}

TEST_CASE("Raw bytes: truncated, flipped, trailing", "[allocator][events]") {
  const Published p = Publish();
  CheckRawBytes(
      EncodeKvEventBatch(p.batch),
      [](std::string_view b) { return DecodeKvEventBatch(b); },
      [](const KvEventBatch& b) { return EncodeKvEventBatch(b); });
  CheckRawBytes(
      EncodeKvCacheSnapshot(p.snapshot),
      [](std::string_view b) { return DecodeKvCacheSnapshot(b); },
      [](const KvCacheSnapshot& s) { return EncodeKvCacheSnapshot(s); });
  CHECK(DecodeKvEventBatch("").status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(DecodeKvEventBatch(EncodeKvCacheSnapshot(p.snapshot)).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Each decoding rule", "[allocator][events]") {
  auto rejects = [](const KvEventBatch& batch, const char* why) {
    INFO(why);
    absl::StatusOr<KvEventBatch> r =
        DecodeKvEventBatch(EncodeKvEventBatch(batch));
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  };
  const KvEvent stored{.seq = 1,
                       .kind = KvEvent::Kind::kBlockStored,
                       .hashes = {1, 2},
                       .has_parent = true,
                       .parent = 7,
                       .runs = {{4, 2}}};
  KvEventBatch ok{.events = {stored}, .fell_behind = false, .latest_seq = 1};
  REQUIRE(DecodeKvEventBatch(EncodeKvEventBatch(ok)).ok());

  KvEventBatch b = ok;
  b.events[0].runs = {{4, 3}};
  rejects(b, "runs cover more blocks than hashes");
  b = ok;
  b.events[0].runs = {{4, 1}, {9, 0}, {5, 1}};
  rejects(b, "an empty run");
  b = ok;
  b.events[0].runs = {{UINT32_MAX - 1, 2}};
  rejects(b, "a run past the last block id");
  b = ok;
  b.events[0].kind = KvEvent::Kind::kBlockRemoved;
  rejects(b, "a removal with a parent");
  b = ok;
  b.events[0].kind = KvEvent::Kind::kAllCleared;
  rejects(b, "a clear with hashes");
  b = ok;
  b.events[0].kind = static_cast<KvEvent::Kind>(4);
  rejects(b, "an unknown kind");
  b = ok;
  b.events[0].hashes.clear();
  b.events[0].runs.clear();
  rejects(b, "a stored event without hashes");
  b = ok;
  b.latest_seq = 0;
  rejects(b, "a seq past latest_seq");
  b = ok;
  b.events.push_back(stored);
  b.events[1].seq = 3;
  b.latest_seq = 3;
  rejects(b, "seqs with a gap");
  b = ok;
  b.fell_behind = true;
  rejects(b, "events in a batch that fell behind");

  // Counts larger than the bytes that follow are refused before allocating.
  std::string wire = EncodeKvEventBatch(ok);
  wire[4 + 2 + 1 + 8] = '\xff';  // num_events' low byte
  wire[4 + 2 + 1 + 8 + 3] = '\x7f';
  CHECK(DecodeKvEventBatch(wire).status().code() ==
        absl::StatusCode::kInvalidArgument);
  std::string version = EncodeKvEventBatch(ok);
  version[4] = 2;
  absl::Status s = DecodeKvEventBatch(version).status();
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(s.message()), Catch::Contains("version"));

  auto rejects_snap = [](const KvCacheSnapshot& snap, const char* why) {
    INFO(why);
    CHECK(DecodeKvCacheSnapshot(EncodeKvCacheSnapshot(snap)).status().code() ==
          absl::StatusCode::kInvalidArgument);
  };
  const KvCachedBlock one{.hash = 5, .block = 3};
  KvCachedBlock two = one;
  two.hash = 6;
  two.block = 3;
  rejects_snap({.seq = 1, .blocks = {one, two}}, "a block twice");
  two.block = 4;
  two.hash = 5;
  rejects_snap({.seq = 1, .blocks = {one, two}}, "a hash twice");
  two.hash = 6;
  two.block = UINT32_MAX;
  rejects_snap({.seq = 1, .blocks = {one, two}}, "block id 2^32 - 1");
  two.block = 4;
  CHECK(DecodeKvCacheSnapshot(
            EncodeKvCacheSnapshot({.seq = 1, .blocks = {one, two}}))
            .ok());
}

}  // namespace
}  // namespace flowkv
