// SPDX-License-Identifier: Apache-2.0
#include "flowkv/transfer_plan.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"

namespace flowkv {
namespace {

KvLayout MakeLayout(KvGeometry g, PoolOrder pool = PoolOrder::kBlockMajor,
                    BlockOrder block = BlockOrder::kNHD,
                    RegionSplit split = RegionSplit::kOnePerPool) {
  absl::StatusOr<KvLayout> layout = KvLayout::Create({.geometry = g,
                                                      .pool_order = pool,
                                                      .block_order = block,
                                                      .region_split = split});
  REQUIRE(layout.ok());
  return *layout;
}

KvGeometry Llama(uint32_t num_blocks, uint32_t block_tokens = 16,
                 uint32_t kv_heads = 8) {
  return {.num_layers = 32,
          .num_blocks = num_blocks,
          .block_tokens = block_tokens,
          .kv_heads = kv_heads,
          .head_dim = 128,
          .dtype_bytes = 2};
}

std::vector<TransferOp> Plan(const TransferPlanRequest& request) {
  absl::StatusOr<std::vector<TransferOp>> ops = PlanTransfer(request);
  INFO(ops.status().ToString());
  REQUIRE(ops.ok());
  absl::StatusOr<uint64_t> count = CountTransferOps(request);
  REQUIRE(count.ok());
  CHECK(*count == ops->size());
  return *ops;
}

TEST_CASE("block-major both sides, one run each: one op", "[transfer_plan]") {
  const KvLayout src = MakeLayout(Llama(1024));
  const KvLayout dst = MakeLayout(Llama(2048));
  const std::vector<TransferOp> ops =
      Plan({.src_layout = &src,
            .src_blocks = BlockList({{100, 512}}),
            .dst_layout = &dst,
            .dst_blocks = BlockList({{7, 512}}),
            .num_tokens = 8192});
  REQUIRE(ops.size() == 1);
  CHECK(ops[0] == TransferOp{0, 100 * src.block_bytes(), 0,
                             7 * dst.block_bytes(), 512 * src.block_bytes()});
}

TEST_CASE("partial last block is copied whole when tiles match",
          "[transfer_plan]") {
  const KvLayout src = MakeLayout(Llama(64));
  const KvLayout dst = MakeLayout(Llama(64));
  const std::vector<TransferOp> ops = Plan({.src_layout = &src,
                                            .src_blocks = BlockList({{0, 4}}),
                                            .dst_layout = &dst,
                                            .dst_blocks = BlockList({{10, 4}}),
                                            .num_tokens = 3 * 16 - 5});
  REQUIRE(ops.size() == 1);
  CHECK(ops[0].length == 3 * src.block_bytes());
}

TEST_CASE("fragmented lists: one op per aligned run", "[transfer_plan]") {
  const KvLayout layout = MakeLayout(Llama(64));
  const uint64_t bb = layout.block_bytes();
  const std::vector<TransferOp> ops =
      Plan({.src_layout = &layout,
            .src_blocks = BlockList({{0, 10}}),
            .dst_layout = &layout,
            .dst_blocks = BlockList({{5, 3}, {20, 7}}),
            .num_tokens = 10 * 16});
  REQUIRE(ops.size() == 2);
  CHECK(ops[0] == TransferOp{0, 0, 0, 5 * bb, 3 * bb});
  CHECK(ops[1] == TransferOp{0, 3 * bb, 0, 20 * bb, 7 * bb});

  // Cuts from both sides: src [0+4, 10+6], dst [30+7, 50+3] -> 3 runs.
  const std::vector<TransferOp> both =
      Plan({.src_layout = &layout,
            .src_blocks = BlockList({{0, 4}, {10, 6}}),
            .dst_layout = &layout,
            .dst_blocks = BlockList({{30, 7}, {50, 3}}),
            .num_tokens = 10 * 16});
  CHECK(both.size() == 3);
}

TEST_CASE("runs listed out of block order still merge", "[transfer_plan]") {
  const KvLayout layout = MakeLayout(Llama(64));
  const uint64_t bb = layout.block_bytes();
  // Source [10+5, 5+5] and destination [30+5, 25+5]: blocks 5..14 go to
  // 25..34, one op.
  const std::vector<TransferOp> ops =
      Plan({.src_layout = &layout,
            .src_blocks = BlockList({{10, 5}, {5, 5}}),
            .dst_layout = &layout,
            .dst_blocks = BlockList({{30, 5}, {25, 5}}),
            .num_tokens = 10 * 16});
  REQUIRE(ops.size() == 1);
  CHECK(ops[0] == TransferOp{0, 5 * bb, 0, 25 * bb, 10 * bb});
}

TEST_CASE("layer-major: 2 x L ops per aligned run", "[transfer_plan]") {
  for (RegionSplit split :
       {RegionSplit::kOnePerPool, RegionSplit::kOnePerLayer}) {
    const KvLayout src = MakeLayout(Llama(1024), PoolOrder::kLayerMajor,
                                    BlockOrder::kNHD, split);
    const KvLayout dst = MakeLayout(Llama(1024), PoolOrder::kLayerMajor);
    CHECK(Plan({.src_layout = &src,
                .src_blocks = BlockList({{0, 512}}),
                .dst_layout = &dst,
                .dst_blocks = BlockList({{100, 512}}),
                .num_tokens = 8192})
              .size() == 2 * 32);
    const std::vector<TransferOp> ops =
        Plan({.src_layout = &src,
              .src_blocks = BlockList({{0, 300}, {400, 212}}),
              .dst_layout = &dst,
              .dst_blocks = BlockList({{100, 512}}),
              .num_tokens = 8192});
    CHECK(ops.size() == 2 * 32 * 2);
    if (split == RegionSplit::kOnePerLayer) {
      CHECK(ops.back().src_region == 31);
      CHECK(ops.back().dst_region == 0);
    }
  }
  // Block-major source, layer-major destination: 2 x L per block.
  const KvLayout bm = MakeLayout(Llama(64));
  const KvLayout lm = MakeLayout(Llama(64), PoolOrder::kLayerMajor);
  CHECK(Plan({.src_layout = &bm,
              .src_blocks = BlockList({{0, 4}}),
              .dst_layout = &lm,
              .dst_blocks = BlockList({{8, 4}}),
              .num_tokens = 64})
            .size() == 2 * 32 * 4);
}

TEST_CASE("different block_tokens copy exactly num_tokens", "[transfer_plan]") {
  // Block-major 16-token blocks -> block-major 32-token blocks: a source
  // tile is half a destination tile, one op per tile, except where the
  // source crosses from block 1 to block 2: the end of destination block 10
  // is the start of block 11 there, and the two ops merge.
  const KvLayout b16 = MakeLayout(Llama(64, 16));
  const KvLayout b32 = MakeLayout(Llama(64, 32));
  const std::vector<TransferOp> ops = Plan({.src_layout = &b16,
                                            .src_blocks = BlockList({{0, 4}}),
                                            .dst_layout = &b32,
                                            .dst_blocks = BlockList({{10, 2}}),
                                            .num_tokens = 64});
  CHECK(ops.size() == 4 * 32 * 2 - 1);
  // Layer-major NHD on both sides: a run of blocks is one token array per
  // layer and part, whatever the block size: 2 x L ops, exactly 50 tokens.
  const KvLayout l16 = MakeLayout(Llama(64, 16), PoolOrder::kLayerMajor);
  const KvLayout l32 = MakeLayout(Llama(64, 32), PoolOrder::kLayerMajor);
  const std::vector<TransferOp> lm = Plan({.src_layout = &l16,
                                           .src_blocks = BlockList({{0, 4}}),
                                           .dst_layout = &l32,
                                           .dst_blocks = BlockList({{10, 2}}),
                                           .num_tokens = 50});
  REQUIRE(lm.size() == 2 * 32);
  CHECK(lm[0].length == 50 * l16.token_bytes());
}

TEST_CASE("layer range selects layers on both sides", "[transfer_plan]") {
  const KvLayout src = MakeLayout(Llama(64));
  const KvLayout dst = MakeLayout(Llama(64), PoolOrder::kLayerMajor,
                                  BlockOrder::kNHD, RegionSplit::kOnePerLayer);
  const std::vector<TransferOp> ops = Plan({.src_layout = &src,
                                            .src_blocks = BlockList({{0, 2}}),
                                            .dst_layout = &dst,
                                            .dst_blocks = BlockList({{0, 2}}),
                                            .num_tokens = 32,
                                            .layer_begin = 5,
                                            .layer_end = 7});
  // Block-major src: per block, layers 5..6 x K/V, each one tile.
  REQUIRE(ops.size() == 2 * 2 * 2);
  for (const TransferOp& op : ops) {
    CHECK((op.dst_region == 5 || op.dst_region == 6));
    CHECK(op.length == src.tile_bytes());
  }
}

TEST_CASE("head sharding between tensor-parallel sizes", "[transfer_plan]") {
  // One prefill rank with 8 heads -> two decode ranks with 4 (HND, so a head
  // range of a tile is contiguous).
  const KvLayout p8 =
      MakeLayout(Llama(64, 16, 8), PoolOrder::kBlockMajor, BlockOrder::kHND);
  const KvLayout d4 =
      MakeLayout(Llama(64, 16, 4), PoolOrder::kBlockMajor, BlockOrder::kHND);
  for (uint32_t half : {0u, 1u}) {
    const std::vector<TransferOp> ops = Plan({.src_layout = &p8,
                                              .src_blocks = BlockList({{0, 3}}),
                                              .dst_layout = &d4,
                                              .dst_blocks = BlockList({{9, 3}}),
                                              .num_tokens = 48,
                                              .src_head_begin = 4 * half,
                                              .num_heads = 4});
    CHECK(ops.size() == 3 * 32 * 2);
    CHECK(ops[0].length == d4.tile_bytes());
    CHECK(ops[0].src_offset == half * p8.tile_bytes() / 2);
  }
  // Two source ranks with 4 heads -> one destination with 8: each source
  // plans its half (num_heads 0: all of its heads).
  for (uint32_t half : {0u, 1u}) {
    const std::vector<TransferOp> ops = Plan({.src_layout = &d4,
                                              .src_blocks = BlockList({{0, 3}}),
                                              .dst_layout = &p8,
                                              .dst_blocks = BlockList({{9, 3}}),
                                              .num_tokens = 48,
                                              .dst_head_begin = 4 * half});
    CHECK(ops.size() == 3 * 32 * 2);
    CHECK(ops[0].dst_offset ==
          9 * p8.block_bytes() + half * p8.tile_bytes() / 2);
  }
}

TEST_CASE("invalid requests return errors and nothing else",
          "[transfer_plan]") {
  const KvLayout a = MakeLayout(Llama(64));
  KvGeometry g = Llama(64);
  g.head_dim = 64;
  const KvLayout other_dim = MakeLayout(g);
  TransferPlanRequest r{.src_layout = &a,
                        .src_blocks = BlockList({{0, 4}}),
                        .dst_layout = &other_dim,
                        .dst_blocks = BlockList({{0, 4}}),
                        .num_tokens = 64};
  std::vector<TransferOp> out = {TransferOp{1, 2, 3, 4, 5}};
  const std::vector<TransferOp> before = out;

  auto expect = [&](absl::StatusCode code, const std::string& text) {
    absl::Status s = AppendTransferPlan(r, &out);
    INFO(s.ToString());
    CHECK(s.code() == code);
    CHECK(s.message().find(text) != std::string::npos);
    CHECK(out == before);
    CHECK(PlanTransfer(r).status().code() == code);
    CHECK(CountTransferOps(r).status().code() == code);
  };
  expect(absl::StatusCode::kInvalidArgument, "head_dim");

  g = Llama(64);
  g.dtype_bytes = 1;
  const KvLayout other_dtype = MakeLayout(g);
  r.dst_layout = &other_dtype;
  expect(absl::StatusCode::kInvalidArgument, "dtype_bytes");

  g = Llama(64);
  g.num_layers = 16;
  const KvLayout fewer_layers = MakeLayout(g);
  r.dst_layout = &fewer_layers;
  expect(absl::StatusCode::kInvalidArgument, "num_layers");
  r.layer_end = 17;
  expect(absl::StatusCode::kInvalidArgument, "layer_end 17");
  r.layer_begin = 3;
  r.layer_end = 3;
  expect(absl::StatusCode::kInvalidArgument, "layer");
  r.layer_begin = 0;
  r.layer_end = 16;
  CHECK(PlanTransfer(r).ok());  // A common layer range is fine.

  const KvLayout four_heads = MakeLayout(Llama(64, 16, 4));
  r = {.src_layout = &a,
       .src_blocks = BlockList({{0, 4}}),
       .dst_layout = &four_heads,
       .dst_blocks = BlockList({{0, 4}}),
       .num_tokens = 64};
  expect(absl::StatusCode::kInvalidArgument, "destination kv_heads 4");
  r.num_heads = 4;
  r.src_head_begin = 5;
  expect(absl::StatusCode::kInvalidArgument, "src_head_begin 5");
  r.src_head_begin = 8;
  expect(absl::StatusCode::kInvalidArgument, "src_head_begin 8");
  r.src_head_begin = 4;
  r.dst_head_begin = 1;
  expect(absl::StatusCode::kInvalidArgument, "dst_head_begin 1");

  r = {.src_layout = &a,
       .src_blocks = BlockList({{60, 5}}),
       .dst_layout = &a,
       .dst_blocks = BlockList({{0, 5}}),
       .num_tokens = 64};
  expect(absl::StatusCode::kOutOfRange, "source block run 60+5");
  r.src_blocks = BlockList({{0, 5}});
  r.dst_blocks = BlockList({{0, 2}, {63, 2}});
  expect(absl::StatusCode::kOutOfRange, "destination block run 63+2");

  r.dst_blocks = BlockList({{0, 3}});
  expect(absl::StatusCode::kInvalidArgument, "covers 48 tokens");
  expect(absl::StatusCode::kInvalidArgument, "num_tokens 64");

  r.dst_layout = nullptr;
  expect(absl::StatusCode::kInvalidArgument, "dst_layout");
}

TEST_CASE("empty request gives an empty plan", "[transfer_plan]") {
  const KvLayout a = MakeLayout(Llama(64));
  CHECK(Plan({.src_layout = &a,
              .src_blocks = {},
              .dst_layout = &a,
              .dst_blocks = {},
              .num_tokens = 0})
            .empty());
}

TEST_CASE("ApplyPlanLocally checks bounds before copying", "[transfer_plan]") {
  std::vector<uint8_t> src(16, 1), dst(16, 0);
  const absl::Span<const uint8_t> srcs[] = {src};
  const absl::Span<uint8_t> dsts[] = {absl::MakeSpan(dst)};
  const std::vector<TransferOp> ok = {{0, 0, 0, 8, 8}};
  REQUIRE(ApplyPlanLocally(ok, srcs, dsts).ok());
  CHECK(dst ==
        std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1});
  std::fill(dst.begin(), dst.end(), 0);
  const std::vector<TransferOp> bad = {{0, 0, 0, 0, 8}, {0, 9, 0, 0, 8}};
  CHECK(ApplyPlanLocally(bad, srcs, dsts).code() ==
        absl::StatusCode::kOutOfRange);
  CHECK(std::all_of(dst.begin(), dst.end(), [](uint8_t b) { return b == 0; }));
  const std::vector<TransferOp> bad_region = {{1, 0, 0, 0, 1}};
  CHECK(ApplyPlanLocally(bad_region, srcs, dsts).code() ==
        absl::StatusCode::kOutOfRange);
}

TEST_CASE("num_parts must match", "[transfer_plan]") {
  KvGeometry latent = Llama(64, 16, 1);
  latent.num_parts = 1;
  const KvLayout mla = *KvLayout::Mla(latent);
  KvGeometry two = latent;
  two.num_parts = 2;
  const KvLayout kv = MakeLayout(two);
  const absl::Status st = PlanTransfer({.src_layout = &mla,
                                        .src_blocks = BlockList({{0, 1}}),
                                        .dst_layout = &kv,
                                        .dst_blocks = BlockList({{0, 1}}),
                                        .num_tokens = 16})
                              .status();
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(st.message()), Catch::Contains("num_parts differs"));
}

TEST_CASE(
    "num_tokens near 2^64 with huge blocks: no wrap, no silent empty "
    "plan",
    "[transfer_plan]") {
  // Regression: the ceiling division (n + T - 1) / T wrapped for num_tokens
  // = UINT64_MAX and block_tokens near 2^32, and the plan came back OK with
  // zero ops. One latent byte per token, 2^32 - 1 tokens per block: the
  // lists (a run repeated, 2^32 + 1 blocks) cover UINT64_MAX tokens exactly.
  const uint32_t big = UINT32_MAX;
  const KvGeometry g = {.num_layers = 1,
                        .num_blocks = big,
                        .block_tokens = big,
                        .kv_heads = 1,
                        .head_dim = 1,
                        .dtype_bytes = 1,
                        .num_parts = 1};
  const KvLayout layout = *KvLayout::Mla(g);
  BlockList list;
  list.Append(0, big);
  list.Append(0, 2);
  TransferPlanRequest r{.src_layout = &layout,
                        .src_blocks = list,
                        .dst_layout = &layout,
                        .dst_blocks = list,
                        .num_tokens = UINT64_MAX};
  const absl::StatusOr<std::vector<TransferOp>> ops = PlanTransfer(r);
  INFO(ops.status().ToString());
  REQUIRE(ops.ok());
  REQUIRE(ops->size() == 2);  // Every block: UINT64_MAX bytes in all.
  CHECK((*ops)[0].length == uint64_t{big} * big);
  CHECK((*ops)[1].length == 2 * uint64_t{big});
  CHECK(*CountTransferOps(r) == 2);

  // Two bytes per token: the request would move 2^65 bytes.
  KvGeometry wide = g;
  wide.num_blocks = 1u << 31;
  wide.block_tokens = 1u << 31;
  wide.dtype_bytes = 2;
  const KvLayout wide_layout = *KvLayout::Mla(wide);
  BlockList many;
  for (int i = 0; i < 5; ++i) many.Append(0, 1u << 31);
  r = {.src_layout = &wide_layout,
       .src_blocks = many,
       .dst_layout = &wide_layout,
       .dst_blocks = many,
       .num_tokens = UINT64_MAX};
  const absl::Status st = PlanTransfer(r).status();
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(st.message()),
             Catch::Contains("num_tokens 18446744073709551615"));
  CHECK(CountTransferOps(r).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace flowkv
