// KvTransfer over real UCX on loopback: two engines in one process, a
// block-major prefill pool and a vLLM-style layer-major decode pool.
#include "flowkv/kv_transfer.h"

#include <cstring>
#include <random>
#include <stdlib.h>

#include <catch2/catch.hpp>

namespace flowkv {
namespace {

constexpr KvGeometry kGeometry = {.num_layers = 4,
                                  .num_blocks = 64,
                                  .block_tokens = 16,
                                  .kv_heads = 4,
                                  .head_dim = 32,
                                  .dtype_bytes = 2};

std::unique_ptr<TransferEngine> MakeEngine(const std::string& name) {
  setenv("UCX_NET_DEVICES", "lo", 1);
  TransferEngineOptions options;
  options.name = name;
  options.cluster_token = "kv-test";
  auto engine = TransferEngine::Create(options);
  REQUIRE(engine.ok());
  return *std::move(engine);
}

// One side: engine, pool memory and the KvTransfer over it.
struct Side {
  std::unique_ptr<TransferEngine> engine;
  KvLayout layout;
  uint8_t* data = nullptr;
  RegionId region = 0;
  std::unique_ptr<KvTransfer> kv;

  Side(const std::string& name, const KvLayoutSpec& spec)
      : engine(MakeEngine(name)), layout(*KvLayout::Create(spec)) {
    auto region = engine->AllocateMemory(layout.total_bytes());
    REQUIRE(region.ok());
    data = static_cast<uint8_t*>(region->data);
    this->region = region->id;
    auto created = KvTransfer::Create(engine.get(), layout, {region->id});
    REQUIRE(created.ok());
    kv = *std::move(created);
  }
};

// Prefill (block-major, NHD) connected to decode (layer-major, HND).
struct Fixture {
  Side prefill{"prefill", {.geometry = kGeometry}};
  Side decode{"decode",
              {.geometry = kGeometry,
               .pool_order = PoolOrder::kLayerMajor,
               .block_order = BlockOrder::kHND}};
  PeerId to_decode = 0;

  Fixture() {
    auto address = decode.engine->Listen("127.0.0.1:0");
    REQUIRE(address.ok());
    auto peer = prefill.engine->Connect(*address);
    REQUIRE(peer.ok());
    to_decode = *peer;
    REQUIRE(prefill.kv->AddPeerPool(to_decode, decode.layout, {0}).ok());
    std::mt19937_64 rng(7);
    for (uint64_t i = 0; i < prefill.layout.total_bytes(); ++i) {
      prefill.data[i] = static_cast<uint8_t>(rng());
    }
    std::memset(decode.data, 0, decode.layout.total_bytes());
  }

  // Whether every head vector of tokens [0, tokens) in layers [lb, le) is
  // the same on both sides.
  bool SameKv(const BlockList& src, const BlockList& dst, uint64_t tokens,
              uint32_t lb, uint32_t le) const {
    const uint64_t n = prefill.layout.head_bytes();
    for (uint32_t l = lb; l < le; ++l)
      for (KvPart part : {KvPart::kKey, KvPart::kValue})
        for (uint64_t t = 0; t < tokens; ++t)
          for (uint32_t h = 0; h < kGeometry.kv_heads; ++h) {
            const uint32_t in_block = t % kGeometry.block_tokens;
            const uint64_t index = t / kGeometry.block_tokens;
            const ByteAddress a = prefill.layout.ElementAddress(
                l, part, src.BlockAt(index), in_block, h);
            const ByteAddress b = decode.layout.ElementAddress(
                l, part, dst.BlockAt(index), in_block, h);
            if (std::memcmp(prefill.data + a.offset, decode.data + b.offset,
                            n) != 0) {
              return false;
            }
          }
    return true;
  }

  std::vector<uint64_t> WaitFinished() {
    std::vector<uint64_t> finished;
    for (int i = 0; i < 100 && finished.empty(); ++i) {
      finished = decode.kv->Poll(absl::Milliseconds(50)).finished;
    }
    return finished;
  }
};

TEST_CASE("Send moves a request between different layouts", "[kv_transfer]") {
  Fixture f;
  const BlockList src({{3, 5}, {20, 2}});
  const BlockList dst({{40, 3}, {10, 4}});
  const uint64_t tokens = 6 * 16 + 5;  // the last block is partial
  TransferHandle h = f.prefill.kv->Send(
      42, f.to_decode,
      {.src_blocks = src, .dst_blocks = dst, .num_tokens = tokens});
  REQUIRE(h.Wait().ok());
  CHECK(h.stats().ops > 0);
  CHECK(f.WaitFinished() == std::vector<uint64_t>{42});
  CHECK(f.SameKv(src, dst, tokens, 0, kGeometry.num_layers));
  // Reported once.
  CHECK(f.decode.kv->Poll(absl::Milliseconds(20)).finished.empty());
}

TEST_CASE("Layer-wise sends finish the request with the last layer",
          "[kv_transfer]") {
  Fixture f;
  const BlockList src({{0, 4}});
  const BlockList dst({{8, 4}});
  const uint64_t tokens = 4 * 16;
  for (uint32_t l = 0; l < kGeometry.num_layers; ++l) {
    TransferHandle h = f.prefill.kv->Send(7, f.to_decode,
                                          {.src_blocks = src,
                                           .dst_blocks = dst,
                                           .num_tokens = tokens,
                                           .layer_begin = l,
                                           .layer_end = l + 1});
    REQUIRE(h.Wait().ok());
    std::vector<uint64_t> finished;
    // Wait for this layer's notification.
    for (int i = 0; i < 100 && f.decode.kv->LayersArrived(7) < l + 1; ++i) {
      finished = f.decode.kv->Poll(absl::Milliseconds(20)).finished;
      if (!finished.empty()) break;
    }
    CHECK(f.SameKv(src, dst, tokens, l, l + 1));
    if (l + 1 < kGeometry.num_layers) {
      CHECK(finished.empty());
      CHECK(f.decode.kv->LayersArrived(7) == l + 1);
      // Later layers have not been written.
      CHECK_FALSE(f.SameKv(src, dst, tokens, l + 1, l + 2));
    } else {
      CHECK(finished == std::vector<uint64_t>{7});
    }
  }
}

TEST_CASE("Bad sends fail through the handle and write nothing",
          "[kv_transfer]") {
  Fixture f;
  // A block outside the destination pool.
  TransferHandle h = f.prefill.kv->Send(1, f.to_decode,
                                        {.src_blocks = BlockList({{0, 2}}),
                                         .dst_blocks = BlockList({{63, 2}}),
                                         .num_tokens = 32});
  CHECK(h.Wait().code() == absl::StatusCode::kOutOfRange);
  // No pool declared for this peer.
  h = f.prefill.kv->Send(2, f.to_decode + 1000,
                         {.src_blocks = BlockList({{0, 1}}),
                          .dst_blocks = BlockList({{0, 1}}),
                          .num_tokens = 16});
  CHECK(h.Wait().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(f.decode.kv->Poll(absl::Milliseconds(50)).finished.empty());
  for (uint64_t i = 0; i < f.decode.layout.total_bytes(); ++i) {
    REQUIRE(f.decode.data[i] == 0);
  }
  // Region lists that do not match the layout.
  CHECK(KvTransfer::Create(f.prefill.engine.get(), f.prefill.layout, {})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(KvTransfer::Create(f.prefill.engine.get(), f.prefill.layout, {99})
            .status()
            .code() == absl::StatusCode::kNotFound);
  CHECK(f.prefill.kv->AddPeerPool(f.to_decode, f.decode.layout, {5}).code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("Other notifications pass through Poll", "[kv_transfer]") {
  Fixture f;
  REQUIRE(f.prefill.engine->Send(f.to_decode, "hello").Wait().ok());
  KvPollResult result;
  for (int i = 0; i < 100 && result.other.empty(); ++i) {
    result = f.decode.kv->Poll(absl::Milliseconds(20));
  }
  REQUIRE(result.other.size() == 1);
  CHECK(result.other[0].bytes == "hello");
  CHECK(result.finished.empty());
}

}  // namespace
}  // namespace flowkv
