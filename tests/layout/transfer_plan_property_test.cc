// SPDX-License-Identifier: Apache-2.0
// Property tests of TransferPlan over every pair of preset layouts and over
// random strided layouts: each plan, executed with memcpy, must write
// exactly the bytes of a per-element reference copy (the rest of the
// destination keeps its sentinel bytes), no two of its ops may be mergeable,
// and its op count must equal the minimum counted independently
// (tests/support/plan_reference.h).

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "flowkv/block_list.h"
#include "flowkv/kv_layout.h"
#include "flowkv/transfer_plan.h"
#include "tests/support/layout_test_util.h"
#include "tests/support/plan_reference.h"

namespace flowkv {
namespace {

using testing::AllLayouts;
using testing::Describe;
using testing::ElementCopy;
using testing::HostPool;

constexpr std::byte kSentinel{0xA5};

bool Continues(const TransferOp& a, const TransferOp& b) {
  return a.src_region == b.src_region && a.dst_region == b.dst_region &&
         a.src_offset + a.length == b.src_offset &&
         a.dst_offset + a.length == b.dst_offset;
}

// Plans `r`, executes the plan and checks it against the reference. Returns
// the op count.
template <typename Rng>
uint64_t CheckPlan(const TransferPlanRequest& r, Rng& rng) {
  INFO(Describe(r));
  const absl::StatusOr<std::vector<TransferOp>> ops = PlanTransfer(r);
  INFO(ops.status().ToString());
  REQUIRE(ops.ok());
  const absl::StatusOr<uint64_t> count = CountTransferOps(r);
  REQUIRE(count.ok());
  CHECK(*count == ops->size());

  const HostPool src(*r.src_layout, rng);
  HostPool want(*r.dst_layout, kSentinel);
  HostPool got(*r.dst_layout, kSentinel);
  std::vector<ElementCopy> copies = testing::ReferenceCopies(r);
  const uint64_t head_bytes = r.src_layout->head_bytes();
  for (const ElementCopy& c : copies) {
    std::memcpy(want.At({c.dst_region, c.dst_offset}),
                src.At({c.src_region, c.src_offset}), head_bytes);
  }
  REQUIRE(ApplyPlanLocally(*ops, src.ConstSpans(), got.Spans()).ok());
  REQUIRE(got.regions == want.regions);

  uint64_t bytes = 0;
  for (size_t i = 0; i < ops->size(); ++i) {
    const TransferOp& op = (*ops)[i];
    REQUIRE(op.length > 0);
    bytes += op.length;
    if (i == 0) continue;
    // Sorted by source and disjoint: only the next op in source order could
    // continue one, and none does.
    const TransferOp& prev = (*ops)[i - 1];
    REQUIRE((prev.src_region < op.src_region ||
             (prev.src_region == op.src_region &&
              prev.src_offset + prev.length <= op.src_offset)));
    REQUIRE_FALSE(Continues(prev, op));
  }
  CHECK(bytes == copies.size() * head_bytes);  // Each element once.
  CHECK(ops->size() == testing::MinimumOps(copies, head_bytes));
  return ops->size();
}

// Whole runs of `count` blocks starting at `first`, or a shuffled list.
template <typename Rng>
BlockList Blocks(uint32_t pool_blocks, uint32_t count, bool fragmented,
                 Rng& rng) {
  if (!fragmented) return BlockList({{pool_blocks - count, count}});
  return testing::RandomBlocks(pool_blocks, count, rng);
}

KvGeometry Small(uint32_t num_parts) {
  return {.num_layers = 3,
          .num_blocks = 8,
          .block_tokens = 4,
          .kv_heads = num_parts == 1 ? 1u : 4u,
          .head_dim = 3,
          .dtype_bytes = 2,
          .num_parts = num_parts};
}

TEST_CASE("Every pair of presets: plans copy the reference bytes, minimally",
          "[transfer_plan][property]") {
  std::mt19937_64 rng(8);
  for (uint32_t parts : {2u, 1u}) {
    const KvGeometry g = Small(parts);
    const std::vector<KvLayout> layouts = AllLayouts(g);
    INFO("parts " << parts << ", " << layouts.size() << " layouts");
    REQUIRE(layouts.size() >= (parts == 2 ? 15u : 8u));
    for (const KvLayout& src : layouts) {
      for (const KvLayout& dst : layouts) {
        for (bool fragmented : {false, true}) {
          for (uint64_t tokens : {uint64_t{32}, uint64_t{13}}) {
            TransferPlanRequest r{.src_layout = &src,
                                  .src_blocks = Blocks(8, 8, fragmented, rng),
                                  .dst_layout = &dst,
                                  .dst_blocks = Blocks(8, 8, fragmented, rng),
                                  .num_tokens = tokens};
            CheckPlan(r, rng);
            r.layer_begin = 1;  // A layer range.
            r.layer_end = 3;
            CheckPlan(r, rng);
          }
        }
      }
    }
  }
}

TEST_CASE("Every pair of presets across block sizes and tensor parallelism",
          "[transfer_plan][property]") {
  std::mt19937_64 rng(9);
  const KvGeometry g = Small(2);
  KvGeometry half_heads = g;  // A decode rank with half the heads.
  half_heads.kv_heads = 2;
  KvGeometry big_blocks = g;  // Twice the tokens per block.
  big_blocks.block_tokens = 8;
  const std::vector<KvLayout> src_layouts = AllLayouts(g);
  const std::vector<KvLayout> half_layouts = AllLayouts(half_heads);
  const std::vector<KvLayout> big_layouts = AllLayouts(big_blocks);
  for (const KvLayout& src : src_layouts) {
    for (const KvLayout& dst : half_layouts) {
      for (uint32_t rank : {0u, 1u}) {  // TP 1 -> TP 2: heads 0-1, 2-3.
        CheckPlan(TransferPlanRequest{.src_layout = &src,
                                      .src_blocks = Blocks(8, 5, true, rng),
                                      .dst_layout = &dst,
                                      .dst_blocks = Blocks(8, 5, true, rng),
                                      .num_tokens = 18,
                                      .src_head_begin = 2 * rank,
                                      .num_heads = 2},
                  rng);
        CheckPlan(TransferPlanRequest{.src_layout = &dst,  // TP 2 -> TP 1.
                                      .src_blocks = Blocks(8, 5, true, rng),
                                      .dst_layout = &src,
                                      .dst_blocks = Blocks(8, 5, false, rng),
                                      .num_tokens = 20,
                                      .dst_head_begin = 2 * rank},
                  rng);
      }
    }
    for (const KvLayout& dst : big_layouts) {
      CheckPlan(TransferPlanRequest{.src_layout = &src,
                                    .src_blocks = Blocks(8, 6, true, rng),
                                    .dst_layout = &dst,
                                    .dst_blocks = Blocks(8, 3, true, rng),
                                    .num_tokens = 23},
                rng);
      CheckPlan(TransferPlanRequest{.src_layout = &dst,
                                    .src_blocks = Blocks(8, 3, false, rng),
                                    .dst_layout = &src,
                                    .dst_blocks = Blocks(8, 6, true, rng),
                                    .num_tokens = 24},
                rng);
    }
  }
}

TEST_CASE("Random strided layouts: plans copy the reference bytes, minimally",
          "[transfer_plan][property]") {
  std::mt19937_64 rng(20260902);
  auto pick = [&](uint64_t n) { return static_cast<uint32_t>(rng() % n); };
  int whole_partial = 0;  // Whole-block plans with a partial last block.
  int strided = 0;        // Plans with no affine rule on some side.
  for (int iter = 0; iter < 10000; ++iter) {
    INFO("iteration " << iter);
    const uint32_t t_options[] = {1, 2, 3, 4};
    KvGeometry sg{.num_layers = 1 + pick(3),
                  .num_blocks = 0,
                  .block_tokens = t_options[pick(4)],
                  .kv_heads = 1 + pick(3),
                  .head_dim = 1 + pick(3),
                  .dtype_bytes = 1 + pick(2),
                  .num_parts = 1 + pick(2)};
    KvGeometry dg = sg;
    if (pick(2)) dg.block_tokens = t_options[pick(4)];
    if (pick(3) == 0) dg.kv_heads = 1 + pick(3);
    uint32_t layer_begin = 0, layer_end = 0;
    if (pick(3) == 0) {
      dg.num_layers = 1 + pick(3);
      const uint32_t limit = std::min(sg.num_layers, dg.num_layers);
      layer_begin = pick(limit);
      layer_end = layer_begin + 1 + pick(limit - layer_begin);
    }
    const uint64_t tokens = pick(14);
    const uint32_t src_count =
        static_cast<uint32_t>((tokens + sg.block_tokens - 1) /
                              sg.block_tokens) +
        pick(2);
    const uint32_t dst_count =
        static_cast<uint32_t>((tokens + dg.block_tokens - 1) /
                              dg.block_tokens) +
        pick(2);
    sg.num_blocks = std::max(1u, src_count + pick(3));
    dg.num_blocks = std::max(1u, dst_count + pick(3));
    const uint32_t heads = 1 + pick(std::min(sg.kv_heads, dg.kv_heads));
    // Either side a random strided layout or a preset.
    auto layout = [&](const KvGeometry& geometry) {
      if (pick(3) != 0) return testing::RandomStridedLayout(geometry, rng);
      const std::vector<KvLayout> presets = AllLayouts(geometry);
      return presets[pick(presets.size())];
    };
    const KvLayout src = layout(sg);
    const KvLayout dst = layout(dg);
    const TransferPlanRequest request{
        .src_layout = &src,
        .src_blocks = testing::RandomBlocks(sg.num_blocks, src_count, rng),
        .dst_layout = &dst,
        .dst_blocks = testing::RandomBlocks(dg.num_blocks, dst_count, rng),
        .num_tokens = tokens,
        .layer_begin = layer_begin,
        .layer_end = layer_end,
        .src_head_begin = pick(sg.kv_heads - heads + 1),
        .dst_head_begin = pick(dg.kv_heads - heads + 1),
        .num_heads = heads};
    CheckPlan(request, rng);
    whole_partial +=
        testing::WholeBlocks(request) && tokens % sg.block_tokens != 0;
    strided += src.name() == "strided" || dst.name() == "strided";
  }
  // The generator reaches the whole-block rule with partial blocks, and
  // strided layouts on most iterations.
  CHECK(whole_partial > 100);
  CHECK(strided > 5000);
}

}  // namespace
}  // namespace flowkv
