// SPDX-License-Identifier: Apache-2.0
// Helpers of the KvTransfer staging and IPC tests (kv_staging_test.cc,
// kv_staging_failure_test.cc): the layout pairs they move between, a side
// whose KvTransfer stages (or shares) its pool, the pool exchange by
// descriptors, and the peer process roles (a hidden test case of the test
// binary, started with testing::ChildProcess). Catch2 assertions: use from a
// test's main thread only.
#ifndef FLOWKV_TESTS_SUPPORT_KV_STAGING_UTIL_H_
#define FLOWKV_TESTS_SUPPORT_KV_STAGING_UTIL_H_

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "flowkv/kv_layout.h"
#include "flowkv/kv_pool_memory.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/kv_fixture.h"
#include "tests/support/kv_test_util.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv::staging_test {

using kv_fixture::kGeometry;
using kv_fixture::kSoon;

// A ring of 16 slots of 4 KiB (8 to send, 8 to receive): a 2 MiB request
// moves in 512 slots.
inline constexpr KvStagingOptions kSmallRing = {.ring_bytes = 64 << 10,
                                                .slot_bytes = 4 << 10};
inline constexpr uint64_t kSeed = 7;

// Sender and receiver layouts: 0 block-major -> block-major; 1 layer-major
// HND (vLLM-like) -> block-major; 2 block-major with 2 heads -> layer-major
// with 4 (heterogeneous TP: the sender's heads land at heads [2, 4)).
struct LayoutPair {
  KvLayoutSpec src;
  KvLayoutSpec dst;
  uint32_t heads = kGeometry.kv_heads;
  uint32_t dst_head_begin = 0;
};
inline LayoutPair Pair(int which) {
  const KvLayoutSpec block = {.geometry = kGeometry};
  const KvLayoutSpec layer = {.geometry = kGeometry,
                              .pool_order = PoolOrder::kLayerMajor,
                              .block_order = BlockOrder::kHND};
  if (which == 1) return {layer, block};
  if (which == 2) {
    KvLayoutSpec half = block;
    half.geometry.kv_heads = 2;
    return {half, layer, 2, 2};
  }
  return {block, block};
}

// The blocks of the request: every source block, to a permutation of the
// destination blocks.
inline BlockList SrcBlocks() { return BlockList({{0, kGeometry.num_blocks}}); }
inline BlockList DstBlocks() {
  std::vector<BlockId> ids;
  for (uint32_t i = 0; i < kGeometry.num_blocks; ++i) {
    ids.push_back((i * 7 + 3) % kGeometry.num_blocks);
  }
  return BlockList::FromIds(ids);
}
inline KvPiece WholeRequest(const LayoutPair& pair) {
  return {.src_blocks = SrcBlocks(),
          .dst_blocks = DstBlocks(),
          .num_tokens = uint64_t{kGeometry.num_blocks} * kGeometry.block_tokens,
          .dst_head_begin = pair.dst_head_begin,
          .num_heads = pair.heads};
}

// Whether the receiver's pool holds the sender's bytes (the sender's pool
// filled with FillRandom(kSeed)).
inline bool Arrived(const LayoutPair& pair, const uint8_t* dst_data) {
  const KvLayout src = *KvLayout::Create(pair.src);
  const KvLayout dst = *KvLayout::Create(pair.dst);
  std::vector<uint8_t> expected(src.total_bytes());
  testing::FillRandom(expected.data(), expected.size(), kSeed);
  return kv_fixture::SameKvBytes(
      src, expected.data(), SrcBlocks(), dst, dst_data, DstBlocks(),
      uint64_t{kGeometry.num_blocks} * kGeometry.block_tokens, 0,
      kGeometry.num_layers, 0, pair.dst_head_begin, pair.heads);
}

// One side: an engine and a KvTransfer over a pool of `spec`, either engine
// memory (`shared` false; staging forced unless options say otherwise) or
// a pool from MakeSharedHostPool.
struct StagingSide {
  std::unique_ptr<TransferEngine> engine;
  KvLayout layout;
  std::shared_ptr<KvPoolMemory> shared;
  uint8_t* data = nullptr;
  std::unique_ptr<KvTransfer> kv;

  StagingSide(const std::string& name, const KvLayoutSpec& spec, bool use_shm,
              KvTransferOptions options)
      : engine(testing::MakeKvEngine(name)), layout(*KvLayout::Create(spec)) {
    if (use_shm) {
      auto pool = MakeSharedHostPool({layout.total_bytes()});
      REQUIRE(pool.ok());
      shared = *std::move(pool);
      data = static_cast<uint8_t*>(shared->region_base(0));
      auto created =
          KvTransfer::Create(engine.get(), layout, shared, std::move(options));
      INFO(created.status().ToString());
      REQUIRE(created.ok());
      kv = *std::move(created);
    } else {
      auto region = engine->AllocateMemory(layout.total_bytes());
      REQUIRE(region.ok());
      data = static_cast<uint8_t*>(region->data);
      auto created = KvTransfer::Create(engine.get(), layout, {region->id},
                                        std::move(options));
      INFO(created.status().ToString());
      REQUIRE(created.ok());
      kv = *std::move(created);
    }
    std::memset(data, 0, layout.total_bytes());
  }
};

inline KvTransferOptions ForcedStaging() {
  return {.staging = kSmallRing, .path_policy = KvPathPolicy::kForceStaging};
}

// Waits until `kv`'s ring is wholly free again (the staging worker returns
// slots asynchronously).
inline bool RingFree(KvTransfer& kv, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    const KvTransferStats s = kv.Stats();
    if (s.ring_slots_free == s.ring_slots) return true;
    kv.Poll(absl::Milliseconds(10));
  }
  return false;
}

// Connects `from` to `to` (both in this process) and exchanges their pool
// descriptors: `from` announces, `to` answers. Sets each side's id of the
// other.
inline void ExchangePools(StagingSide& from, StagingSide& to, PeerId* from_to,
                          PeerId* to_from) {
  auto address = to.engine->Listen("127.0.0.1:0");
  REQUIRE(address.ok());
  auto peer = from.engine->Connect(*address);
  REQUIRE(peer.ok());
  *from_to = *peer;
  REQUIRE(from.kv->AnnouncePool(*from_to).ok());
  testing::Seen seen;
  REQUIRE(testing::PollUntil(*to.kv, seen, kSoon, [&](const testing::Seen&) {
    for (const PeerInfo& p : to.engine->Peers()) {
      if (to.kv->PeerPool(p.id).ok()) {
        *to_from = p.id;
        return true;
      }
    }
    return false;
  }));
  REQUIRE(from.kv->WaitForPeerPool(*from_to, kSoon).ok());
}

// Two staging sides in this process (prefill sends to decode), pools
// exchanged by descriptors; the prefill pool holds FillRandom(kSeed).
struct InProcessPair {
  StagingSide prefill;
  StagingSide decode;
  PeerId to_decode = 0;
  PeerId to_prefill = 0;
  explicit InProcessPair(int pair = 0)
      : prefill("prefill", Pair(pair).src, false, ForcedStaging()),
        decode("decode", Pair(pair).dst, false, ForcedStaging()) {
    testing::FillRandom(prefill.data, prefill.layout.total_bytes(), kSeed);
    ExchangePools(prefill, decode, &to_decode, &to_prefill);
  }
};

// The peer process: a hidden test case of the test binary, configured by
// FLOWKV_STAGING_CHILD = "<role> <pair> <address or -> <count>":
//   send     connects to <address>, announces its pool, fills it with
//            FillRandom(kSeed) and sends "req-<i>" for i < count (count 0:
//            forever), each awaited; writes "sent <i> <code>" per send;
//   ipc      as send with one request over a pool from MakeSharedHostPool,
//            also writing "path <KvPath>" and "ipc_copies <n>";
//   receive  listens (writes "listen <address>") and polls forever,
//            writing "finished <id>" and "failed <id> <code>".
// Every KvTransfer stages (ring kSmallRing) except ipc's.
inline void RunStagingChild(const char* config) {
  auto fail = [](const std::string& what) {
    std::fprintf(stderr, "staging child: %s\n", what.c_str());
    _exit(1);
  };
  std::vector<std::string> words = absl::StrSplit(config, ' ');
  int pair_index = 0;
  uint64_t count = 0;
  if (words.size() != 4 || !absl::SimpleAtoi(words[1], &pair_index) ||
      !absl::SimpleAtoi(words[3], &count)) {
    fail(absl::StrCat("bad config '", config, "'"));
  }
  const std::string role = words[0];
  const LayoutPair pair = Pair(pair_index);
  const bool ipc = role == "ipc";
  const bool receive = role == "receive";
  KvTransferOptions options = ForcedStaging();
  if (ipc) options = {.staging = kSmallRing};
  setenv("UCX_NET_DEVICES", "lo", 1);
  auto engine = TransferEngine::Create(testing::KvEngineOptions(role));
  if (!engine.ok()) fail(engine.status().ToString());
  const KvLayout layout = *KvLayout::Create(receive ? pair.dst : pair.src);
  std::shared_ptr<KvPoolMemory> pool;
  uint8_t* data = nullptr;
  absl::StatusOr<std::unique_ptr<KvTransfer>> kv;
  if (ipc) {
    auto shared = MakeSharedHostPool({layout.total_bytes()});
    if (!shared.ok()) fail(shared.status().ToString());
    pool = *std::move(shared);
    data = static_cast<uint8_t*>(pool->region_base(0));
    kv = KvTransfer::Create(engine->get(), layout, pool, options);
  } else {
    auto region = (*engine)->AllocateMemory(layout.total_bytes());
    if (!region.ok()) fail(region.status().ToString());
    data = static_cast<uint8_t*>(region->data);
    kv = KvTransfer::Create(engine->get(), layout, {region->id}, options);
  }
  if (!kv.ok()) fail(kv.status().ToString());
  if (receive) {
    std::memset(data, 0, layout.total_bytes());
    auto address = (*engine)->Listen("127.0.0.1:0");
    if (!address.ok()) fail(address.status().ToString());
    if (!testing::WriteParentLine("listen " + *address)) fail("write");
    for (;;) {
      KvPollResult r = (*kv)->Poll(absl::Milliseconds(100));
      for (const KvFinished& f : r.finished) {
        testing::WriteParentLine("finished " + f.request_id);
      }
      for (const KvFailed& f : r.failed) {
        testing::WriteParentLine(absl::StrCat(
            "failed ", f.request_id, " ", static_cast<int>(f.status.code())));
      }
    }
  }
  testing::FillRandom(data, layout.total_bytes(), kSeed);
  auto peer = (*engine)->Connect(words[2]);
  if (!peer.ok()) fail(peer.status().ToString());
  if (absl::Status s = (*kv)->AnnouncePool(*peer); !s.ok()) fail(s.ToString());
  if (absl::Status s = (*kv)->WaitForPeerPool(*peer, kSoon); !s.ok()) {
    fail(s.ToString());
  }
  if (ipc) {
    absl::StatusOr<KvPath> path = (*kv)->PeerPath(*peer);
    if (!path.ok()) fail(path.status().ToString());
    testing::WriteParentLine(absl::StrCat("path ", static_cast<int>(*path)));
  }
  for (uint64_t i = 0; count == 0 || i < count; ++i) {
    const absl::Status s =
        (*kv)->Send(absl::StrCat("req-", i), *peer, WholeRequest(pair)).Wait();
    testing::WriteParentLine(
        absl::StrCat("sent ", i, " ", static_cast<int>(s.code())));
  }
  testing::WriteParentLine(
      absl::StrCat("ipc_copies ", (*kv)->Stats().ipc_copies));
  testing::WaitForParentThenExit();
}

// Starts the peer process of `role` (see RunStagingChild).
inline std::unique_ptr<testing::ChildProcess> StartChild(
    const std::string& test_case, const std::string& role, int pair,
    const std::string& address, uint64_t count) {
  return std::make_unique<testing::ChildProcess>(
      test_case,
      std::vector<std::string>{absl::StrCat("FLOWKV_STAGING_CHILD=", role, " ",
                                            pair, " ", address, " ", count)});
}

}  // namespace flowkv::staging_test

#endif  // FLOWKV_TESTS_SUPPORT_KV_STAGING_UTIL_H_
