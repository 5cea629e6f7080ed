// SPDX-License-Identifier: Apache-2.0
// TransferPlan: the minimal list of copy ops that moves a request's KV cache
// from a source pool to a destination pool, for any two KvLayouts.
//
// The planner walks the two BlockLists together and cuts at every run
// boundary of either side (bidirectional alignment), maps each aligned run
// through both layouts' strides, and merges ops that are adjacent on BOTH
// sides. The result is minimal: one op per maximal run of bytes that is
// contiguous on both sides, so no two ops of a plan could be merged.
//
//   * Block-major on both sides, same geometry: one op per aligned run.
//   * Layer-major (either side): P * L ops per aligned run (P parts, L
//     layers), fewer where the other side is also layer-major.
//   * Different block_tokens, NHD vs HND, K and V packed per head (vLLM's
//     standardized layouts), or a head range (tensor-parallel sharding): the
//     plan splits finer and still merges what is adjacent on both sides.
//
// Which bytes move. Token i of the request is token i % T of block
// BlockAt(i / T) of a list (T = that side's block_tokens). The plan copies,
// for every layer in the layer range, every part (K and V, or the latent),
// every token of the request and heads [src_head_begin, +num_heads) of the
// source to the same layer, part and token and heads [dst_head_begin,
// +num_heads) of the destination. When both sides have the same
// block_tokens and kv_heads, every head is copied and both layouts store
// their tiles densely in the same order (equal KvLayout::tile_order()), the
// plan copies whole blocks: ceil(num_tokens / block_tokens) of them,
// including the unused tail of a partial last block (fewer and larger ops).
// Otherwise it copies exactly num_tokens tokens.
//
// Heterogeneous tensor parallelism: one source rank with 8 KV heads feeding
// two destination ranks with 4 each plans twice, with src_head_begin 0 and 4
// (dst_head_begin 0, num_heads 4). Two source ranks with 4 heads each feeding
// one destination with 8 plan their own half each: dst_head_begin 0 and 4.
//
//   flowkv::TransferPlanRequest request{
//       .src_layout = &prefill_layout, .src_blocks = prefill_blocks,
//       .dst_layout = &decode_layout, .dst_blocks = decode_blocks,
//       .num_tokens = prompt_tokens};
//   absl::StatusOr<std::vector<flowkv::TransferOp>> ops =
//       flowkv::PlanTransfer(request);
//
// Ops come out sorted by (src_region, src_offset). Planning costs time linear
// in the ops produced, plus O(R log R) for the R aligned runs: the layers,
// parts and heads the source stores outside its blocks are walked around the
// aligned runs, the rest inside each run, so ops come out in source order.
// Where they cannot (a source block split between aligned runs whose pieces
// interleave in memory: different block_tokens, or an HND-like source cut
// mid-block; or tensors placed in no affine order), the new ops are sorted
// and merged once more, O(n log n).
// Everything here is a pure function: thread-safe.

#ifndef FLOWKV_TRANSFER_PLAN_H_
#define FLOWKV_TRANSFER_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"
#include "flowkv/kv_layout.h"
#include "flowkv/transfer_types.h"

namespace flowkv {

// What to move. The layouts are borrowed: they must outlive the call.
struct TransferPlanRequest {
  const KvLayout* src_layout = nullptr;
  BlockList src_blocks;
  const KvLayout* dst_layout = nullptr;
  BlockList dst_blocks;
  // Tokens of the request to move; both lists must hold at least this many.
  // 0 gives an empty plan.
  uint64_t num_tokens = 0;
  // Layers [layer_begin, layer_end) of both pools. Default (0, 0): every
  // layer, and then both pools must have the same num_layers.
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;
  // Source heads [src_head_begin, src_head_begin + num_heads) go to
  // destination heads [dst_head_begin, dst_head_begin + num_heads).
  // Default num_heads 0: every source head from src_head_begin on.
  uint32_t src_head_begin = 0;
  uint32_t dst_head_begin = 0;
  uint32_t num_heads = 0;
};

// The plan for `request`, sorted by (src_region, src_offset) and merged.
// Errors (nothing is returned):
//   InvalidArgument: a layout is null; head_dim, dtype_bytes, num_parts or
//     num_layers differ; the layer or head range is empty or exceeds a pool
//     (the message names the field); a list holds fewer than num_tokens
//     tokens (with both numbers); the request moves 2^64 bytes or more
//     (names num_tokens).
//   OutOfRange: a block of a list is outside its pool.
FLOWKV_EXPORT absl::StatusOr<std::vector<TransferOp>> PlanTransfer(
    const TransferPlanRequest& request);

// As PlanTransfer, appending the plan to `*out` (ops already in `*out` are
// left alone and never merged with). The hot-path form: it allocates only
// when `*out` lacks capacity or the lists give more than 32 aligned runs.
// On error `*out` is unchanged.
FLOWKV_EXPORT absl::Status AppendTransferPlan(
    const TransferPlanRequest& request, std::vector<TransferOp>* out);

// The number of ops PlanTransfer would return (for the simulator), with the
// same errors. No allocation (up to 32 aligned runs) when the plan comes out
// in source order (see the file comment); otherwise it plans into a reused
// per-thread buffer.
FLOWKV_EXPORT absl::StatusOr<uint64_t> CountTransferOps(
    const TransferPlanRequest& request);

// Executes `ops` with memcpy between host memory regions in this process
// (colocated prefill and decode, staging buffers, tests): region i of the
// source pool is src_regions[i], likewise for the destination. Every op is
// checked first: OutOfRange naming the op when its region index or byte
// range is outside the regions given; then nothing is copied.
// REQUIRES: source and destination bytes of the ops do not overlap.
FLOWKV_EXPORT absl::Status ApplyPlanLocally(
    absl::Span<const TransferOp> ops,
    absl::Span<const absl::Span<const uint8_t>> src_regions,
    absl::Span<const absl::Span<uint8_t>> dst_regions);

}  // namespace flowkv

#endif  // FLOWKV_TRANSFER_PLAN_H_
