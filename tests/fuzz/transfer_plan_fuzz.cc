// SPDX-License-Identifier: Apache-2.0
// Fuzzes PlanTransfer (include/flowkv/transfer_plan.h) on random layouts
// (every preset and fuzzed strided tables on small geometry,
// tests/fuzz/fuzz_layout.h), random block lists (no block twice, as an
// allocator hands them out; sometimes blocks outside the pool, repeated
// blocks or too few), token counts, layer ranges and head ranges.
//
// Checks: errors are InvalidArgument or OutOfRange with a message, and then
// AppendTransferPlan leaves its output alone; a plan is exactly the
// per-element reference copy (tests/support/plan_reference.h): expanded to head
// vectors, the ops copy every reference element once and nothing else;
// ops are non-empty, inside their regions and sorted by source; when no
// list names a block twice, also disjoint and minimal (their number is the
// reference's minimum); CountTransferOps and AppendTransferPlan agree with
// PlanTransfer.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "flowkv/transfer_plan.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_layout.h"
#include "tests/support/plan_reference.h"

namespace flowkv {
namespace {

using testing::Describe;

// A list of `blocks` blocks of a pool of `pool`: runs of random length at
// random places, no block twice (as an allocator hands them out); or, when
// the input says so, any ids up to pool + 2, repeats allowed.
BlockList FuzzBlocks(fuzz::FuzzInput& in, uint32_t pool, uint64_t blocks) {
  BlockList list;
  const bool wild = in.U8() >= 0xF0;
  std::vector<bool> used(pool + 3, false);
  for (int attempt = 0; attempt < 64 && list.num_blocks() < blocks; ++attempt) {
    const auto count = static_cast<uint32_t>(
        std::min<uint64_t>(in.Range(1, 4), blocks - list.num_blocks()));
    const uint32_t max_first = wild ? pool + 2 : pool - std::min(pool, count);
    const auto first = static_cast<BlockId>(in.Range(0, max_first));
    if (!wild) {
      if (std::any_of(used.begin() + first, used.begin() + first + count,
                      [](bool u) { return u; })) {
        continue;
      }
      std::fill(used.begin() + first, used.begin() + first + count, true);
    }
    list.Append(first, count);
  }
  return list;
}

// Whether `list` names a block twice.
bool Repeats(const BlockList& list) {
  std::vector<BlockId> ids = list.ToIds();
  std::sort(ids.begin(), ids.end());
  return std::adjacent_find(ids.begin(), ids.end()) != ids.end();
}

auto Key(const testing::ElementCopy& c) {
  return std::make_tuple(c.src_region, c.src_offset, c.dst_region,
                         c.dst_offset);
}

}  // namespace
}  // namespace flowkv

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace flowkv;  // NOLINT
  fuzz::FuzzInput in(data, size);
  // Mostly pools that can exchange KV: the destination keeps the source's
  // layers, parts and head vector size.
  const KvGeometry src_geometry = fuzz::FuzzGeometry(in, /*small=*/true);
  KvGeometry dst_geometry = fuzz::FuzzGeometry(in, /*small=*/true);
  if (in.U8() < 0xF0) {
    dst_geometry.num_layers = src_geometry.num_layers;
    dst_geometry.num_parts = src_geometry.num_parts;
    dst_geometry.head_dim = src_geometry.head_dim;
    dst_geometry.dtype_bytes = src_geometry.dtype_bytes;
    if (in.Bool()) dst_geometry.kv_heads = src_geometry.kv_heads;
  }
  absl::StatusOr<KvLayout> src = fuzz::FuzzLayoutOf(in, src_geometry);
  absl::StatusOr<KvLayout> dst = fuzz::FuzzLayoutOf(in, dst_geometry);
  if (!src.ok() || !dst.ok()) return 0;
  const KvGeometry& sg = src->geometry();
  const KvGeometry& dg = dst->geometry();

  TransferPlanRequest r;
  r.src_layout = &*src;
  r.dst_layout = &*dst;
  r.num_tokens = in.Range(0, uint64_t{sg.num_blocks} * sg.block_tokens + 2);
  const uint64_t src_need =
      (r.num_tokens + sg.block_tokens - 1) / sg.block_tokens;
  const uint64_t dst_need =
      (r.num_tokens + dg.block_tokens - 1) / dg.block_tokens;
  r.src_blocks = FuzzBlocks(in, sg.num_blocks, src_need + in.Range(0, 1));
  r.dst_blocks = FuzzBlocks(in, dg.num_blocks, dst_need + in.Range(0, 1));
  if (in.Bool()) {
    r.layer_begin = static_cast<uint32_t>(in.Range(0, sg.num_layers));
    r.layer_end = static_cast<uint32_t>(in.Range(0, sg.num_layers + 1));
  }
  if (in.Bool()) {
    r.src_head_begin = static_cast<uint32_t>(in.Range(0, sg.kv_heads));
    r.dst_head_begin = static_cast<uint32_t>(in.Range(0, dg.kv_heads));
    r.num_heads = static_cast<uint32_t>(in.Range(0, dg.kv_heads));
  }

  absl::StatusOr<std::vector<TransferOp>> ops = PlanTransfer(r);
  const TransferOp marker{7, 7, 7, 7, 7};  // Must stay first, alone.
  std::vector<TransferOp> appended = {marker};
  absl::Status append = AppendTransferPlan(r, &appended);
  absl::StatusOr<uint64_t> count = CountTransferOps(r);
  FUZZ_CHECK(append == ops.status() && count.status() == ops.status(),
             ops.status().ToString());
  if (!ops.ok()) {
    const absl::StatusCode code = ops.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                   code == absl::StatusCode::kOutOfRange,
               ops.status().ToString());
    FUZZ_CHECK(!ops.status().message().empty());
    FUZZ_CHECK(appended.size() == 1 && appended[0] == marker);
    return 0;
  }
  FUZZ_CHECK(*count == ops->size());
  FUZZ_CHECK(appended.size() == ops->size() + 1);
  FUZZ_CHECK(std::equal(ops->begin(), ops->end(), appended.begin() + 1));

  const bool repeats = Repeats(r.src_blocks) || Repeats(r.dst_blocks);
  // The ops, expanded to head vectors, are the reference copies.
  const uint64_t head = src->head_bytes();
  std::vector<testing::ElementCopy> want = testing::ReferenceCopies(r);
  const uint64_t minimum = testing::MinimumOps(want, head);
  std::vector<testing::ElementCopy> got;
  for (size_t i = 0; i < ops->size(); ++i) {
    const TransferOp& op = (*ops)[i];
    FUZZ_CHECK(op.length > 0 && op.length % head == 0);
    FUZZ_CHECK(op.src_region < src->num_regions() &&
               op.dst_region < dst->num_regions());
    FUZZ_CHECK(op.src_offset + op.length <= src->region_bytes(op.src_region));
    FUZZ_CHECK(op.dst_offset + op.length <= dst->region_bytes(op.dst_region));
    if (i > 0) {
      // Sorted by source; disjoint unless a list names a block twice.
      const TransferOp& prev = (*ops)[i - 1];
      FUZZ_CHECK(
          prev.src_region < op.src_region ||
              (prev.src_region == op.src_region &&
               (repeats ? prev.src_offset <= op.src_offset
                        : prev.src_offset + prev.length <= op.src_offset)),
          "ops out of source order or overlapping: " + Describe(r));
    }
    for (uint64_t at = 0; at < op.length; at += head) {
      got.push_back({op.src_region, op.src_offset + at, op.dst_region,
                     op.dst_offset + at});
    }
    FUZZ_CHECK(got.size() <= want.size(), "the plan copies too much");
  }
  auto less = [](const testing::ElementCopy& a, const testing::ElementCopy& b) {
    return Key(a) < Key(b);
  };
  std::sort(want.begin(), want.end(), less);
  std::sort(got.begin(), got.end(), less);
  FUZZ_CHECK(got.size() == want.size(), "the plan copies too little");
  for (size_t i = 0; i < got.size(); ++i) {
    FUZZ_CHECK(Key(got[i]) == Key(want[i]),
               "the plan copies other bytes: " + Describe(r));
  }
  FUZZ_CHECK(repeats || ops->size() == minimum,
             "the plan is not minimal: " + Describe(r));
  return 0;
}
