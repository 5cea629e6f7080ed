// SPDX-License-Identifier: Apache-2.0
// Private helpers shared by the host (lib/layout/layout_convert.cc) and
// device (cuda/layout_kernels.cc) pack/unpack, so both validate the staging
// buffer the same way.

#ifndef FLOWKV_LIB_LAYOUT_PACK_BUFFER_H_
#define FLOWKV_LIB_LAYOUT_PACK_BUFFER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "flowkv/block_list.h"
#include "flowkv/export.h"
#include "flowkv/kv_layout.h"

namespace flowkv::internal {

// The layout of the staging buffer for `blocks` (PackedLayout with
// max(1, blocks.num_blocks()) blocks). InvalidArgument, prefixed with
// `caller`, when `staging` is null, `staging_bytes` is below
// PackedBytes(layout, blocks) or the list holds 2^32 blocks or more.
FLOWKV_EXPORT absl::StatusOr<KvLayout> PackBufferLayoutFor(
    const char* caller, const KvLayout& layout, const BlockList& blocks,
    const void* staging, uint64_t staging_bytes);

// The staging buffer's block list for `blocks`: [0, blocks.num_blocks()).
FLOWKV_EXPORT BlockList PackBufferBlocks(const BlockList& blocks);

}  // namespace flowkv::internal

#endif  // FLOWKV_LIB_LAYOUT_PACK_BUFFER_H_
