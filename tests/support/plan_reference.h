// SPDX-License-Identifier: Apache-2.0
// The specification of TransferPlan written out element by element, for
// tests and benchmarks (no Catch2 here): which head vectors a request
// copies, computed from KvLayout::ElementAddress alone, and the minimum
// number of ops that can copy them, counted as maximal runs of head vectors
// contiguous on both sides, and a request described for failure messages.
// Independent of lib/layout/transfer_plan.cc.

#ifndef FLOWKV_TESTS_SUPPORT_PLAN_REFERENCE_H_
#define FLOWKV_TESTS_SUPPORT_PLAN_REFERENCE_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "flowkv/kv_layout.h"
#include "flowkv/transfer_plan.h"

namespace flowkv::testing {

// One head vector copy.
struct ElementCopy {
  uint32_t src_region;
  uint64_t src_offset;
  uint32_t dst_region;
  uint64_t dst_offset;
};

// The request in one line, for failure messages.
inline std::string Describe(const TransferPlanRequest& r) {
  return r.src_layout->ToString() + " " + r.src_blocks.ToString() + " -> " +
         r.dst_layout->ToString() + " " + r.dst_blocks.ToString() + " tokens " +
         std::to_string(r.num_tokens) + " layers [" +
         std::to_string(r.layer_begin) + "," + std::to_string(r.layer_end) +
         ") heads " + std::to_string(r.src_head_begin) + "->" +
         std::to_string(r.dst_head_begin) + " x" + std::to_string(r.num_heads);
}

// True when the plan copies whole blocks (transfer_plan.h: same
// block_tokens and kv_heads, every head, equal dense tile orders).
inline bool WholeBlocks(const TransferPlanRequest& r) {
  const KvGeometry& s = r.src_layout->geometry();
  const KvGeometry& d = r.dst_layout->geometry();
  const uint32_t heads =
      r.num_heads != 0 ? r.num_heads : s.kv_heads - r.src_head_begin;
  return s.block_tokens == d.block_tokens && s.kv_heads == d.kv_heads &&
         heads == s.kv_heads && r.src_layout->tile_order().has_value() &&
         r.src_layout->tile_order() == r.dst_layout->tile_order();
}

// Every head vector the request copies, in (layer, part, token, head) order.
// REQUIRES: a valid request (PlanTransfer returns OK for it).
inline std::vector<ElementCopy> ReferenceCopies(const TransferPlanRequest& r) {
  const KvLayout& src = *r.src_layout;
  const KvLayout& dst = *r.dst_layout;
  const KvGeometry& sg = src.geometry();
  const KvGeometry& dg = dst.geometry();
  const uint32_t heads =
      r.num_heads != 0 ? r.num_heads : sg.kv_heads - r.src_head_begin;
  const uint64_t tokens = WholeBlocks(r)
                              ? (r.num_tokens + sg.block_tokens - 1) /
                                    sg.block_tokens * sg.block_tokens
                              : r.num_tokens;
  const uint32_t layer_begin = r.layer_end == 0 ? 0 : r.layer_begin;
  const uint32_t layer_end = r.layer_end == 0 ? sg.num_layers : r.layer_end;
  std::vector<BlockId> src_ids = r.src_blocks.ToIds();
  std::vector<BlockId> dst_ids = r.dst_blocks.ToIds();
  std::vector<ElementCopy> copies;
  copies.reserve((layer_end - layer_begin) * sg.num_parts * tokens * heads);
  for (uint32_t l = layer_begin; l < layer_end; ++l) {
    for (uint32_t p = 0; p < sg.num_parts; ++p) {
      const auto part = static_cast<KvPart>(p);
      for (uint64_t t = 0; t < tokens; ++t) {
        const BlockId sb = src_ids[t / sg.block_tokens];
        const BlockId db = dst_ids[t / dg.block_tokens];
        for (uint32_t h = 0; h < heads; ++h) {
          const ByteAddress s = src.ElementAddress(
              l, part, sb, static_cast<uint32_t>(t % sg.block_tokens),
              r.src_head_begin + h);
          const ByteAddress d = dst.ElementAddress(
              l, part, db, static_cast<uint32_t>(t % dg.block_tokens),
              r.dst_head_begin + h);
          copies.push_back({s.region, s.offset, d.region, d.offset});
        }
      }
    }
  }
  return copies;
}

// The fewest ops that make `copies` (head vectors of `head_bytes` bytes):
// the number of maximal runs, in source order, of head vectors that follow
// each other on both sides. Sorts `copies` by source address.
inline uint64_t MinimumOps(std::vector<ElementCopy>& copies,
                           uint64_t head_bytes) {
  std::sort(copies.begin(), copies.end(),
            [](const ElementCopy& a, const ElementCopy& b) {
              return a.src_region != b.src_region ? a.src_region < b.src_region
                                                  : a.src_offset < b.src_offset;
            });
  uint64_t runs = 0;
  for (size_t i = 0; i < copies.size(); ++i) {
    const bool continues =
        i > 0 && copies[i].src_region == copies[i - 1].src_region &&
        copies[i].src_offset == copies[i - 1].src_offset + head_bytes &&
        copies[i].dst_region == copies[i - 1].dst_region &&
        copies[i].dst_offset == copies[i - 1].dst_offset + head_bytes;
    runs += continues ? 0 : 1;
  }
  return runs;
}

}  // namespace flowkv::testing

#endif  // FLOWKV_TESTS_SUPPORT_PLAN_REFERENCE_H_
