// SPDX-License-Identifier: Apache-2.0
// The fixture of the KvTransfer tests (kv_transfer_test.cc,
// kv_transfer_failure_test.cc): a block-major prefill pool and a
// vLLM-style layer-major decode pool, each with its own engine in this
// process, connected over loopback, with the decode pool declared on the
// prefill side.
#ifndef FLOWKV_TESTS_SUPPORT_KV_FIXTURE_H_
#define FLOWKV_TESTS_SUPPORT_KV_FIXTURE_H_

#include <cstring>
#include <memory>
#include <string>

#include <catch2/catch.hpp>

#include "flowkv/kv_layout.h"
#include "flowkv/kv_transfer.h"
#include "flowkv/transfer_engine.h"
#include "tests/support/kv_test_util.h"
#include "tests/support/transfer_test_util.h"

namespace flowkv::kv_fixture {

using testing::FillRandom;
using testing::PollUntil;
using testing::Seen;

inline constexpr KvGeometry kGeometry = {.num_layers = 4,
                                         .num_blocks = 64,
                                         .block_tokens = 16,
                                         .kv_heads = 4,
                                         .head_dim = 32,
                                         .dtype_bytes = 2};
const KvLayoutSpec kPrefillSpec = {.geometry = kGeometry};
const KvLayoutSpec kDecodeSpec = {.geometry = kGeometry,
                                  .pool_order = PoolOrder::kLayerMajor,
                                  .block_order = BlockOrder::kHND};
inline constexpr absl::Duration kPeerFailureTimeout =
    testing::kKvPeerFailureTimeout;
inline constexpr absl::Duration kSoon = testing::kKvSoon;

// One side: engine, pool memory and the KvTransfer over it.
struct Side {
  std::unique_ptr<TransferEngine> engine;
  KvLayout layout;
  uint8_t* data = nullptr;
  RegionId region = 0;
  std::unique_ptr<KvTransfer> kv;

  Side(const std::string& name, const KvLayoutSpec& spec,
       KvTransferOptions options = {})
      : engine(testing::MakeKvEngine(name)), layout(*KvLayout::Create(spec)) {
    auto region = engine->AllocateMemory(layout.total_bytes());
    REQUIRE(region.ok());
    data = static_cast<uint8_t*>(region->data);
    this->region = region->id;
    auto created =
        KvTransfer::Create(engine.get(), layout, {region->id}, options);
    REQUIRE(created.ok());
    kv = *std::move(created);
  }
};

// Writes a bare notification (no data) from `side` to `peer`.
inline absl::Status WriteNotice(Side& side, PeerId peer, std::string bytes) {
  return testing::WriteNotice(*side.engine, peer, std::move(bytes));
}

// Whether heads [a_head, +heads) of pool `a` and [b_head, +heads) of pool
// `b` (single-region layouts at `a_data`, `b_data`) hold the same bytes for
// every token of [0, tokens) in layers [lb, le).
inline bool SameKvBytes(const KvLayout& a_layout, const uint8_t* a_data,
                        const BlockList& a_blocks, const KvLayout& b_layout,
                        const uint8_t* b_data, const BlockList& b_blocks,
                        uint64_t tokens, uint32_t lb, uint32_t le,
                        uint32_t a_head, uint32_t b_head, uint32_t heads) {
  const uint64_t n = a_layout.head_bytes();
  const uint32_t block_tokens = a_layout.geometry().block_tokens;
  for (uint32_t l = lb; l < le; ++l)
    for (KvPart part : {KvPart::kKey, KvPart::kValue})
      for (uint64_t t = 0; t < tokens; ++t)
        for (uint32_t h = 0; h < heads; ++h) {
          const uint32_t in_block = t % block_tokens;
          const uint64_t index = t / block_tokens;
          const ByteAddress x = a_layout.ElementAddress(
              l, part, a_blocks.BlockAt(index), in_block, a_head + h);
          const ByteAddress y = b_layout.ElementAddress(
              l, part, b_blocks.BlockAt(index), in_block, b_head + h);
          if (std::memcmp(a_data + x.offset, b_data + y.offset, n) != 0) {
            return false;
          }
        }
  return true;
}

// Whether heads [head_begin, +heads) of every token of [0, tokens) in layers
// [lb, le) are the same in pool `a` (its layout and bytes) and pool `b`.
inline bool SameKv(const KvLayout& a_layout, const uint8_t* a_data,
                   const BlockList& a_blocks, const KvLayout& b_layout,
                   const uint8_t* b_data, const BlockList& b_blocks,
                   uint64_t tokens, uint32_t lb, uint32_t le,
                   uint32_t head_begin, uint32_t heads) {
  return SameKvBytes(a_layout, a_data, a_blocks, b_layout, b_data, b_blocks,
                     tokens, lb, le, head_begin, head_begin, heads);
}

inline bool SameKv(const Side& a, const BlockList& a_blocks, const Side& b,
                   const BlockList& b_blocks, uint64_t tokens, uint32_t lb,
                   uint32_t le, uint32_t head_begin = 0,
                   uint32_t heads = kGeometry.kv_heads) {
  return SameKv(a.layout, a.data, a_blocks, b.layout, b.data, b_blocks, tokens,
                lb, le, head_begin, heads);
}

// The id under which `receiver` knows `sender` (which reaches it as
// `sender_peer`): the peer of a message the sender sends.
inline PeerId PeerIdOf(Side& receiver, Side& sender, PeerId sender_peer) {
  REQUIRE(sender.engine->Send(sender_peer, "whoami").Wait().ok());
  Seen seen;
  REQUIRE(PollUntil(*receiver.kv, seen, kSoon,
                    [](const Seen& s) { return !s.other.empty(); }));
  REQUIRE(seen.other.size() == 1);
  CHECK(seen.other[0].bytes == "whoami");
  return seen.other[0].peer;
}

// Connects `from` to `to` and declares `to`'s pool on `from`.
inline PeerId Connect(Side& from, Side& to, const std::string& to_address) {
  auto peer = from.engine->Connect(to_address);
  REQUIRE(peer.ok());
  REQUIRE(from.kv->AddPeerPool(*peer, to.layout, {to.region}).ok());
  return *peer;
}

// Prefill (block-major, NHD) connected to decode (layer-major, HND by
// default).
struct Fixture {
  Side prefill;
  Side decode;
  std::string decode_address;
  PeerId to_decode = 0;

  explicit Fixture(KvTransferOptions decode_options = {},
                   const KvLayoutSpec& decode_spec = kDecodeSpec,
                   const KvLayoutSpec& prefill_spec = kPrefillSpec)
      : prefill("prefill", prefill_spec),
        decode("decode", decode_spec, decode_options) {
    auto address = decode.engine->Listen("127.0.0.1:0");
    REQUIRE(address.ok());
    decode_address = *address;
    to_decode = Connect(prefill, decode, decode_address);
    FillRandom(prefill.data, prefill.layout.total_bytes(), 7);
    std::memset(decode.data, 0, decode.layout.total_bytes());
  }
};

}  // namespace flowkv::kv_fixture

#endif  // FLOWKV_TESTS_SUPPORT_KV_FIXTURE_H_
