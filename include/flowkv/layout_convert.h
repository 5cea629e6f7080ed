// SPDX-License-Identifier: Apache-2.0
// Block conversion between two KvLayouts: copy a request's blocks from one
// pool into another pool that stores the same KV data in a different order,
// on the host. This is the CPU reference (and the specification) of the CUDA
// kernels in "flowkv/cuda/layout_kernels.h".
//
// The two layouts must describe the same model: equal num_layers,
// num_parts, block_tokens, kv_heads, head_dim and dtype_bytes. They may
// differ in everything else: any two presets or strided layouts (a vLLM
// pool <-> a FlowKV block-major pool, NHD <-> HND, K/V packed per head <->
// separate K and V tensors) and num_blocks. Position i of `src_blocks` is
// copied to position i of `dst_blocks`: for every layer, part, token and
// head, the head vector at src_layout.ElementAddress(layer, part,
// src_blocks.BlockAt(i), token, head) is copied to
// dst_layout.ElementAddress(layer, part, dst_blocks.BlockAt(i), token, head).
// No other destination byte is written.
//
// A pool is given as the base address of each of its regions, indexed by
// region (KvLayout::num_regions() of them):
//
//   // vLLM: one tensor per layer -> a FlowKV block-major staging pool.
//   std::vector<const void*> src_bases = ...;   // num_layers entries
//   void* dst_base = ...;                       // dst.total_bytes() bytes
//   absl::Status s = flowkv::ConvertBlocks(vllm_layout, src_bases, blocks,
//                                          flowkv_layout, {&dst_base, 1},
//                                          staging_blocks);
//
// Pack/unpack copy a request's (non-contiguous) blocks to or from one
// contiguous staging buffer, e.g. a bounce buffer before a network send. The
// staging buffer holds the blocks back to back in PackedLayout(): FlowKV
// block-major, the pool's tile order (NHD when its tiles are not dense),
// block i of the buffer = position i of the list.
//
// Thread safety: thread-safe (pure functions); concurrent calls must not
// write the same destination bytes.

#ifndef FLOWKV_LAYOUT_CONVERT_H_
#define FLOWKV_LAYOUT_CONVERT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"
#include "flowkv/kv_layout.h"

namespace flowkv {

// The checks ConvertBlocks (and ConvertBlocksAsync) make before copying:
// * InvalidArgument naming the field when the geometries differ in anything
//   but num_blocks, when a region base list does not have one entry per
//   region of its layout or holds a null pointer, or when the two block
//   lists hold different numbers of blocks;
// * OutOfRange naming the run when a block of a list is outside its pool.
FLOWKV_EXPORT absl::Status CheckConversion(
    const KvLayout& src_layout, absl::Span<const void* const> src_region_bases,
    const BlockList& src_blocks, const KvLayout& dst_layout,
    absl::Span<void* const> dst_region_bases, const BlockList& dst_blocks);

// Copies position i of `src_blocks` to position i of `dst_blocks` for every
// i, converting between the two layouts (see the file comment). Writes
// nothing when CheckConversion fails and returns its error. Empty lists: OK.
// REQUIRES: region r holds region_bytes(r) bytes of host memory; the
// source and destination bytes do not overlap; `dst_blocks` names no block
// twice.
FLOWKV_EXPORT absl::Status ConvertBlocks(
    const KvLayout& src_layout, absl::Span<const void* const> src_region_bases,
    const BlockList& src_blocks, const KvLayout& dst_layout,
    absl::Span<void* const> dst_region_bases, const BlockList& dst_blocks);

// The layout of a staging buffer holding `num_blocks` blocks of `layout`
// back to back: the same geometry except num_blocks,
// KvLayout::FlowKvBlockMajor with the pool's tile order (NHD when its tiles
// are not dense), one region. InvalidArgument when num_blocks is 0.
FLOWKV_EXPORT absl::StatusOr<KvLayout> PackedLayout(const KvLayout& layout,
                                                    uint32_t num_blocks);

// Bytes a staging buffer needs for `blocks`: blocks.num_blocks() *
// layout.block_bytes().
FLOWKV_EXPORT uint64_t PackedBytes(const KvLayout& layout,
                                   const BlockList& blocks);

// Copies every block of `blocks` (all layers, K and V) into `staging`, block
// i of the buffer = position i of the list, in PackedLayout(). Errors as
// ConvertBlocks, plus InvalidArgument when `staging` is null or
// `staging_bytes` < PackedBytes(layout, blocks). Empty list: OK.
// REQUIRES: `staging` does not overlap the pool.
FLOWKV_EXPORT absl::Status PackBlocks(
    const KvLayout& layout, absl::Span<const void* const> region_bases,
    const BlockList& blocks, void* staging, uint64_t staging_bytes);

// The inverse of PackBlocks: copies block i of `staging` to position i of
// `blocks`. Errors as PackBlocks.
// REQUIRES: `blocks` names no block twice.
FLOWKV_EXPORT absl::Status UnpackBlocks(const void* staging,
                                        uint64_t staging_bytes,
                                        const KvLayout& layout,
                                        absl::Span<void* const> region_bases,
                                        const BlockList& blocks);

}  // namespace flowkv

#endif  // FLOWKV_LAYOUT_CONVERT_H_
